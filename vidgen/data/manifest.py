"""Manifests: one JSON object per line, one line per video (CSV and parquet tables are read too:
vidgen.data.tables).

    {"path": "clips/a.mp4", "frames": 48, "fps": 24.0, "duration": 2.0, "width": 64, "height": 64,
     "caption": "a red circle moving left"}

`path` is relative to the manifest's folder (so a corpus can be moved whole) unless the video
lies outside it. `caption` comes from a sidecar `.txt` of the same stem and is absent when the
video has none: such clips train as unlabeled video.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tqdm.auto import tqdm

from ..errors import VidgenError
from ..fs import atomic_path
from .reader import VideoInfo, probe_video, read_frames

VIDEO_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .ogv .ogg .mpg .mpeg .wmv .flv .3gp .ts .gif".split()
)


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


def _utf8_name(path: str) -> bool:
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:  # bytes that are not UTF-8 come back from the file system as surrogates
        return False


def scan_videos(root: str | os.PathLike) -> tuple[list[Path], list[SkippedFile]]:
    """Every regular file under `root` whose suffix names a video container, sorted, and the
    entries passed over with why: names that are not UTF-8 (a manifest is UTF-8 JSON), files that
    are not regular (FIFOs, devices, sockets: opening a FIFO would wait forever), links that lead
    nowhere or back into a folder above them (a loop), folders that cannot be listed."""
    root = Path(root)
    if not root.is_dir():
        raise VidgenError(f"{root} is not a folder: give the folder that holds the videos")
    found, skipped = [], []
    visited: set[tuple[int, int]] = set()  # (device, inode) of the folders entered

    def walk(folder: Path) -> None:
        try:
            info = folder.stat()
        except OSError as exc:
            skipped.append(SkippedFile(str(folder), f"cannot be read ({exc.strerror})"))
            return
        if (info.st_dev, info.st_ino) in visited:
            skipped.append(SkippedFile(str(folder), "a link back to a folder already scanned (a symlink loop)"))
            return
        visited.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append(SkippedFile(str(folder), f"the folder cannot be listed ({exc.strerror})"))
            return
        for entry in entries:
            path = Path(entry.path)
            try:
                mode = os.stat(entry.path).st_mode  # follows links
            except OSError as exc:
                if entry.is_symlink():
                    skipped.append(SkippedFile(str(path), f"a link that leads nowhere ({exc.strerror})"))
                continue
            if stat.S_ISDIR(mode):
                walk(path)
            elif path.suffix.lower() not in VIDEO_SUFFIXES:
                continue
            elif not _utf8_name(entry.path):
                skipped.append(SkippedFile(os.fsencode(entry.path).decode("utf-8", "backslashreplace"), "the file name is not valid UTF-8: rename it"))
            elif not stat.S_ISREG(mode):
                skipped.append(SkippedFile(str(path), "not a regular file (a FIFO, device or socket): never opened"))
            else:
                found.append(path)

    walk(root)
    return sorted(found), skipped


def find_videos(root: str | os.PathLike) -> list[Path]:
    """Every readable-looking video file under `root` (see `scan_videos`), sorted."""
    return scan_videos(root)[0]


def check_readable(path: Path) -> VideoInfo:
    """Probe a video and decode its first and last frame (a truncated file fails on the last)."""
    info = probe_video(path)
    read_frames(path, [0, info.num_frames - 1])
    return info


def sidecar_caption(video: Path) -> str | None:
    """The caption in `video`'s sidecar .txt (None where there is none); a VidgenError where the
    sidecar is there but cannot be read."""
    txt = video.with_suffix(".txt")
    try:
        if not stat.S_ISREG(os.stat(txt).st_mode):
            raise VidgenError(f"its caption {txt.name} is not a regular file")
        text = txt.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VidgenError(f"its caption {txt.name} cannot be read ({exc.strerror})") from None
    caption = " ".join(text.split())
    return caption or None


def index_videos(root: str | os.PathLike, progress: bool = True) -> tuple[list[dict], list[SkippedFile]]:
    """Scan `root` for videos. Returns one record per readable video and the files skipped, with reasons.

    A fault of one file (unreadable video or caption, a bad name, a FIFO) skips that file only.
    Record paths are absolute here; `write_manifest` makes them relative to the manifest.
    """
    paths, skipped = scan_videos(root)
    records = []
    for path in tqdm(paths, desc="indexing", unit="file", disable=not progress):
        try:
            info = check_readable(path)
            caption = sidecar_caption(path)
        except VidgenError as exc:  # VideoReadError, or the caption's
            skipped.append(SkippedFile(str(path), str(exc)))
            continue
        record = {"path": str(path.resolve()), "frames": info.num_frames, "fps": round(info.fps, 6),
                  "duration": round(info.duration, 6), "width": info.width, "height": info.height}
        if caption is not None:
            record["caption"] = caption
        records.append(record)
    return records, skipped


def _relative_to(path: str, folder: Path) -> str:
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive on Windows
        return str(path)


def write_manifest(records: Iterable[dict], manifest: str | os.PathLike) -> Path:
    """Write records as JSON lines, atomically; absolute paths become relative to the manifest's folder."""
    manifest = Path(manifest)
    folder = manifest.resolve().parent
    with atomic_path(manifest) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for record in records:
            record = {**record, "path": _relative_to(record["path"], folder)}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return manifest


def read_manifest(manifest: str | os.PathLike) -> list[dict]:
    """Records of a manifest, with `path` resolved against the manifest's folder: JSON lines, or a
    CSV or parquet table (.csv, .parquet; vidgen.data.tables names the columns it reads)."""
    from .tables import is_table, read_table

    manifest = Path(manifest)
    if not manifest.is_file():
        raise VidgenError(f"manifest {manifest} does not exist: make one with 'vidgen data index DIR -o {manifest}' "
                          "or 'vidgen data shapes --out DIR'")
    if is_table(manifest):
        return read_table(manifest)
    folder = manifest.resolve().parent
    records = []
    with open(manifest, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise VidgenError(f"{manifest}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or "path" not in record:
                raise VidgenError(f"{manifest}:{number}: each line must be a JSON object with a 'path'")
            record["path"] = os.path.normpath(folder / record["path"])
            records.append(record)
    if not records:
        raise VidgenError(f"manifest {manifest} lists no videos")
    return records
