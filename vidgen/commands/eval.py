"""`vidgen eval`: judge a model's clips against their prompts. `shapes` generates clips for prompts
over the whole shapes-world vocabulary and scores them with the shapes judge (docs/shapes-world.md)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..destinations import check_clips_folder, check_file_destination
from . import arguments as types
from .model_options import apply_model_options, load_device
from .sampling import add_sampling_arguments, plan

DEFAULT_N = 48
DEFAULT_REPORT = "eval_shapes.json"


def add_parser(subparsers):
    parser = subparsers.add_parser("eval", help="Judge a model's clips against their prompts",
                                   description="Evaluate a vidgen model: generate clips for prompts and judge each "
                                   "against its prompt.")
    sub = parser.add_subparsers(dest="eval_command", metavar="SUBCOMMAND", required=True)
    shapes = sub.add_parser(
        "shapes", help="Score a model on the shapes world: slot accuracies for seen and held-out prompts",
        description="Generate one clip per prompt, drawn over the whole shapes-world vocabulary (docs/shapes-world.md), "
        "write it to MP4, read it back and judge it: accuracy of background, color, shape, size and direction, "
        "the share of steady clips and of clips with one object, and of clips that obey the whole prompt. Size and "
        "background are scored only where the prompt names them (about half of the prompts each). Seen prompts use "
        "the (color, shape, direction) triples of the training corpus; --heldout adds as many prompts of the six "
        "held-out triples. Writes a JSON report (settings, per-group accuracies, every clip's judgement) and "
        "prints a table. The same seed and settings give the same report.")
    shapes.add_argument("--n", type=types.positive_int, default=DEFAULT_N, help=f"prompts per group (default {DEFAULT_N})")
    shapes.add_argument("--heldout", action="store_true", help="add a group of N prompts of the held-out triples")
    shapes.add_argument("--seed", type=types.integer(0, 2**63 - 1, "seed"), default=0,
                        help="seed of the prompts and of the noise (batch k uses SEED + k; default 0)")
    shapes.add_argument("--batch-size", type=types.positive_int, default=8, help="clips generated at once (default 8)")
    shapes.add_argument("-o", "--output", default=DEFAULT_REPORT, metavar="REPORT",
                        help=f"JSON report to write (default {DEFAULT_REPORT})")
    shapes.add_argument("--save-clips", metavar="DIR", help="keep every judged clip as DIR/NNNN_GROUP.mp4")
    shapes.add_argument("--overwrite", action="store_true",
                        help="write the report over a file that is not a vidgen eval report, or clips into a folder "
                        "holding other files (only the same names are replaced)")
    add_sampling_arguments(shapes)
    shapes.set_defaults(run=run_shapes)
    return parser


def _is_report(path: Path) -> bool:
    return {"settings", "groups", "clips"} <= set(json.loads(path.read_text(encoding="utf-8")))


def run_shapes(args: argparse.Namespace) -> int:
    check_file_destination(args.output, "vidgen eval report", DEFAULT_REPORT, _is_report, args.overwrite)
    if args.save_clips is not None:
        check_clips_folder(args.save_clips, overwrite=args.overwrite)
    request = plan(args, batch=args.batch_size)

    import torch
    from transformers.utils import logging as transformers_logging

    from ..distributed import Processes
    from ..evaluation import evaluate_model, format_table
    from ..fs import write_text_atomic
    from ..pipeline import VideoPipeline

    transformers_logging.disable_progress_bar()  # its weight-loading bars; vidgen shows its own
    started = time.perf_counter()
    with Processes() as processes:  # under `accelerate launch`: a share of the batches each, one report on rank 0
        args.device = processes.device(args.device)  # `cuda`: this process's own GPU
        pipe = VideoPipeline.from_pretrained(request.model, device=torch.device(load_device(args)),
                                             scheduler=args.scheduler)
        apply_model_options(pipe, args)  # --lora, --offload, --attention-chunk, --decode-chunk
        report = evaluate_model(pipe, request.settings, n=args.n, seed=args.seed, heldout=args.heldout,
                                batch_size=args.batch_size, eta=args.eta, scheduler=args.scheduler,
                                model_path=request.model, stages=request.stages, clip_dir=args.save_clips,
                                progress=not args.no_progress and processes.is_main, overwrite=args.overwrite,
                                processes=processes)
    if not processes.is_main:
        return 0
    write_text_atomic(args.output, json.dumps(report, indent=2, allow_nan=False) + "\n")
    s = report["settings"]
    print(f"shapes eval of {request.model} ({'+'.join(s['stages'])}): {s['scheduler']} {s['steps']} steps, "
          f"eta {s['eta']:g}, guidance {s['guidance']:g}, motion guidance {s['motion_guidance']:g}, "
          f"arrow check {'on' if s['arrow_check'] else 'off'}, {s['candidates']} candidate(s) "
          f"chosen by {s['choose_by']}, U-Nets in {s['autocast']}, {s['frames']} frames at {s['fps']:g} fps, "
          f"{s['width']}x{s['height']}, seed {s['seed']}")
    print(format_table(report))
    print(f"wrote {args.output} in {time.perf_counter() - started:.1f}s")
    return 0
