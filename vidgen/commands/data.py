"""`vidgen data`: build corpora. `index` scans a folder of videos into a manifest; `shapes`
renders the synthetic shapes world (docs/shapes-world.md); `shard` writes WebDataset shards;
`cache` encodes a latent cache in parallel (docs/data-at-scale.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..data.manifest import VIDEO_SUFFIXES
from ..destinations import check_file_destination
from . import arguments as types
from .pairs import add_pairs_parser


def add_parser(subparsers):
    parser = subparsers.add_parser("data", help="Index, shard or cache a video corpus, or render the shapes-world corpus",
                                   description="Build training corpora: a manifest of an existing video folder, the synthetic "
                                   "shapes world, WebDataset shards of a corpus, or its latents cached in parallel "
                                   "(docs/data-at-scale.md).")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    index = sub.add_parser("index", help="Scan a folder (recursively) and write one manifest line per readable video",
                           description="Scan DIR recursively for video files and write a JSON-lines manifest: path, frames, fps, "
                           "duration, width, height, and the caption from a sidecar .txt where there is one. Files that cannot "
                           "be read (empty, truncated, not video, an unreadable caption, a name that is not UTF-8, a FIFO, a "
                           "symlink loop) are reported on stderr with the reason and skipped; the others are indexed.")
    index.add_argument("dir", help="folder to scan")
    index.add_argument("-o", "--output", required=True, help="manifest to write (JSON lines), e.g. manifest.jsonl")
    index.add_argument("--overwrite", action="store_true", help="replace an -o file that is not a manifest")
    index.add_argument("--no-progress", action="store_true", help="no progress bar")
    index.set_defaults(run=run_index)

    shapes = sub.add_parser("shapes", help="Render the shapes-world corpus (MP4 clips + manifest.jsonl)",
                            description="Render the synthetic shapes world of docs/shapes-world.md: one solid shape moving in a straight "
                            "line per clip, 2 s at 24 fps, with a manifest of captions and slots. The held-out (color, shape, "
                            "direction) triples are excluded unless told otherwise. Same seed, same corpus, bit for bit.",
                            epilog="Any field of vidgen.data.shapes.ShapesConfig can be set as key=value, e.g. "
                            "'frames=16 exclude_heldout=false caption_drop=0.0'.")
    shapes.add_argument("--out", required=True, help="output folder (created; a folder of a corpus rendered before is "
                        "rendered over)")
    shapes.add_argument("--overwrite", action="store_true", help="render into a folder that holds other files (only "
                        "clips/, manifest.jsonl and config.yaml are written)")
    shapes.add_argument("--videos", type=types.positive_int, help="number of clips (default 100)")
    shapes.add_argument("--seed", type=types.integer(0, 2**63 - 1, "seed"), help="corpus seed (default 0)")
    shapes.add_argument("--size", type=types.positive_int, help="frame side in pixels (default 64)")
    shapes.add_argument("--config", help="YAML file of ShapesConfig fields")
    shapes.add_argument("--no-progress", action="store_true", help="no progress bar")
    shapes.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    shapes.set_defaults(run=run_shapes)
    add_pairs_parser(sub)

    shard = sub.add_parser("shard", help="Write a folder or manifest as WebDataset shards (tar files) for data.shards",
                           description="Write the videos of SRC (a folder, scanned as `data index` does, or a manifest: "
                           "JSON lines, CSV or parquet) as WebDataset shards: OUT/00000.tar, ... each holding --per-shard "
                           "clips as {key}.mp4 (the file's bytes, its suffix kept), {key}.txt (the caption) and {key}.json "
                           "(its manifest fields), and OUT/shards.json. Train on them with data.shards=OUT/{00000..N}.tar.")
    shard.add_argument("src", help="folder of videos, or a manifest (.jsonl, .csv, .parquet)")
    shard.add_argument("-o", "--output", required=True, help="folder to write the shards into (new, empty, or shards "
                       "this command wrote before)")
    shard.add_argument("--per-shard", type=types.positive_int, default=1000, help="clips per shard (default 1000); "
                       "give at least as many shards as processes x data.num_workers")
    shard.add_argument("--no-progress", action="store_true", help="no progress bar")
    shard.set_defaults(run=run_shard)

    cache = sub.add_parser("cache", help="Encode a manifest's clips into a latent cache, in parallel under accelerate",
                           description="Encode every frame of every clip of MANIFEST with the VAE of --model at --size px "
                           "into CACHE, the folder data.latent_cache names (vidgen.data.latent_cache). Under `accelerate "
                           "launch` the clips are split across the processes, each writing its own parts; a rerun skips "
                           "the parts already done; rank 0 writes the index once every part is done.",
                           epilog="e.g. accelerate launch --num_processes 8 -m vidgen data cache corpus/manifest.jsonl "
                           "--model runs/inflated --size 256 -o corpus/latents")
    cache.add_argument("manifest", help="manifest of the clips (.jsonl, .csv, .parquet)")
    cache.add_argument("--model", required=True, help="a vidgen model folder (its vae/), a diffusers text-to-image "
                       "folder, or an AutoencoderKL folder")
    cache.add_argument("--size", type=types.positive_int, required=True, help="frame side in pixels (data.size)")
    cache.add_argument("-o", "--output", required=True, help="cache folder (data.latent_cache)")
    cache.add_argument("--part-size", type=types.positive_int, default=64, help="clips per part: the unit a rerun "
                       "skips (default 64)")
    cache.add_argument("--no-progress", action="store_true", help="no progress bar")
    cache.set_defaults(run=run_cache)
    return parser


def _is_manifest(path: Path) -> bool:
    """JSON lines whose first line is an object with a path (or empty): what `data index` writes."""
    with open(path, encoding="utf-8") as f:
        first = json.loads(f.readline() or "{}")
    return isinstance(first, dict) and ("path" in first or not first)


def run_index(args: argparse.Namespace) -> int:
    from ..data.manifest import index_videos, write_manifest

    check_file_destination(args.output, "manifest", "manifest.jsonl", _is_manifest, args.overwrite)
    started = time.perf_counter()
    records, failures = index_videos(args.dir, progress=not args.no_progress)
    for failure in failures:
        print(f"skipped {failure.path}: {failure.reason}", file=sys.stderr)
    write_manifest(records, args.output)
    took = time.perf_counter() - started
    print(f"indexed {len(records)} videos into {args.output} in {took:.1f}s; skipped {len(failures)} unreadable files",
          file=sys.stderr if failures else sys.stdout)
    if not records:
        print(f"warning: {args.dir} holds no readable video (looked for {', '.join(sorted(VIDEO_SUFFIXES))}); the "
              f"manifest is empty", file=sys.stderr)
    return 0


def run_shapes(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data.shapes import ShapesConfig, make_corpus

    overrides = list(args.overrides)
    for flag in ("videos", "seed", "size"):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{flag}={value}")
    cfg = load_config(ShapesConfig, args.config, overrides)
    started = time.perf_counter()
    manifest = make_corpus(args.out, cfg, progress=not args.no_progress, overwrite=args.overwrite)
    print(f"rendered {cfg.videos} clips of {cfg.size} px into {args.out} in {time.perf_counter() - started:.1f}s; manifest: {manifest}")
    return 0


def _shard_records(src: Path, progress: bool) -> list[dict]:
    """The records to shard: a folder's readable videos, or a manifest's videos that exist."""
    from ..data.manifest import index_videos, read_manifest

    if src.is_dir():
        records, failures = index_videos(src, progress=progress)
        for failure in failures:
            print(f"skipped {failure.path}: {failure.reason}", file=sys.stderr)
        return records
    records = read_manifest(src)
    present = [r for r in records if Path(r["path"]).is_file()]
    for record in records:
        if not Path(record["path"]).is_file():
            print(f"skipped {record['path']}: no such file", file=sys.stderr)
    return present


def run_shard(args: argparse.Namespace) -> int:
    from ..data.shard_writer import check_shard_folder, shard_pattern, write_shards
    from ..errors import VidgenError

    src = Path(args.src)
    if not src.exists():
        raise VidgenError(f"{src} does not exist: give a folder of videos or a manifest (.jsonl, .csv, .parquet)")
    check_shard_folder(args.output)
    started = time.perf_counter()
    records = _shard_records(src, progress=not args.no_progress)
    if not records:
        raise VidgenError(f"{src} holds no readable video: nothing to shard")
    root = src if src.is_dir() else src.resolve().parent
    written = write_shards(records, args.output, args.per_shard, root, progress=not args.no_progress)
    print(f"wrote {sum(shard['samples'] for shard in written)} clips into {len(written)} shards in {args.output} in "
          f"{time.perf_counter() - started:.1f}s; train with data.shards={Path(args.output) / shard_pattern(len(written))}")
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from ..data.parallel_cache import cache_in_parallel

    return cache_in_parallel(args.manifest, args.model, args.size, args.output, args.part_size,
                             progress=not args.no_progress)
