"""Manifests: one JSON object per line, one line per video.

    {"path": "clips/a.mp4", "frames": 48, "fps": 24.0, "duration": 2.0, "width": 64, "height": 64,
     "caption": "a red circle moving left"}

`path` is relative to the manifest's folder (so a corpus can be moved whole) unless the video
lies outside it. `caption` comes from a sidecar `.txt` of the same stem and is absent when the
video has none: such clips train as unlabeled video.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tqdm.auto import tqdm

from ..errors import VideoReadError, VidgenError
from ..fs import atomic_path
from .reader import VideoInfo, probe_video, read_frames

VIDEO_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .ogv .ogg .mpg .mpeg .wmv .flv .3gp .ts .gif".split()
)


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


def find_videos(root: str | os.PathLike) -> list[Path]:
    """Every file under `root` (recursively) whose suffix names a video container, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise VidgenError(f"{root} is not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def check_readable(path: Path) -> VideoInfo:
    """Probe a video and decode its first and last frame (a truncated file fails on the last)."""
    info = probe_video(path)
    read_frames(path, [0, info.num_frames - 1])
    return info


def sidecar_caption(video: Path) -> str | None:
    txt = video.with_suffix(".txt")
    if not txt.is_file():
        return None
    caption = " ".join(txt.read_text(encoding="utf-8", errors="replace").split())
    return caption or None


def index_videos(root: str | os.PathLike, progress: bool = True) -> tuple[list[dict], list[SkippedFile]]:
    """Scan `root` for videos. Returns one record per readable video and the files skipped, with reasons.

    Record paths are absolute here; `write_manifest` makes them relative to the manifest.
    """
    records, skipped = [], []
    for path in tqdm(find_videos(root), desc="indexing", unit="file", disable=not progress):
        try:
            info = check_readable(path)
        except VideoReadError as exc:
            skipped.append(SkippedFile(str(path), str(exc)))
            continue
        record = {"path": str(path.resolve()), "frames": info.num_frames, "fps": round(info.fps, 6),
                  "duration": round(info.duration, 6), "width": info.width, "height": info.height}
        caption = sidecar_caption(path)
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
    """Records of a manifest, with `path` resolved against the manifest's folder."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise VidgenError(f"manifest {manifest} does not exist: make one with 'vidgen data index DIR -o {manifest}' "
                          "or 'vidgen data shapes --out DIR'")
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
