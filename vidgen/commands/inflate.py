"""`vidgen inflate`: turn a diffusers text-to-image model into a vidgen video model.

The image U-Net gets temporal convolutions and attention that start as the identity
(Make-A-Video section 3.2), so the new model generates, frame by frame, what the image model
would; training the temporal layers on video (`vidgen train`) then teaches it motion.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from ..errors import VidgenError
from ..fs import check_writable_folder
from . import arguments as types


def check_model_destination(out: Path, overwrite: bool) -> None:
    """A model folder is written to a new path, or over a vidgen model folder with --overwrite;
    never over another folder or file (it is replaced whole)."""
    if out.exists():
        if not (out / "vidgen.json").is_file():
            raise VidgenError(f"{out} exists and is not a vidgen model folder: choose another --out (vidgen replaces "
                              f"only its own model folders)")
        if not overwrite:
            raise VidgenError(f"{out} exists: choose another --out, or add --overwrite to replace it")
    check_writable_folder(out.parent, "--out's folder")


def check_motion_adapter(path: Path, max_frames: int | None) -> None:
    """--motion-adapter: a MotionAdapter folder or a .safetensors motion module; never a pickle."""
    if max_frames is not None:
        raise VidgenError("--max-frames does not apply with --motion-adapter: the motion module's own frame table "
                          "bounds the clip length; leave --max-frames out")
    if path.suffix in (".ckpt", ".pt", ".pth", ".bin", ".pkl"):
        raise VidgenError(f"--motion-adapter {path} is a pickle, which vidgen never loads (unpickling runs code from "
                          f"the file): give the .safetensors version, or a diffusers MotionAdapter folder")
    adapter_folder = path.is_dir() and (path / "config.json").is_file()
    if not adapter_folder and not (path.is_file() and path.suffix == ".safetensors"):
        raise VidgenError(f"--motion-adapter {path} is neither a diffusers MotionAdapter folder (with config.json) nor "
                          f"a .safetensors motion module file")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "inflate", help="Inflate a diffusers text-to-image model into a video model",
        description="Inflate a diffusers text-to-image pipeline folder (unet/, vae/, text_encoder/, tokenizer/, "
        "scheduler/; safetensors weights) into a vidgen video model folder that `vidgen generate --model` runs. "
        "The video U-Net equals the image U-Net on every frame until its temporal layers are trained.")
    parser.add_argument("--image-model", required=True, metavar="DIR", help="diffusers text-to-image pipeline folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="video model folder to write")
    parser.add_argument("--max-frames", type=types.positive_int,
                        help="most frames a clip may have (rows of the frame position table; default 64; with "
                        "--motion-adapter, the adapter's own table)")
    parser.add_argument("--motion-adapter", metavar="PATH",
                        help="AnimateDiff: take the temporal layers from this motion module (a diffusers "
                        "MotionAdapter folder, or the original single-file module as .safetensors) instead of new "
                        "ones, through diffusers' UNetMotionModel (docs/interop.md)")
    parser.add_argument("--frames", type=types.positive_int, help="default frame count of `vidgen generate` (default 16)")
    parser.add_argument("--fps", type=types.positive, help="default frame rate of `vidgen generate` (default 8)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it is a vidgen model folder")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from ..model_folder import VideoModel
    from ..request import ModelFacts, check_settings

    transformers_logging.disable_progress_bar()  # its weight-loading bars; vidgen shows its own

    out = Path(args.out)
    check_model_destination(out, args.overwrite)
    source = Path(args.image_model)
    if not source.is_dir():
        raise VidgenError(f"--image-model {source} is not a folder: give a diffusers text-to-image pipeline folder "
                          f"(unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    if args.motion_adapter is not None:
        check_motion_adapter(Path(args.motion_adapter), args.max_frames)
        from ..interop.sdxl import is_sdxl_folder

        if is_sdxl_folder(source):  # diffusers' UNetMotionModel takes no SDXL size conditioning through vidgen yet
            raise VidgenError(f"--image-model {source} is an SDXL folder: --motion-adapter takes a Stable Diffusion "
                              f"1.x folder (AnimateDiff's SDXL modules are not supported); inflate SDXL without it")
    max_frames = args.max_frames or 64
    if args.frames is not None and args.motion_adapter is None and args.frames > max_frames:
        raise VidgenError(f"--frames {args.frames} is more than --max-frames {max_frames}: raise --max-frames or "
                          f"lower --frames")
    started = time.perf_counter()
    if args.motion_adapter is not None:
        from ..interop.animatediff import animatediff_model

        model = animatediff_model(args.image_model, args.motion_adapter)
    else:
        model = VideoModel.from_image_model(args.image_model, max_frames=max_frames)
    defaults = model.index.defaults
    if args.frames is not None:
        defaults.num_frames = args.frames
    if args.fps is not None:
        defaults.fps = args.fps
    check_settings(ModelFacts.of_model(model), defaults, memory=math.inf)  # defaults recorded, not run here
    model.save_pretrained(out)
    base = model.stages["base"]
    image_params = sum(p.numel() for p in base.spatial_parameters())
    temporal_params = sum(p.numel() for p in base.temporal_parameters())
    print(f"inflated {args.image_model} into {out} in {time.perf_counter() - started:.1f}s: "
          f"{image_params / 1e6:.2f}M image U-Net parameters + {temporal_params / 1e6:.2f}M temporal; "
          f"defaults {defaults.num_frames} frames at {defaults.fps:g} fps, {defaults.width}x{defaults.height}")
    return 0
