"""`vidgen interpolate`: a clip's frame rate raised by the interpolation stage, its frames kept."""

from __future__ import annotations

import argparse

from . import arguments as types
from .clip_commands import add_clip_arguments, check_request, load_pipeline, seed_of, write


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "interpolate", help="Raise a clip's frame rate",
        description="Raise a clip's frame rate with the model's frame interpolation stage: the clip's own frames "
        "stay where they were (every K-th frame, exactly), the frames between are drawn by the stage.")
    add_clip_arguments(parser)
    parser.add_argument("--factor", type=types.positive_int, help="K: frames out per frame in (default: the model's "
                        "interpolation factor, 3 for the shapes model)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..errors import VidgenError
    from ..model_index import read_model_index

    model, clip, note = check_request(args, "interp")
    most = read_model_index(model).interp.factor
    if args.factor is not None and not 2 <= args.factor <= most:
        raise VidgenError(f"--factor {args.factor}: this model's interpolation stage was trained on frame skips 2 to "
                          f"{most}: give --factor between them")
    if len(clip.frames) < 2:
        raise VidgenError(f"{args.clip} has one frame: interpolation needs at least two")
    seed = seed_of(args)
    pipe = load_pipeline(args, model)
    out = pipe.interpolate(clip, factor=args.factor, prompt=args.prompt, seed=seed, progress=not args.no_progress,
                           num_inference_steps=args.steps)
    factor = args.factor or most
    write(args, out, clip, model, seed, {"input": note, "factor": factor,
                                        "kept_frames": f"every {factor}th from 0 (the clip's own)"})
    return 0
