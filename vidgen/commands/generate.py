"""`vidgen generate`: text -> clip with a vidgen model folder, written as MP4, GIF or PNG frames.

The prompt, seed and settings travel with the clip (container metadata and a sidecar JSON), so
every clip can be made again. Everything that can be refused (the numbers, the prompts file, the
model folder's limits, the output paths) is refused before the model loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from pathlib import Path

from .. import __version__
from ..destinations import FORMATS, check_clip_destination
from ..distributed import Processes, clips_to_make, say
from ..errors import VidgenError
from . import arguments as types
from ..request import check_prompt, settings_record
from .media_flags import add_media_arguments, media_request
from .model_options import apply_model_options, load_device, lora_specs
from .sampling import add_sampling_arguments, plan

DTYPES = ("float32", "bfloat16", "float16")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "generate", help="Generate a clip from a text prompt",
        description="Generate a clip from a text prompt with a vidgen model folder (made by `vidgen inflate` or "
        "`vidgen train`). Unset options take the model's defaults (its vidgen.json). The same seed and settings "
        "give the same clip. vidgen replaces its own earlier outputs but never a file or folder it did not write "
        "(see --overwrite).")
    parser.add_argument("prompt", nargs="?", help="what the clip shows (or use --prompts FILE)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="clip to write: OUT.mp4, OUT.gif, or a folder for PNG frames; with --prompts, "
                        "OUT_000.mp4, OUT_001.mp4, ...")
    parser.add_argument("--overwrite", action="store_true",
                        help="write over a file, or into a folder, that vidgen did not write (only the clip's own "
                        "file, NNNNN.png frames and sidecar are replaced)")
    parser.add_argument("--prompts", metavar="FILE", help="one clip per non-empty line of FILE (UTF-8), all with the "
                        "same seed")
    parser.add_argument("--negative", metavar="TEXT", help="negative prompt: what the clip should not show")
    parser.add_argument("--seed", type=types.seed, help="random seed, 0 to 2^64-1 (default: a fresh one, recorded in "
                        "the metadata)")
    parser.add_argument("--fps", type=types.positive, help="frame rate of the keyframes (interpolation multiplies it)")
    parser.add_argument("--height", type=types.positive_int, help="base-stage height in pixels (a multiple of the "
                        "model's latent factor; super-resolution multiplies it)")
    parser.add_argument("--width", type=types.positive_int, help="base-stage width in pixels (likewise)")
    parser.add_argument("--format", choices=FORMATS, help="output format (default: from the OUT name)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="model precision (default float32)")
    add_sampling_arguments(parser)
    add_media_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def _prompts_and_outputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    out = Path(args.output)
    if (args.prompt is None) == (args.prompts is None):
        raise VidgenError("give a PROMPT or --prompts FILE (one of them)")
    if args.prompt is not None:
        return [(check_prompt(args.prompt), out)]
    prompts = [line.strip() for line in types.text_file_lines(args.prompts, "--prompts") if line.strip()]
    if not prompts:
        raise VidgenError(f"--prompts {args.prompts} has no non-empty lines")
    for number, prompt in enumerate(prompts, 1):
        check_prompt(prompt, f"prompt {number} of --prompts {args.prompts}")
    return [(p, out.with_name(f"{out.stem}_{i:03d}{out.suffix}")) for i, p in enumerate(prompts)]


def fresh_seed() -> int:
    """A seed for a clip whose user gave none; it is recorded with the clip."""
    return random.SystemRandom().randrange(2**32)


def clip_metadata(out, prompt: str, negative: str | None, seed: int, model, scheduler: str, eta: float, dtype: str,
                  size: tuple[int, int, int, float]) -> dict:
    """What a clip's sidecar and container record: the prompt, seed, model and every setting of
    `out` (a VideoOutput of one clip), so the clip can be made again. `size`: its output_size."""
    return {"prompt": prompt, "negative_prompt": negative, "seed": seed, "model": str(model),
            **settings_record(out.settings, out.stages, scheduler, eta, out.autocast, size),
            "reversed": out.reversed[0], "kept_candidate": out.kept_candidates[0], "dtype": dtype,
            "vidgen_version": __version__}


def _made_with(args: argparse.Namespace, request, seed: int, fmt: str) -> dict:
    """What a clip's sidecar records of these settings, short of the prompt: a clip whose sidecar
    matches it is not made again by a launched rerun. The seed counts only where --seed gives it
    (a fresh one differs on every run)."""
    from ..precision import autocast_dtype, autocast_name

    ran_in = autocast_name(autocast_dtype(request.settings.autocast, args.device))  # as the pipeline will resolve it
    made = {"negative_prompt": args.negative, "model": str(request.model), "dtype": args.dtype, "format": fmt,
            **settings_record(request.settings, request.stages, args.scheduler, args.eta, ran_in, request.output_size),
            "lora": [[str(path), scale] for path, scale in lora_specs(args)]}
    if args.seconds is not None:  # a long clip's frame count is known once made; its length is in the media notes
        del made["frames"]
    return {**made, "seed": seed} if args.seed is not None else made


def run(args: argparse.Namespace) -> int:
    # 1. Everything that can be refused, before the model loads.
    jobs = _prompts_and_outputs(args)
    if args.negative is not None:
        check_prompt(args.negative, "the negative prompt (--negative)", allow_empty=True)
    fmt = [check_clip_destination(path, args.format, overwrite=args.overwrite) for _, path in jobs][0]
    request = plan(args)
    media, media_notes = media_request(args, request)
    # Under `accelerate launch`: this process's share of the prompts. No collective follows, so the
    # ranks leave their group here (vidgen.distributed).
    with Processes() as processes:
        seed = processes.agree(args.seed if args.seed is not None else fresh_seed())
        jobs, skipped = clips_to_make(jobs, {**_made_with(args, request, seed, fmt), **media_notes}, processes)
    if skipped:
        say(f"skipped {skipped} clip(s) already written with these settings (process {processes.rank})")
    if not jobs:
        return 0

    # 2. The model, then one clip per prompt.
    import torch
    from transformers.utils import logging as transformers_logging

    from ..pipeline import VideoPipeline
    from ..video_io import save_video

    transformers_logging.disable_progress_bar()  # its weight-loading bars; vidgen shows its own
    args.device = processes.device(args.device)  # `cuda`: this process's own GPU
    pipe = VideoPipeline.from_pretrained(request.model, device=torch.device(load_device(args)),
                                         dtype=getattr(torch, args.dtype), scheduler=args.scheduler)
    apply_model_options(pipe, args)  # --lora, --offload, --attention-chunk, --decode-chunk
    s, stages = request.settings, request.stages
    frames_out, height_out, width_out, fps_out = request.output_size
    for prompt, path in jobs:
        out = pipe(prompt, negative_prompt=args.negative, **dataclasses.asdict(s), eta=args.eta, seed=seed,
                   progress=not args.no_progress, stages=stages, **media)
        frames = out.frames[0]  # (f h w 3)
        frames_out, height_out, width_out, fps_out = len(frames), frames.shape[1], frames.shape[2], out.fps
        metadata = {**clip_metadata(out, prompt, args.negative, seed, request.model, args.scheduler, args.eta,
                                    args.dtype, (frames_out, height_out, width_out, fps_out)),
                    **media_notes, "lora": [[str(path), scale] for path, scale in lora_specs(args)]}
        save_video(frames, path, fps=fps_out, fmt=args.format, metadata=metadata, overwrite=args.overwrite)
        say(f"wrote {path} ({frames_out} frames at {fps_out:g} fps, {width_out}x{height_out}, seed {seed})")
    return 0
