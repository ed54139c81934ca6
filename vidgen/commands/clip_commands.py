"""What `vidgen extend`, `interpolate` and `upscale` share: the clip argument, the flags, the
checks made before the model loads, and writing the result with its sidecar."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from .. import __version__
from ..destinations import FORMATS, check_clip_destination
from ..errors import VidgenError
from . import arguments as types
from .sampling import DEVICES

DTYPES = ("float32", "bfloat16", "float16")


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clip", metavar="CLIP", help="the clip: a video file (MP4, GIF, ...) or a folder of PNG "
                        "frames written by vidgen")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="clip to write: OUT.mp4, OUT.gif, or "
                        "a folder for PNG frames (exact frames)")
    parser.add_argument("--overwrite", action="store_true", help="write over a file vidgen did not write")
    parser.add_argument("--format", choices=FORMATS, help="output format (default: from the OUT name)")
    parser.add_argument("--prompt", help="what the clip shows (default: the prompt in the clip's vidgen sidecar, "
                        "else none)")
    parser.add_argument("--fps", type=types.positive, help="the clip's frame rate where its file does not say "
                        "(PNG frames without a sidecar; default 8)")
    parser.add_argument("--model", metavar="DIR", help="vidgen model folder (default: the embedded shapes model)")
    parser.add_argument("--steps", type=types.positive_int, help="denoising steps of each stage run (default: the "
                        "model's)")
    parser.add_argument("--seed", type=types.seed, help="random seed (default: a fresh one, recorded)")
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="where to run (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="model precision (default float32)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_request(args: argparse.Namespace, needs: str | None):
    """(model folder, its index, the clip) after every check that needs no weights."""
    from ..media.inputs import check_fit, read_clip
    from ..model_index import read_model_index
    from ..packaged import default_model

    model = Path(args.model) if args.model is not None else default_model()
    if not model.is_dir():
        raise VidgenError(f"--model {model} is not a folder: give a vidgen model folder, or leave --model out for the "
                          f"embedded shapes model")
    index = read_model_index(model)
    if needs is not None and needs not in index.stages:
        raise VidgenError(f"{model} has no {needs} stage (it has {', '.join(index.stages)}): use a model with one")
    if Path(args.output).resolve() == Path(args.clip).resolve():
        raise VidgenError(f"-o {args.output} is the clip itself: write the result under another name")
    check_clip_destination(args.output, args.format, overwrite=args.overwrite)
    clip = read_clip(args.clip)
    if args.fps is not None:
        clip = type(clip)(clip.frames, args.fps, clip.path, clip.metadata)
    note = check_fit(*clip.size, (index.defaults.height, index.defaults.width), "the clip")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise VidgenError("--device cuda: no CUDA GPU is available to this torch build; use --device cpu")
    return model, clip, note


def load_pipeline(args: argparse.Namespace, model: Path):
    import torch
    from transformers.utils import logging as transformers_logging

    from ..pipeline import VideoPipeline

    transformers_logging.disable_progress_bar()
    pipe = VideoPipeline.from_pretrained(model, device=torch.device(args.device), dtype=getattr(torch, args.dtype))
    if args.steps is not None:  # every stage this command runs
        pipe.model.index.interp.num_inference_steps = pipe.model.index.sr.num_inference_steps = args.steps
    return pipe


def seed_of(args: argparse.Namespace) -> int:
    return args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)


def write(args: argparse.Namespace, out, clip, model: Path, seed: int, record: dict) -> None:
    """The result through the same writer and sidecar as `generate`."""
    from ..video_io import save_video

    frames = out.frames[0]  # (f h w 3)
    metadata = {"command": args.command, "source": clip.path, "prompt": args.prompt or clip.metadata.get("prompt"),
                "seed": seed, "model": str(model), "steps": out.settings.num_inference_steps, "stages": out.stages,
                **record, "dtype": args.dtype, "timings": out.timings, "vidgen_version": __version__}
    path = save_video(frames, args.output, fps=out.fps, fmt=args.format, metadata=metadata, overwrite=args.overwrite)
    print(f"wrote {path} ({len(frames)} frames at {out.fps:g} fps, {frames.shape[2]}x{frames.shape[1]}, seed {seed})")
