"""`vidgen upscale`: the super-resolution stage on a user's clip."""

from __future__ import annotations

import argparse

from .clip_commands import add_clip_arguments, check_request, load_pipeline, seed_of, write


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "upscale", help="Raise a clip's resolution",
        description="Raise a clip's resolution with the model's super-resolution stage: the clip is fitted to the "
        "model's base size (scaled and center-cropped, said in the sidecar) and scaled by the stage's factor.")
    add_clip_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    model, clip, note = check_request(args, "sr")
    seed = seed_of(args)
    pipe = load_pipeline(args, model)
    out = pipe.upscale(clip, prompt=args.prompt, seed=seed, progress=not args.no_progress,
                       num_inference_steps=args.steps)
    write(args, out, clip, model, seed, {"input": note})
    return 0
