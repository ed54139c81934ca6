"""`vidgen extend`: a clip continued, its own frames kept as they were (vidgen.media.long_clips)."""

from __future__ import annotations

import argparse

from ..errors import VidgenError
from . import arguments as types
from .clip_commands import add_clip_arguments, check_request, load_pipeline, seed_of, write


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "extend", help="Continue a clip",
        description="Continue a clip: its frames are kept exactly as they were (re-encoded, not redrawn) and the "
        "model draws what follows, the base stage knowing the clip's last keyframes and frame interpolation its "
        "last frames, so the continuation joins without a seam.")
    add_clip_arguments(parser)
    parser.add_argument("--seconds", type=types.positive, default=1.0, help="seconds to add (default 1)")
    parser.add_argument("--reconstruction-guidance", type=types.non_negative, metavar="W",
                        help="weight of the base stage's reconstruction guidance toward the clip's last keyframes, "
                        ">= 0 (0: replacement alone; default: the model's)")
    parser.add_argument("--continue-strength", type=types.number(0.0, 1.0, low_open=True, what="strength"),
                        metavar="S", help="the new keyframes start from the clip's last one moved on at the clip's "
                        "own velocity, S of the schedule redrawn, in (0, 1] (1: from noise; default: the model's)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..media.inputs import own_anchor_refusal
    from ..model_index import read_model_index

    model, clip, note = check_request(args, None)
    anchor = read_model_index(model).anchor
    if anchor.image_model:  # as VideoPipeline.extend refuses it, but before the weights load
        raise VidgenError(f"{model}: " + own_anchor_refusal(anchor.position, "a clip to extend"))
    seed = seed_of(args)
    pipe = load_pipeline(args, model)
    out = pipe.extend(clip, prompt=args.prompt, seconds=args.seconds, seed=seed, progress=not args.no_progress,
                      num_inference_steps=args.steps, reconstruction_guidance=args.reconstruction_guidance,
                      continue_strength=args.continue_strength)
    write(args, out, clip, model, seed, {"input": note, "kept_frames": f"0-{len(clip.frames) - 1} (the clip's own)",
                                        "added_seconds": args.seconds,
                                        "reconstruction_guidance": out.settings.reconstruction_guidance,
                                        "continue_strength": out.settings.continue_strength})
    return 0
