"""Writing a corpus as WebDataset shards (`vidgen data shard`): the layout video2dataset writes.

    OUT/00000.tar   000000000.json  {"source": "clips/a.mp4", "frames": 48, "fps": 24.0, ...}
                    000000000.mp4   the video file's bytes, as they were (any video suffix kept)
                    000000000.txt   its caption, where it has one
                    000000001.json ...
    OUT/shards.json {"pattern": "{00000..00003}.tar", "samples": 400, "shards": [{"name", "samples", "bytes"}, ...]}

Keys are the clip's number among those written, so they are unique across shards. Each shard is
written to a temporary beside it and renamed when whole; shards.json, written last, marks a complete
set. A marker file (MARKER_NAME), written before the first tar and removed once shards.json is
written, marks a set being written: only a folder holding one of the two is taken as vidgen's, so a
folder of someone else's `00000.tar` files is never written over. A record that is not a video
(its suffix) or cannot be read is skipped and reported on stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from ..errors import VidgenError
from ..fs import _PARTIAL, atomic_path, check_writable_folder, write_text_atomic
from .manifest import VIDEO_SUFFIXES

INDEX_NAME = "shards.json"
MARKER_NAME = ".vidgen-shards-writing"
WRITER = "vidgen data shard"
SHARD_NAME = re.compile(r"^\d{5}\.tar$")


def shard_pattern(count: int) -> str:
    return f"{{00000..{count - 1:05d}}}.tar"


def _is_vidgen_index(path: Path) -> bool:
    """Whether `path` is a shards.json this command wrote (its keys; older ones lack "writer")."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(index, dict) and {"pattern", "samples", "shards"} <= index.keys()


def check_shard_folder(out: str | os.PathLike) -> None:
    """OUT must be new, empty, or a shard set this command wrote (its shards, shards.json or the
    marker of a set being written, and temporaries): tars in a folder without either are someone else's."""
    out = Path(out)
    check_writable_folder(out, "-o")
    if not out.is_dir():
        return
    names = os.listdir(out)
    foreign = sorted(name for name in names if not (SHARD_NAME.match(name) or name in (INDEX_NAME, MARKER_NAME)
                                                      or _PARTIAL.match(name)))
    if foreign:
        raise VidgenError(f"-o {out} holds files that are not shards vidgen wrote (e.g. {foreign[0]}): give a new or "
                          f"empty folder")
    tars = sorted(name for name in names if SHARD_NAME.match(name))
    ours = MARKER_NAME in names or _is_vidgen_index(out / INDEX_NAME)
    if tars and not ours:
        raise VidgenError(f"-o {out} holds tar files (e.g. {tars[0]}) without the {INDEX_NAME} vidgen writes, so they "
                          f"are not taken as its shards: give a new or empty folder")


def _skip(path, reason: str) -> None:
    print(f"skipped {path}: {reason}", file=sys.stderr)


def usable_records(records: Sequence[dict]) -> list[dict]:
    """The records whose file has a video suffix and can be opened; each other one is reported on stderr."""
    usable = []
    for record in records:
        path = Path(record["path"])
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            _skip(path, f"not a video file (its suffix is not one of {' '.join(sorted(VIDEO_SUFFIXES))})")
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            _skip(path, f"cannot be read ({exc.strerror or exc})")
            continue
        usable.append(record)
    return usable


def _sample(key: str, record: dict, root: Path) -> dict:
    path = Path(record["path"])
    ext = path.suffix.lower().lstrip(".")
    try:
        source = os.path.relpath(path, root)
    except ValueError:
        source = str(path)
    meta = {k: v for k, v in record.items() if k not in ("path", "caption")}
    sample = {"__key__": key, ext: path.read_bytes(), "json": json.dumps({"source": source, **meta}).encode("utf-8")}
    if record.get("caption"):
        sample["txt"] = record["caption"].encode("utf-8")
    return sample


def _samples(records: Sequence[dict], root: Path, bar):
    """The records as tar samples, numbered as written; a file that fails to read is skipped and reported."""
    number = 0
    for record in records:
        try:
            sample = _sample(f"{number:09d}", record, root)
        except OSError as exc:
            _skip(record["path"], f"cannot be read ({exc.strerror or exc})")
            continue
        finally:
            bar.update(1)
        number += 1
        yield sample


def write_shards(records: Sequence[dict], out: str | os.PathLike, per_shard: int, root: str | os.PathLike,
                 progress: bool = True) -> list[dict]:
    """Write `records` (absolute paths) as shards of `per_shard` clips into `out`; returns
    [{"name", "samples", "bytes"}] (the samples actually written: skipped records are not counted).
    Shards a previous run left beyond the new count are removed (they would join a glob)."""
    import webdataset as wds

    if per_shard < 1:
        raise VidgenError(f"--per-shard must be at least 1, got {per_shard}")
    out, root = Path(out), Path(root).resolve()
    check_shard_folder(out)
    records = usable_records(records)
    if not records:
        raise VidgenError(f"no readable video to shard into -o {out}: every record was skipped (see above)")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / MARKER_NAME, f"{WRITER} is writing this shard set; a complete set has {INDEX_NAME}\n")
    (out / INDEX_NAME).unlink(missing_ok=True)  # the set is incomplete until it is written again
    written = []
    with tqdm(total=len(records), desc="writing shards", unit="clip", disable=not progress) as bar:
        samples = _samples(records, root, bar)
        pending = next(samples, None)
        while pending is not None:
            name, count = f"{len(written):05d}.tar", 0
            with atomic_path(out / name) as tmp, open(tmp, "wb") as stream:
                with wds.TarWriter(stream, mtime=0) as sink:  # mtime 0: the same corpus gives the same bytes
                    while pending is not None and count < per_shard:
                        sink.write(pending)
                        count += 1
                        pending = next(samples, None)
            written.append({"name": name, "samples": count, "bytes": (out / name).stat().st_size})
    if not written:
        raise VidgenError(f"no readable video to shard into -o {out}: every record was skipped (see above)")
    for stale in sorted(out.iterdir()):
        if SHARD_NAME.match(stale.name) and int(stale.name[:5]) >= len(written):
            stale.unlink()
    index = {"writer": WRITER, "pattern": shard_pattern(len(written)), "samples": sum(s["samples"] for s in written),
             "shards": written}
    write_text_atomic(out / INDEX_NAME, json.dumps(index, indent=2) + "\n")
    (out / MARKER_NAME).unlink()
    return written
