"""WebDataset shards: tar files of samples, each a video member `{key}.mp4` (any video suffix) with
an optional caption `{key}.txt` and metadata `{key}.json` beside it, the layout video2dataset
and `vidgen data shard` write.

    data.shards="corpus/{00000..00127}.tar"

A pattern is brace-expanded by webdataset (`expand_urls`: `{000..127}` ranges, `::` between
patterns) into local tar files. Each shard's samples are counted from its tar headers (no video is
read), or taken from the shards.json `vidgen data shard` wrote beside it where the file is the one
it recorded (same name and size), so every process knows how many clips each part of the corpus holds before it reads one:
that is what lets the ranks agree on the length of an epoch (vidgen.data.shard_dataset).
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import VidgenError
from .manifest import VIDEO_SUFFIXES
from .reader import EncodedVideo

logger = logging.getLogger("vidgen.data")

VIDEO_EXTENSIONS = frozenset(suffix.lstrip(".") for suffix in VIDEO_SUFFIXES)


@dataclass(frozen=True)
class Shard:
    path: str
    samples: int  # keys with a video member


@dataclass(frozen=True)
class RawSample:
    """One sample as read from a tar: the video's bytes, its caption and metadata, undecoded."""

    key: str
    shard: str
    video: EncodedVideo
    caption: str | None
    meta: dict


def split_key(name: str) -> tuple[str | None, str]:
    """`dir/key.ext.more` -> ("dir/key", "ext.more"), webdataset's rule for which members share a sample."""
    from webdataset.tariterators import base_plus_ext

    key, ext = base_plus_ext(name)
    return key, (ext or "").lower()


def video_extension(extensions) -> str | None:
    """The member extension of a sample that holds its video (`mp4`, `webm`, ...), if any."""
    return next((ext for ext in sorted(extensions) if ext in VIDEO_EXTENSIONS), None)


def expand_shards(pattern: str) -> list[str]:
    """The tar files a data.shards pattern names, each checked to exist and kept once (by its real path)."""
    from webdataset.shardlists import expand_urls

    if "://" in pattern:
        raise VidgenError(f"data.shards={pattern}: vidgen reads local shards; copy them to a local or mounted file "
                          f"system and give its path pattern, e.g. data.shards=corpus/{{00000..00127}}.tar")
    try:
        expanded = expand_urls(pattern)
    except ValueError as exc:  # braceexpand's UnbalancedBracesError
        raise VidgenError(f"data.shards={pattern}: the pattern cannot be expanded ({exc}); balance its braces, e.g. "
                          f"data.shards=corpus/{{00000..00127}}.tar") from None
    paths, seen = [], set()
    for path in (os.path.expanduser(p) for p in expanded):
        real = os.path.realpath(path)
        if real in seen:  # a shard named twice would be read twice an epoch
            logger.warning("data.shards=%s names %s more than once: it is read once", pattern, path)
            continue
        seen.add(real)
        paths.append(path)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise VidgenError(f"data.shards={pattern}: {len(missing)} of its {len(paths)} shards do not exist (e.g. "
                          f"{missing[0]}); write shards with `vidgen data shard SRC -o OUT`, or fix the pattern")
    return paths


def count_samples(path: str) -> int:
    """Samples with a video member in a tar, read from its headers alone (the data is seeked over)."""
    keys: dict[str, set[str]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if member.isreg():
                    key, ext = split_key(member.name)
                    if key is not None:
                        keys.setdefault(key, set()).add(ext)
    except (tarfile.TarError, OSError) as exc:
        logger.warning("shard %s is damaged after %d samples (%s): the rest of it is skipped", path, len(keys), exc)
    return sum(1 for exts in keys.values() if video_extension(exts))


def recorded_counts(folder: Path) -> dict[tuple[str, int], int]:
    """{(name, bytes): samples} from the shards.json `vidgen data shard` wrote in `folder` (empty if none)."""
    try:
        index = json.loads((folder / "shards.json").read_text(encoding="utf-8"))
        return {(s["name"], int(s["bytes"])): int(s["samples"]) for s in index["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _count(path: str, recorded: dict) -> int:
    """A shard's count as shards.json records it where the file is the one recorded (same name and
    size), else from its headers."""
    known = recorded.get(Path(path).parent, {}).get((Path(path).name, os.path.getsize(path)))
    return known if known is not None else count_samples(path)


def scan_shards(pattern: str) -> list[Shard]:
    """The shards of a pattern with their sample counts; shards without a single video are dropped, with a warning.
    Headers are read by a pool of threads (the work is waiting on the file system)."""
    from concurrent.futures import ThreadPoolExecutor

    paths = expand_shards(pattern)
    recorded = {folder: recorded_counts(folder) for folder in {Path(p).parent for p in paths}}
    with ThreadPoolExecutor(max_workers=16) as pool:
        counts = list(pool.map(lambda path: _count(path, recorded), paths))
    shards = [Shard(path, count) for path, count in zip(paths, counts)]
    empty = [s.path for s in shards if s.samples == 0]
    if empty:
        logger.warning("%d shards hold no video member and are left out (e.g. %s)", len(empty), empty[0])
    shards = [s for s in shards if s.samples > 0]
    if not shards:
        raise VidgenError(f"data.shards={pattern}: no shard holds a video member ({', '.join(sorted(VIDEO_EXTENSIONS))})")
    return shards


def _caption(members: dict[str, bytes], meta: dict) -> str | None:
    if "txt" in members:
        text = members["txt"].decode("utf-8", errors="replace")
    else:
        text = meta.get("caption") if isinstance(meta.get("caption"), str) else ""
    return " ".join(text.split()) or None


def read_shard(path: str, skip: int = 0) -> Iterator[RawSample]:
    """The samples of one tar in order, the first `skip` of those with a video passed over without
    being decoded. A damaged tar ends early, with a warning: its remaining samples are not read."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    name = Path(path).name
    passed = 0
    try:
        with open(path, "rb") as stream:
            members = ({**member, "__url__": path} for member in tar_file_iterator(stream))
            for sample in group_by_keys(members):
                fields = {k: v for k, v in sample.items() if not k.startswith("__")}
                ext = video_extension(fields)
                if ext is None:
                    continue  # not counted as a sample (count_samples)
                if passed < skip:
                    passed += 1
                    continue
                try:
                    meta = json.loads(fields["json"]) if "json" in fields else {}
                except (UnicodeDecodeError, json.JSONDecodeError):
                    meta = {}
                meta = meta if isinstance(meta, dict) else {}
                key = sample["__key__"]
                yield RawSample(key, path, EncodedVideo(f"{name}:{key}.{ext}", fields[ext]), _caption(fields, meta), meta)
    except (tarfile.TarError, OSError, ValueError) as exc:  # ValueError: a duplicate member name
        logger.warning("shard %s could not be read to its end (%s): the rest of it is skipped this pass", path, exc)
