"""What a folder in diffusers' video layouts is, read from its JSON files alone (no weights, no torch):
the pipelines and U-Nets vidgen runs, and the index a diffusers video folder samples with.

A diffusers text-to-video folder (`TextToVideoSDPipeline`: ModelScope, zeroscope; or
`AnimateDiffPipeline`) has model_index.json naming its pipeline, unet/, vae/, text_encoder/,
tokenizer/ and scheduler/. vidgen runs it without a vidgen.json: `pipeline_index` gives the
index vidgen would have written for it (the base stage alone, independent per-frame noise as
diffusers draws it, diffusers' default guidance).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import VidgenError
from ..fs import read_json_object

# pipeline class -> its default guidance scale (the pipelines' own __call__ defaults)
VIDEO_PIPELINES = {"TextToVideoSDPipeline": 9.0, "AnimateDiffPipeline": 7.5}
VIDEO_UNETS = ("UNet3DConditionModel", "UNetMotionModel")
# UNet3DConditionModel's temporal attention has no frame position table: no limit of its own,
# this bound only keeps requests sane (memory is checked separately, vidgen.request).
UNBOUNDED_FRAMES = 256


def pipeline_class(folder: str | os.PathLike) -> str | None:
    """The `_class_name` of folder/model_index.json, or None where there is none."""
    path = Path(folder) / "model_index.json"
    return read_json_object(path).get("_class_name") if path.is_file() else None


def is_video_pipeline_folder(folder: str | os.PathLike) -> bool:
    return pipeline_class(folder) in VIDEO_PIPELINES


def unet_class(stage_folder: str | os.PathLike) -> str | None:
    """The diffusers class a stage folder's config.json names (None for a vidgen VideoUNet folder,
    whose config.json is the image U-Net's)."""
    path = Path(stage_folder) / "config.json"
    name = read_json_object(path).get("_class_name") if path.is_file() else None
    return name if name in VIDEO_UNETS else None


def stage_max_frames(stage_folder: str | os.PathLike) -> int:
    """The most frames a stage takes: its temporal.json's max_frames (vidgen's own stages, and
    diffusers U-Nets that vidgen saved), else the diffusers config's frame table."""
    folder = Path(stage_folder)
    if (folder / "temporal.json").is_file():
        return int(read_json_object(folder / "temporal.json").get("max_frames", 64))
    config = read_json_object(folder / "config.json")
    if config.get("_class_name") == "UNetMotionModel":
        return int(config.get("motion_max_seq_length") or 32)
    if config.get("_class_name") == "UNet3DConditionModel":
        return UNBOUNDED_FRAMES
    raise VidgenError(f"{folder} is not a video U-Net folder: it has no temporal.json, and its config.json names "
                      f"neither {' nor '.join(VIDEO_UNETS)}")


def pipeline_index(folder: str | os.PathLike):
    """The ModelIndex of a diffusers video pipeline folder: its base stage in unet/, its own
    text encoder, noise drawn as diffusers draws it (one (b, c, f, h, w) randn, no frame
    correlation), the U-Net's native size and the pipeline's default guidance."""
    from ..model_index import GenerationDefaults, ModelIndex

    folder = Path(folder)
    name = pipeline_class(folder)
    missing = [sub for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (folder / sub).is_dir()]
    if missing:
        raise VidgenError(f"{folder} is a {name} folder without {', '.join(missing)}/: vidgen runs complete pipeline "
                          f"folders (unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    if unet_class(folder / "unet") is None:
        raise VidgenError(f"{folder / 'unet'} does not hold a {' or '.join(VIDEO_UNETS)} (its config.json names "
                          f"another class)")
    unet, vae = read_json_object(folder / "unet" / "config.json"), read_json_object(folder / "vae" / "config.json")
    factor = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
    size = unet.get("sample_size") or 32
    height, width = (size, size) if isinstance(size, int) else size
    frames = min(16, stage_max_frames(folder / "unet"))
    defaults = GenerationDefaults(num_frames=frames, height=height * factor, width=width * factor,
                                  guidance_scale=VIDEO_PIPELINES[name])
    return ModelIndex(stages={"base": "unet"}, defaults=defaults)
