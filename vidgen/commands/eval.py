"""`vidgen eval`: judge a model's clips against their prompts. `shapes` generates clips for prompts
over the whole shapes-world vocabulary and scores them with the shapes judge (SHAPES_WORLD.md)."""

from __future__ import annotations

import argparse
import json
import time

from ..errors import VidgenError
from ..packaged import default_model
from .generate import AUTOCAST_CHOICES, CHOOSE_BY_CHOICES, _at_least, _device

DEFAULT_N = 48
DEFAULT_REPORT = "eval_shapes.json"


def add_parser(subparsers):
    parser = subparsers.add_parser("eval", help="Judge a model's clips against their prompts",
                                   description="Evaluate a vidgen model: generate clips for prompts and judge each "
                                   "against its prompt.")
    sub = parser.add_subparsers(dest="eval_command", metavar="SUBCOMMAND", required=True)
    shapes = sub.add_parser(
        "shapes", help="Score a model on the shapes world: slot accuracies for seen and held-out prompts",
        description="Generate one clip per prompt, drawn over the whole shapes-world vocabulary (SHAPES_WORLD.md), "
        "write it to MP4, read it back and judge it: accuracy of background, color, shape, size and direction, "
        "the share of steady clips and of clips with one object, and of clips that obey the whole prompt. Size and "
        "background are scored only where the prompt names them (about half of the prompts each). Seen prompts use "
        "the (color, shape, direction) triples of the training corpus; --heldout adds as many prompts of the six "
        "held-out triples. Writes a JSON report (settings, per-group accuracies, every clip's judgement) and "
        "prints a table. The same seed and settings give the same report.")
    shapes.add_argument("--model", metavar="DIR", help="vidgen model folder (default: the embedded shapes model)")
    shapes.add_argument("--n", type=_at_least(1), default=DEFAULT_N, help=f"prompts per group (default {DEFAULT_N})")
    shapes.add_argument("--heldout", action="store_true", help="add a group of N prompts of the held-out triples")
    shapes.add_argument("--seed", type=_at_least(0), default=0,
                        help="seed of the prompts and of the noise (batch k uses SEED + k; default 0)")
    shapes.add_argument("--steps", type=_at_least(1), help="denoising steps (default: the model's)")
    shapes.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's)")
    shapes.add_argument("--motion-guidance", type=float, metavar="S",
                        help="strength of the arrow critic's guidance (models with a critic; 0: off; default: the "
                        "model's)")
    shapes.add_argument("--candidates", type=_at_least(1), metavar="N",
                        help="base-stage clips drawn per prompt, the arrow critic keeping one (models with a critic; "
                        "default: the model's)")
    shapes.add_argument("--choose-by", choices=CHOOSE_BY_CHOICES,
                        help="what the critic keeps a candidate by: arrow (its arrow logit) or swaps (the prompt "
                        "against its swapped captions, for a critic trained on them); default: the model's")
    shapes.add_argument("--arrow-check", action=argparse.BooleanOptionalAction, default=None,
                        help="play backwards the base-stage clips the arrow critic reads as running against "
                        "their prompt (models with a critic, of a world symmetric in time; default: the model's)")
    shapes.add_argument("--eta", type=float, default=0.0, help="DDIM eta: 0 deterministic (default), 1 DDPM-like")
    shapes.add_argument("--scheduler", default="ddim", help="ddim (default), dpm++, euler, euler-a, unipc, pndm, ddpm, "
                        "or a diffusers scheduler class name (as for vidgen generate)")
    shapes.add_argument("--frames", type=_at_least(1), help="frames per clip (default: the model's)")
    shapes.add_argument("--stages", help="comma-separated stages to run, base first (default: all the model has)")
    shapes.add_argument("--batch-size", type=_at_least(1), default=8, help="clips generated at once (default 8)")
    shapes.add_argument("--autocast", choices=AUTOCAST_CHOICES,
                        help="precision of the U-Nets' matrix products: off (float32), bfloat16, float16, or auto "
                        "(bfloat16 where the device computes it natively); default: the model's")
    shapes.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run (default cpu)")
    shapes.add_argument("-o", "--output", default=DEFAULT_REPORT, metavar="REPORT",
                        help=f"JSON report to write (default {DEFAULT_REPORT})")
    shapes.add_argument("--save-clips", metavar="DIR", help="keep every judged clip as DIR/NNNN_GROUP.mp4")
    shapes.add_argument("--no-progress", action="store_true", help="no progress bar")
    shapes.set_defaults(run=run_shapes)
    return parser


def run_shapes(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from ..evaluation import evaluate_model, format_table
    from ..fs import write_text_atomic
    from ..pipeline import VideoPipeline

    transformers_logging.disable_progress_bar()  # its weight-loading bars; vidgen shows its own
    if args.model is None:
        args.model = default_model()
    started = time.perf_counter()
    pipe = VideoPipeline.from_pretrained(args.model, device=_device(args.device), scheduler=args.scheduler)
    report = evaluate_model(pipe, n=args.n, seed=args.seed, heldout=args.heldout, batch_size=args.batch_size,
                            steps=args.steps, guidance=args.guidance, motion_guidance=args.motion_guidance,
                            arrow_check=args.arrow_check, candidates=args.candidates, choose_by=args.choose_by,
                            autocast=args.autocast, eta=args.eta,
                            scheduler=args.scheduler, frames=args.frames, model_path=args.model,
                            stages=args.stages.split(",") if args.stages else None, clip_dir=args.save_clips,
                            progress=not args.no_progress)
    write_text_atomic(args.output, json.dumps(report, indent=2) + "\n")
    s = report["settings"]
    print(f"shapes eval of {args.model} ({'+'.join(s['stages'])}): {s['scheduler']} {s['steps']} steps, "
          f"eta {s['eta']:g}, guidance {s['guidance']:g}, motion guidance {s['motion_guidance']:g}, "
          f"arrow check {'on' if s['arrow_check'] else 'off'}, {s['candidates']} candidate(s) "
          f"chosen by {s['choose_by']}, "
          f"U-Nets in {s['autocast']}, "
          f"{s['frames']} frames at {s['fps']:g} fps, "
          f"{s['width']}x{s['height']}, seed {s['seed']}")
    print(format_table(report))
    print(f"wrote {args.output} in {time.perf_counter() - started:.1f}s")
    return 0
