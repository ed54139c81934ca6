"""`vidgen generate`: text -> clip with a vidgen model folder, written as MP4, GIF or PNG frames.

The prompt, seed and settings travel with the clip (container metadata and a sidecar JSON), so
every clip can be made again.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from pathlib import Path

from .. import __version__
from ..errors import VidgenError
from ..packaged import default_model
from ..video_io import FORMATS

# vidgen.checkpoint.AUTOCAST_CHOICES, written out: importing it would load torch for `--help`
# (tests/test_pipeline_cli.py holds the two equal).
AUTOCAST_CHOICES = ("off", "auto", "bfloat16", "float16")
CHOOSE_BY_CHOICES = ("arrow", "swaps")  # vidgen.checkpoint.CHOOSE_BY_CHOICES, likewise

DTYPES = ("float32", "bfloat16", "float16")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "generate", help="Generate a clip from a text prompt",
        description="Generate a clip from a text prompt with a vidgen model folder (made by `vidgen inflate` or "
        "`vidgen train`). Unset options take the model's defaults (its vidgen.json). The same seed and settings "
        "give the same clip.")
    parser.add_argument("prompt", nargs="?", help="what the clip shows (or use --prompts FILE)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="clip to write: OUT.mp4, OUT.gif, or a folder for PNG frames; with --prompts, "
                        "OUT_000.mp4, OUT_001.mp4, ...")
    parser.add_argument("--model", metavar="DIR", help="vidgen model folder (default: the embedded shapes model)")
    parser.add_argument("--prompts", metavar="FILE", help="one clip per non-empty line of FILE, all with the same seed")
    parser.add_argument("--negative", metavar="TEXT", help="negative prompt: what the clip should not show")
    parser.add_argument("--steps", type=int, help="denoising steps")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (1: no guidance)")
    parser.add_argument("--motion-guidance", type=float, metavar="S",
                        help="strength of the arrow critic's guidance of the motion (models with a critic; "
                        "0: off; default: the model's)")
    parser.add_argument("--arrow-check", action=argparse.BooleanOptionalAction, default=None,
                        help="play the clip backwards where the arrow critic reads it as running against the "
                        "prompt (models with a critic, of a world symmetric in time; default: the model's)")
    parser.add_argument("--candidates", type=_at_least(1), metavar="N",
                        help="base-stage clips drawn for the prompt, of which the arrow critic keeps the one that "
                        "runs its way most clearly (models with a critic; each costs a base stage; default: the "
                        "model's)")
    parser.add_argument("--choose-by", choices=CHOOSE_BY_CHOICES,
                        help="what the critic keeps a candidate by: arrow (its arrow logit under the prompt) or swaps "
                        "(the prompt against its swapped captions, for a critic trained on them); default: the "
                        "model's")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta: 0 deterministic (default), 1 DDPM-like")
    parser.add_argument("--seed", type=int, help="random seed (default: a fresh one, recorded in the metadata)")
    parser.add_argument("--frames", type=int, help="keyframes of the base stage (frame interpolation multiplies them)")
    parser.add_argument("--fps", type=float, help="frame rate of the keyframes (interpolation multiplies it)")
    parser.add_argument("--height", type=int, help="base-stage height in pixels (a multiple of the model's latent "
                        "factor; super-resolution multiplies it)")
    parser.add_argument("--width", type=int, help="base-stage width in pixels (likewise)")
    parser.add_argument("--stages", help="comma-separated stages to run, base first (default: all the model has, "
                        "e.g. base,interp,sr); 'base' alone is fastest")
    parser.add_argument("--format", choices=FORMATS, help="output format (default: from the OUT name)")
    parser.add_argument("--scheduler", default="ddim",
                        help="ddim (default), dpm++, euler, euler-a, unipc, pndm, ddpm, "
                        "or a diffusers scheduler class name")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="model precision (default float32)")
    parser.add_argument("--autocast", choices=AUTOCAST_CHOICES,
                        help="precision of the U-Nets' matrix products, float32 weights kept: off (float32), "
                        "bfloat16, float16, or auto (bfloat16 where the GPU or CPU computes it natively, as "
                        "AVX512-BF16 CPUs do; float32 elsewhere); default: the model's")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)
    return parser


def _at_least(low: int):
    """An argparse type: an integer no smaller than `low`."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "integer"  # what argparse calls the type in its "invalid ... value" message
    return parse


def _prompts_and_outputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    out = Path(args.output)
    if (args.prompt is None) == (args.prompts is None):
        raise VidgenError("give a PROMPT or --prompts FILE (one of them)")
    if args.prompt is not None:
        return [(args.prompt, out)]
    try:
        lines = Path(args.prompts).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise VidgenError(f"cannot read --prompts {args.prompts}: {exc.strerror}") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise VidgenError(f"--prompts {args.prompts} has no non-empty lines")
    return [(p, out.with_name(f"{out.stem}_{i:03d}{out.suffix}")) for i, p in enumerate(prompts)]


def _device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise VidgenError("--device cuda: no CUDA GPU is available to this torch build; use --device cpu")
    return torch.device(name)


def run(args: argparse.Namespace) -> int:
    import torch

    from transformers.utils import logging as transformers_logging

    from ..pipeline import VideoPipeline

    transformers_logging.disable_progress_bar()  # its weight-loading bars; vidgen shows its own
    from ..video_io import save_video

    if args.model is None:
        args.model = default_model()
    jobs = _prompts_and_outputs(args)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    pipe = VideoPipeline.from_pretrained(args.model, device=_device(args.device), dtype=getattr(torch, args.dtype),
                                         scheduler=args.scheduler)
    s = pipe.settings(num_frames=args.frames, height=args.height, width=args.width, fps=args.fps,
                      num_inference_steps=args.steps, guidance_scale=args.guidance,
                      motion_guidance=args.motion_guidance, arrow_check=args.arrow_check,
                      candidates=args.candidates, choose_by=args.choose_by, autocast=args.autocast)
    stages = args.stages.split(",") if args.stages else list(pipe.stages)
    frames_out, height_out, width_out, fps_out = pipe.output_size(s, stages)
    for prompt, path in jobs:
        frames = pipe(prompt, negative_prompt=args.negative, **dataclasses.asdict(s), eta=args.eta, seed=seed,
                      progress=not args.no_progress, stages=stages)[0]  # (f h w 3)
        metadata = {
            "prompt": prompt, "negative_prompt": args.negative, "seed": seed, "model": str(args.model),
            "stages": stages, "scheduler": args.scheduler, "steps": s.num_inference_steps,
            "guidance": s.guidance_scale, "motion_guidance": s.motion_guidance,
            "arrow_check": s.arrow_check, "candidates": s.candidates, "choose_by": s.choose_by,
            "reversed": pipe.last_reversed[0], "eta": args.eta,
            "keyframes": s.num_frames, "frames": frames_out, "fps": fps_out, "dtype": args.dtype,
            "autocast": str(pipe.autocast_dtype or torch.float32).removeprefix("torch."),
            "vidgen_version": __version__,
        }
        save_video(frames, path, fps=fps_out, fmt=args.format, metadata=metadata)
        print(f"wrote {path} ({frames_out} frames at {fps_out:g} fps, {width_out}x{height_out}, seed {seed})")
    return 0
