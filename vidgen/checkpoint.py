"""Self-describing model folders and strict safetensors loading.

A vidgen video model is a folder that loads with one call (`VideoPipeline.from_pretrained`):

    vidgen.json     what the folder holds: its stages (in the order they run) and the
                    generation defaults (frames, fps, height, width, steps, guidance)
    unet/           the base stage, a VideoUNet: config.json (the image U-Net's diffusers
                    config), temporal.json (inflation options), model.safetensors (all weights)
    vae/            diffusers AutoencoderKL (save_pretrained)
    text_encoder/   transformers text model (save_pretrained)
    tokenizer/      its tokenizer (save_pretrained)
    scheduler/      diffusers scheduler config (DDIM by default)

Later stages (frame interpolation, super-resolution) are further VideoUNet folders named in
`vidgen.json`'s `stages`. A base stage that takes an anchor frame has the diffusers
UNet2DConditionModel that draws it in the folder `vidgen.json`'s `anchor.image_model` names, and
a model with an arrow critic (vidgen.models.critic) has it in the folder `critic` names.
Weights are safetensors only: nothing here unpickles. Loading is
strict: a file that does not match its model is refused with the keys that differ and why.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .config import load_config
from .errors import VidgenError
from .fs import atomic_path, write_text_atomic

INDEX_NAME = "vidgen.json"
FORMAT = "vidgen-video-model"
FORMAT_VERSION = 1
SHOWN_KEYS = 5  # keys listed per kind of mismatch


class CheckpointError(VidgenError):
    """A model folder or weights file is missing, unreadable or does not match its model."""


@dataclass
class GenerationDefaults:
    """What `vidgen generate` uses where the command line does not say."""

    num_frames: int = 16
    fps: float = 8.0
    height: int = 256
    width: int = 256
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    # Strength of the arrow critic's guidance of the base stage (vidgen.models.critic), where the
    # model has a critic; 0: off.
    motion_guidance: float = 0.0
    # For models of a world that is symmetric in time (a clip played backwards is another clip of
    # it, as in the shapes world): the arrow critic reads the finished base-stage keyframes, and
    # a clip it reads as running against the prompt is played the other way. Off for others.
    arrow_check: bool = False
    # Base-stage clips drawn per prompt; where it is over 1 the arrow critic keeps the one it
    # reads as running the prompt's way most clearly (after the arrow check, where that is on).
    candidates: int = 1
    # What the critic keeps a candidate by: "arrow", the largest arrow logit d under the prompt
    # (after the arrow check, how clearly the clip runs the prompt's way); "swaps", the largest
    # log-probability of the prompt against its swapped captions (a critic trained with
    # model.critic_swap_slots, whose `swap_words` name the groups).
    choose_by: str = "arrow"
    # Precision of the U-Nets' matrix products while sampling (float32 weights kept): "off"
    # (float32), "bfloat16", "float16", or "auto": bfloat16 where the device computes it natively
    # (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX), float32 elsewhere
    # (vidgen.models.inflate.autocast_dtype).
    autocast: str = "off"


@dataclass
class InterpolationSettings:
    """How the frame interpolation stage runs (Make-A-Video section 3.3)."""

    factor: int = 3  # dense frames per keyframe: f keyframes at fps -> f * factor frames at fps * factor
    num_inference_steps: int = 20
    guidance_scale: float = 1.0  # 1: the conditional branch alone
    noise_correlation: float = 0.0  # frame noise prior it was trained with (vidgen.diffusion.noise)
    # Share of the schedule run, from the keyframes blended linearly over the frames between them
    # and noised to where it starts (SDEdit, Meng et al. 2022); 1 starts from noise alone.
    strength: float = 1.0


@dataclass
class SuperResolutionSettings:
    """How the super-resolution stage runs (Make-A-Video section 3.4)."""

    scale: int = 2  # output side / input side
    noise_level: int = 100  # noise augmentation of the low-resolution latents, in training timesteps
    num_inference_steps: int = 20
    guidance_scale: float = 1.0
    # Share of the schedule run, from the upsampled low-resolution latents noised to where it
    # starts (SDEdit, Meng et al. 2022); 1 starts from pure noise. Below 1 the layout and colors
    # come from the base stage and the network adds the detail, in fewer steps.
    strength: float = 1.0


@dataclass
class AnchorSettings:
    """The base stage's anchor frame (explicit image conditioning, vidgen.models.cascade): a
    text-to-image U-Net draws it from the prompt before the base stage makes the clip around it."""

    image_model: str = ""  # folder of that diffusers UNet2DConditionModel; "": the base stage takes no anchor
    position: float = 0.5  # where in the clip the anchor frame sits: 0 the first frame, 1 the last


@dataclass
class ModelIndex:
    """The contents of vidgen.json."""

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    vidgen_version: str = __version__
    stages: dict[str, str] = field(default_factory=lambda: {"base": "unet"})  # stage -> folder, in run order
    vae_chunk_size: int = 8  # frames per VAE encode/decode call
    # "" : the folder's own text_encoder/ and tokenizer/; "minilm": the packaged all-MiniLM-L6-v2,
    # checked against its pinned sha256 (vidgen.packaged), so a model need not ship a copy.
    text_encoder: str = ""
    text_max_length: int = 0  # tokens per prompt for a packaged text encoder (0: the tokenizer's own)
    frame_noise_correlation: float = 0.0  # the base stage's frame noise prior (vidgen.diffusion.noise)
    defaults: GenerationDefaults = field(default_factory=GenerationDefaults)
    interp: InterpolationSettings = field(default_factory=InterpolationSettings)  # used when stages has "interp"
    sr: SuperResolutionSettings = field(default_factory=SuperResolutionSettings)  # used when stages has "sr"
    anchor: AnchorSettings = field(default_factory=AnchorSettings)  # used when anchor.image_model is set
    critic: str = ""  # folder of the base stage's arrow critic (vidgen.models.critic); "": none


# --- JSON and safetensors files ----------------------------------------------------------------

def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write tensors to a safetensors file, atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=dict(metadata or {}))
    return Path(path)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); "
                              f"vidgen loads safetensors only") from None


def _shown(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def load_strict(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str | os.PathLike,
                only: Iterable[str] | None = None, assign: bool = False) -> None:
    """Load `tensors` into `module`, refusing any mismatch with the keys that differ.

    only: load just these keys of the module's state dict (and require exactly them in `tensors`).
    assign: take the tensors as the parameters (for a module built on the meta device).
    """
    expected = {k: v.shape for k, v in module.state_dict().items()}
    if only is not None:
        expected = {k: expected[k] for k in only}
    missing = expected.keys() - tensors.keys()
    unexpected = tensors.keys() - expected.keys()
    mismatched = [f"{k} (file {tuple(tensors[k].shape)}, model {tuple(expected[k])})"
                  for k in sorted(expected.keys() & tensors.keys()) if tensors[k].shape != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} keys the model has but the file lacks: {_shown(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} keys in the file the model does not have: {_shown(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} keys with a different shape: {_shown(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit the model: " + "; ".join(problems) + ". The weights were saved from a model "
            "with another configuration (other block widths, layers, max_frames or input channels): load them "
            "with the config files saved beside them, or inflate a matching image U-Net")
    module.load_state_dict(dict(tensors), strict=only is None, assign=assign)


# --- the model folder --------------------------------------------------------------------------

AUTOCAST_CHOICES = ("off", "auto", "bfloat16", "float16")


def check_autocast(value: str, source: str) -> None:
    if value not in AUTOCAST_CHOICES:
        raise VidgenError(f"{source}: autocast must be one of {', '.join(AUTOCAST_CHOICES)}, got {value!r}")


CHOOSE_BY_CHOICES = ("arrow", "swaps")


def check_choose_by(value: str, source: str) -> None:
    if value not in CHOOSE_BY_CHOICES:
        raise VidgenError(f"{source}: choose_by must be one of {', '.join(CHOOSE_BY_CHOICES)}, got {value!r}")


def check_model_index(index: ModelIndex, source: str) -> None:
    """Refuse sampling settings outside their range, naming the key, before anything runs on them."""
    check_autocast(index.defaults.autocast, f"{source}: defaults")
    check_choose_by(index.defaults.choose_by, f"{source}: defaults")
    ranges = {"frame_noise_correlation": (index.frame_noise_correlation, "[0, 1)"),
              "interp.noise_correlation": (index.interp.noise_correlation, "[0, 1)"),
              "interp.strength": (index.interp.strength, "(0, 1]"),
              "sr.strength": (index.sr.strength, "(0, 1]"),
              "anchor.position": (index.anchor.position, "[0, 1]")}
    inside = {"[0, 1)": lambda v: 0.0 <= v < 1.0, "(0, 1]": lambda v: 0.0 < v <= 1.0, "[0, 1]": lambda v: 0.0 <= v <= 1.0}
    for key, (value, interval) in ranges.items():
        if not inside[interval](value):
            raise CheckpointError(f"{source}: {key} must be in {interval}, got {value}")


def write_model_index(folder: str | os.PathLike, index: ModelIndex) -> Path:
    check_model_index(index, f"the model index ({INDEX_NAME})")  # folder may be a temporary one
    return write_json(Path(folder) / INDEX_NAME, dataclasses.asdict(index))


def read_model_index(folder: str | os.PathLike) -> ModelIndex:
    """Read `folder/vidgen.json`, refusing folders that are not vidgen models."""
    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        hint = ""
        if (Path(folder) / "model_index.json").is_file():
            hint = (" (it looks like a diffusers image model: make a video model of it with "
                    f"`vidgen inflate --image-model {folder} --out DIR`)")
        raise CheckpointError(f"{folder} is not a vidgen model folder: it has no {INDEX_NAME}{hint}")
    index = load_config(ModelIndex, path)
    if index.format != FORMAT or index.format_version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {index.format!r} version {index.format_version} is not one this vidgen "
                              f"{__version__} reads ({FORMAT!r} up to version {FORMAT_VERSION}); upgrade vidgen")
    check_model_index(index, str(path))
    return index


def load_diffusers(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None):
    """A diffusers model (`cls`: UNet2DConditionModel, AutoencoderKL, ...) from a folder in diffusers'
    layout, from safetensors weights only (never a pickled .bin); anything else is a CheckpointError
    that names the folder."""
    try:
        return cls.from_pretrained(folder, use_safetensors=True, torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load {cls.__name__} from {folder}: {exc} "
                              f"(vidgen needs diffusers folders with safetensors weights)") from None
