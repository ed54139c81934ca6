"""vidgen.json: what a model folder holds and how it samples, as typed dataclasses.

`ModelIndex` names the folder's stages in run order (Make-A-Video section 3: the base stage,
frame interpolation 3.3, super-resolution 3.4), the anchor image model, the arrow critic and
the image-to-video base stage where the model has them, and the settings each stage samples
with; `GenerationDefaults` are what `vidgen generate` uses where the command line does not say.
The index is read and written here, every value checked on the way in and out;
vidgen.model_folder loads the weights it names.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .config import load_config
from .errors import VidgenError
from .weights import CheckpointError, write_json

INDEX_NAME = "vidgen.json"
FORMAT = "vidgen-video-model"
FORMAT_VERSION = 1


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
    # Where candidates > 1: the critic chooses after this many base-stage steps, reading the clean
    # clips those steps predict, and only the kept candidate is finished (0, or as many steps as
    # the call runs or more: after the last step).
    choose_at_step: int = 0
    # Where the base stage is given frames (a picture to animate, a clip to extend, the last
    # window of a long clip): the weight w_r of reconstruction guidance (Ho et al. 2022, "Video
    # Diffusion Models", eq. 7), which steers the frames drawn toward agreeing with the given ones
    # at one backward pass of the network per step; 0: replacement alone.
    reconstruction_guidance: float = 0.0
    # Precision of the U-Nets' matrix products while sampling (float32 weights kept): "off"
    # (float32), "bfloat16", "float16", or "auto": bfloat16 where the device computes it natively
    # (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX), float32 elsewhere
    # (vidgen.precision.autocast_dtype).
    autocast: str = "off"
    # Where the model has motion words (ModelIndex.motion_words): the shared part of the base
    # stage's noise moves as the prompt's motion words say (vidgen.diffusion.flow_noise).
    motion_noise: bool = False
    # Classifier-free guidance of the base stage starts at this step (0: at every step); the steps
    # before it call the network once, on the prompt alone. Guidance at the highest noise levels
    # buys little (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval"), and with
    # moving noise the direction is the noise's, so those steps need not pay for two calls.
    guidance_from_step: int = 0
    # A clip continued (extend, --seconds): where below 1, each window's new keyframes start from
    # the last known one moved on at the clip's measured velocity, noised to this share of the
    # schedule (SDEdit, Meng et al. 2022), so the object goes on as it went; 1: from noise alone.
    continue_strength: float = 1.0
    # Where motion noise is on: at the base stage's first K steps the clean clip each step predicts
    # is replaced by the nearest clip of one picture moving as the motion words say
    # (vidgen.diffusion.motion_projection); 0: off. With still noise (motion_noise off) it does not run.
    motion_projection: int = 0


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
    # Folder of a second base stage, trained with each clip's first frame as its anchor
    # (model.image_conditioning, anchor_position 0), that image-to-video runs with the user's
    # picture as that anchor (vidgen.media.conditioning); "": image-to-video steers the base stage.
    image_base: str = ""
    # The image base was trained on moving noise (model.flow_noise), so a picture's clip gets noise
    # moving as its prompt's motion words say, as text-to-video does; False: still noise.
    image_base_motion_noise: bool = False
    # Word -> velocity (sides of the frame per second; rows, columns) of the clips captioned with it,
    # measured on the training corpus (vidgen.diffusion.flow_noise.motion_words); with
    # defaults.motion_noise the base stage's shared noise (frame_noise_correlation) moves that way.
    motion_words: dict[str, list[float]] = field(default_factory=dict)


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
    for word, velocity in index.motion_words.items():
        if len(velocity) != 2 or not all(isinstance(v, (int, float)) for v in velocity):
            raise CheckpointError(f"{source}: motion_words[{word!r}] must be two numbers (rows, columns per second), "
                                  f"got {velocity!r}")


def write_model_index(folder: str | os.PathLike, index: ModelIndex) -> Path:
    check_model_index(index, f"the model index ({INDEX_NAME})")  # folder may be a temporary one
    return write_json(Path(folder) / INDEX_NAME, dataclasses.asdict(index))


def read_model_index(folder: str | os.PathLike) -> ModelIndex:
    """Read `folder/vidgen.json`, refusing folders that are not vidgen models."""
    path = Path(folder) / INDEX_NAME
    from .interop.folders import is_video_pipeline_folder, pipeline_index

    if not path.is_file() and is_video_pipeline_folder(folder):  # diffusers' text-to-video layout, run as it is
        return pipeline_index(folder)
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
