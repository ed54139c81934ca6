"""`vidgen data`: build corpora. `index` scans a folder of videos into a manifest; `shapes`
renders the synthetic shapes world (SHAPES_WORLD.md)."""

from __future__ import annotations

import argparse
import sys
import time


def add_parser(subparsers):
    parser = subparsers.add_parser("data", help="Index a video folder into a manifest, or render the shapes-world corpus",
                                   description="Build training corpora: a manifest of an existing video folder, or the synthetic shapes world.")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    index = sub.add_parser("index", help="Scan a folder (recursively) and write one manifest line per readable video",
                           description="Scan DIR recursively for video files and write a JSON-lines manifest: path, frames, fps, "
                           "duration, width, height, and the caption from a sidecar .txt where there is one. Unreadable files "
                           "(empty, truncated, not video) are reported on stderr with the reason and skipped.")
    index.add_argument("dir", help="folder to scan")
    index.add_argument("-o", "--output", required=True, help="manifest to write (JSON lines), e.g. manifest.jsonl")
    index.add_argument("--no-progress", action="store_true", help="no progress bar")
    index.set_defaults(run=run_index)

    shapes = sub.add_parser("shapes", help="Render the shapes-world corpus (MP4 clips + manifest.jsonl)",
                            description="Render the synthetic shapes world of SHAPES_WORLD.md: one solid shape moving in a straight "
                            "line per clip, 2 s at 24 fps, with a manifest of captions and slots. The held-out (color, shape, "
                            "direction) triples are excluded unless told otherwise. Same seed, same corpus, bit for bit.",
                            epilog="Any field of vidgen.data.shapes.ShapesConfig can be set as key=value, e.g. "
                            "'frames=16 exclude_heldout=false caption_drop=0.0'.")
    shapes.add_argument("--out", required=True, help="output folder (created)")
    shapes.add_argument("--videos", type=int, help="number of clips (default 100)")
    shapes.add_argument("--seed", type=int, help="corpus seed (default 0)")
    shapes.add_argument("--size", type=int, help="frame side in pixels (default 64)")
    shapes.add_argument("--config", help="YAML file of ShapesConfig fields (e.g. configs/shapes_data.yaml)")
    shapes.add_argument("--no-progress", action="store_true", help="no progress bar")
    shapes.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    shapes.set_defaults(run=run_shapes)
    return parser


def run_index(args: argparse.Namespace) -> int:
    from ..data.manifest import index_videos, write_manifest

    started = time.perf_counter()
    records, failures = index_videos(args.dir, progress=not args.no_progress)
    for failure in failures:
        print(f"skipped {failure.path}: {failure.reason}", file=sys.stderr)
    write_manifest(records, args.output)
    took = time.perf_counter() - started
    print(f"indexed {len(records)} videos into {args.output} in {took:.1f}s; skipped {len(failures)} unreadable files",
          file=sys.stderr if failures else sys.stdout)
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
    manifest = make_corpus(args.out, cfg, progress=not args.no_progress)
    print(f"rendered {cfg.videos} clips of {cfg.size} px into {args.out} in {time.perf_counter() - started:.1f}s; manifest: {manifest}")
    return 0
