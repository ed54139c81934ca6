"""Writing a corpus as WebDataset shards (`vidgen data shard`): the layout video2dataset writes.

    OUT/00000.tar   000000000.json  {"source": "clips/a.mp4", "frames": 48, "fps": 24.0, ...}
                    000000000.mp4   the video file's bytes, as they were (any video suffix kept)
                    000000000.txt   its caption, where it has one
                    000000001.json ...
    OUT/shards.json {"pattern": "{00000..00003}.tar", "samples": 400, "shards": [{"name", "samples", "bytes"}, ...]}

Keys are the clip's number in the corpus, so they are unique across shards. Each shard is written
to a temporary beside it and renamed when whole; shards.json, written last, marks a complete set.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from ..errors import VidgenError
from ..fs import _PARTIAL, atomic_path, check_writable_folder, write_text_atomic

INDEX_NAME = "shards.json"
SHARD_NAME = re.compile(r"^\d{5}\.tar$")


def shard_pattern(count: int) -> str:
    return f"{{00000..{count - 1:05d}}}.tar"


def check_shard_folder(out: str | os.PathLike) -> None:
    """OUT must be new, empty, or a shard set this command wrote (its shards, shards.json and temporaries)."""
    out = Path(out)
    check_writable_folder(out, "-o")
    if not out.is_dir():
        return
    foreign = sorted(name for name in os.listdir(out)
                     if not (SHARD_NAME.match(name) or name == INDEX_NAME or _PARTIAL.match(name)))
    if foreign:
        raise VidgenError(f"-o {out} holds files that are not shards vidgen wrote (e.g. {foreign[0]}): give a new or "
                          f"empty folder")


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


def write_shards(records: Sequence[dict], out: str | os.PathLike, per_shard: int, root: str | os.PathLike,
                 progress: bool = True) -> list[dict]:
    """Write `records` (absolute paths) as shards of `per_shard` clips into `out`; returns [{"name", "samples"}].
    Shards a previous run left beyond the new count are removed (they would join a glob)."""
    import webdataset as wds

    if per_shard < 1:
        raise VidgenError(f"--per-shard must be at least 1, got {per_shard}")
    out, root = Path(out), Path(root).resolve()
    check_shard_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / INDEX_NAME).unlink(missing_ok=True)  # the set is incomplete until it is written again
    written = []
    with tqdm(total=len(records), desc="writing shards", unit="clip", disable=not progress) as bar:
        for number, first in enumerate(range(0, len(records), per_shard)):
            name = f"{number:05d}.tar"
            chunk = records[first:first + per_shard]
            with atomic_path(out / name) as tmp, open(tmp, "wb") as stream:
                with wds.TarWriter(stream, mtime=0) as sink:  # mtime 0: the same corpus gives the same bytes
                    for offset, record in enumerate(chunk):
                        sink.write(_sample(f"{first + offset:09d}", record, root))
                        bar.update(1)
            written.append({"name": name, "samples": len(chunk), "bytes": (out / name).stat().st_size})
    for stale in sorted(out.iterdir()):
        if SHARD_NAME.match(stale.name) and int(stale.name[:5]) >= len(written):
            stale.unlink()
    index = {"pattern": shard_pattern(len(written)), "samples": len(records), "shards": written}
    write_text_atomic(out / INDEX_NAME, json.dumps(index, indent=2) + "\n")
    return written
