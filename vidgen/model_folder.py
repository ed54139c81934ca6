"""A model folder's components, loaded, assembled and saved: what the cascade samples with.

A vidgen video model is a folder that loads with one call (`VideoModel.from_pretrained`):

    vidgen.json     what the folder holds (vidgen.model_index): its stages in the order they
                    run, the settings each samples with, and the generation defaults
    unet/           the base stage, a VideoUNet: config.json (the image U-Net's diffusers
                    config), temporal.json (inflation options), model.safetensors (all weights)
    vae/            diffusers AutoencoderKL (save_pretrained)
    text_encoder/   transformers text model (save_pretrained), and tokenizer/ its tokenizer,
                    unless vidgen.json names a packaged encoder (vidgen.packaged)
    scheduler/      diffusers scheduler config (DDIM by default)

Later stages (frame interpolation, Make-A-Video section 3.3; super-resolution, section 3.4) are
further VideoUNet folders named in vidgen.json's `stages`. A stage folder may instead hold one of
diffusers' own video U-Nets (ModelScope / zeroscope, AnimateDiff; vidgen.interop), and a diffusers
text-to-video pipeline folder loads as it is, without a vidgen.json (docs/interop.md). A base stage that takes an anchor
frame has the diffusers UNet2DConditionModel that draws it in the folder `anchor.image_model`
names, and a model with an arrow critic (vidgen.models.critic) has it in the folder `critic`
names. A model may have a second base stage for image-to-video, made around its first frame (the
user's picture), in the folder `image_base` names. Weights are safetensors, loaded strictly
(vidgen.weights). Sampling is vidgen.pipeline's.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from . import __version__
from .diffusion.schedulers import DEFAULT as DEFAULT_SCHEDULER, load_scheduler
from .errors import VidgenError
from .fs import atomic_dir
from .interop.diffusers_video import load_stage
from .model_index import GenerationDefaults, ModelIndex, read_model_index, write_model_index
from .models.critic import ArrowCritic
from .models.inflate import VideoUNet, inflate_unet
from .models.vae import latent_factor
from .packaged import resolve_text_encoder
from .text import TextEncoder
from .weights import CheckpointError, load_diffusers

STAGES = ("base", "interp", "sr")  # the stages this version runs, in cascade order
IMAGE_MODEL_FOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # a diffusers text-to-image folder


class VideoModel:
    """The components of one model folder.

    stages: stage name -> VideoUNet, in run order, "base" first. index: the folder's vidgen.json
    contents (stage folders, VAE chunk size, sampling settings). image_unet: the text-to-image
    U-Net that draws the base stage's anchor frame, where the base stage takes one
    (index.anchor.image_model names its folder). critic: the arrow critic of the base stage's
    motion (index.critic names its folder), or None. image_base: the base stage image-to-video
    runs, made around its first frame (index.image_base names its folder), or None.
    """

    def __init__(self, stages: dict[str, VideoUNet], vae: AutoencoderKL, text_encoder: TextEncoder,
                 scheduler: SchedulerMixin, index: ModelIndex, image_unet: UNet2DConditionModel | None = None,
                 critic: ArrowCritic | None = None, image_base: VideoUNet | None = None):
        if list(stages) != list(index.stages):
            raise ValueError(f"stages {list(stages)} and index.stages {list(index.stages)} must name the same stages")
        if list(stages)[:1] != ["base"] or any(name not in STAGES for name in stages) or \
                list(stages) != sorted(stages, key=STAGES.index):
            raise CheckpointError(f"the model's stages are {list(stages)}, but vidgen {__version__} runs a 'base' "
                                  f"stage first and knows only {', '.join(STAGES)}: upgrade vidgen to run this model")
        for name, unet in stages.items():
            if unet.unet.config.cross_attention_dim != text_encoder.hidden_size:
                raise CheckpointError(
                    f"the {name} U-Net attends to {unet.unet.config.cross_attention_dim}-wide text embeddings but "
                    f"the text encoder makes {text_encoder.hidden_size}-wide ones: use the text encoder it was trained "
                    f"with")
        self.stages, self.vae, self.text_encoder = stages, vae, text_encoder
        self.scheduler, self.index = scheduler, index
        # Where the components run when they are offloaded to the CPU between calls (vidgen.memory);
        # None: where they are.
        self.execution_device: torch.device | None = None
        if hasattr(text_encoder, "image_size"):  # SDXL's size conditioning in training: the default size
            text_encoder.image_size = (index.defaults.height, index.defaults.width)
        self.image_unet: UNet2DConditionModel | None = None
        self.set_anchor(image_unet, index.anchor.position)
        self.critic: ArrowCritic | None = None
        self.set_critic(critic)
        self.image_base: VideoUNet | None = None
        self.set_image_base(image_base)
        for module in self.modules():
            module.eval()

    def modules(self) -> list[torch.nn.Module]:
        extra = [m for m in (self.image_unet, self.critic, self.image_base) if m is not None]
        return [*self.stages.values(), *extra, self.vae, self.text_encoder]

    # --- loading and saving --------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, scheduler: str = DEFAULT_SCHEDULER) -> "VideoModel":
        """Load a vidgen model folder. device: default CPU; dtype: default float32;
        scheduler: `ddim`, `dpm++`, ... or a diffusers scheduler class name (vidgen.diffusion.schedulers)."""
        folder, dtype = Path(folder), dtype or torch.float32
        index = read_model_index(folder)
        stages = {name: load_stage(folder / sub, dtype) for name, sub in index.stages.items()}  # vidgen's or diffusers'
        image_unet = None
        if index.anchor.image_model:
            image_unet = load_diffusers(UNet2DConditionModel, folder / index.anchor.image_model, dtype)
        critic = ArrowCritic.from_pretrained(folder / index.critic, dtype) if index.critic else None
        image_base = load_stage(folder / index.image_base, dtype) if index.image_base else None
        vae = load_diffusers(AutoencoderKL, folder / "vae", dtype)
        if index.text_encoder:
            text_encoder = TextEncoder.from_pretrained(resolve_text_encoder(index.text_encoder), dtype,
                                                       max_length=index.text_max_length or None)
        else:
            text_encoder = TextEncoder.from_pretrained(folder, dtype)
        model = cls(stages, vae, text_encoder, load_scheduler(scheduler, folder / "scheduler"), index, image_unet,
                    critic, image_base)
        return model.to(device or "cpu")

    @classmethod
    def from_image_model(cls, folder: str | os.PathLike, defaults: GenerationDefaults | None = None,
                         dtype: torch.dtype = torch.float32, **inflate_options) -> "VideoModel":
        """Inflate a diffusers text-to-image pipeline folder (unet/, vae/, text_encoder/, tokenizer/,
        scheduler/) into a video model whose base stage equals the image model frame by frame
        (Make-A-Video section 3.2).

        defaults: generation defaults to record; by default the image model's native size.
        dtype: the precision every component is loaded (and later saved) in.
        inflate_options: see `inflate_unet` (max_frames, attention_head_dim).
        """
        folder = Path(folder)
        missing = [sub for sub in IMAGE_MODEL_FOLDERS if not (folder / sub).is_dir()]
        if missing:
            raise CheckpointError(f"{folder} is not a diffusers text-to-image folder: it lacks {', '.join(missing)}/ "
                                  f"(expected unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
        unet = inflate_unet(load_diffusers(UNet2DConditionModel, folder / "unet", dtype), **inflate_options)
        vae = load_diffusers(AutoencoderKL, folder / "vae", dtype)
        if defaults is None:
            size = unet.unet.config.sample_size
            height, width = (size, size) if isinstance(size, int) else size
            k = latent_factor(vae)
            defaults = GenerationDefaults(num_frames=min(16, unet.options.max_frames),
                                          height=height * k, width=width * k)
        scheduler = load_scheduler(DEFAULT_SCHEDULER, folder / "scheduler")
        text_encoder = TextEncoder.from_pretrained(folder, dtype)
        return cls({"base": unet}, vae, text_encoder, scheduler, ModelIndex(defaults=defaults))

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the model folder (the layout above), replacing `folder` whole and atomically."""
        with atomic_dir(folder) as tmp:
            for name, unet in self.stages.items():
                unet.save_pretrained(tmp / self.index.stages[name])
            if self.image_unet is not None:
                self.image_unet.save_pretrained(tmp / self.index.anchor.image_model)
            if self.critic is not None:
                self.critic.save_pretrained(tmp / self.index.critic)
            if self.image_base is not None:
                self.image_base.save_pretrained(tmp / self.index.image_base)
            self.vae.save_pretrained(tmp / "vae")
            if not self.index.text_encoder:  # else a packaged encoder, named in vidgen.json
                self.text_encoder.save_pretrained(tmp)
            self.scheduler.save_pretrained(tmp / "scheduler")
            write_model_index(tmp, self.index)
        return Path(folder)

    def to(self, device: str | torch.device) -> "VideoModel":
        """Move every component to `device` (the dtype is chosen when loading)."""
        for module in self.modules():
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.execution_device or self.vae.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    # --- assembling ----------------------------------------------------------------------------

    def set_stage(self, name: str, unet: VideoUNet) -> None:
        """Put `unet` in as stage `name` (replacing one, or adding it in cascade order)."""
        if name not in STAGES:
            raise VidgenError(f"unknown stage {name!r}: the stages are {', '.join(STAGES)}")
        stages = {**self.stages, name: unet}
        self.stages = {n: stages[n] for n in STAGES if n in stages}
        folders = {**self.index.stages, name: self.index.stages.get(name, name)}
        self.index.stages = {n: folders[n] for n in STAGES if n in folders}

    def set_anchor(self, image_unet: UNet2DConditionModel | None, position: float = 0.5) -> None:
        """Make the base stage start from an anchor frame that `image_unet` draws at `position` of
        the clip (0 first, 1 last); None: no anchor. The base stage must take one (or not)."""
        base = self.stages["base"]
        anchored = base.options.extra_in_channels == base.unet.config.in_channels + 1
        if image_unet is None:
            if anchored:
                raise CheckpointError("the base stage takes an anchor frame, but the model has no text-to-image U-Net to "
                                      "draw it (anchor.image_model in vidgen.json names its folder)")
            self.image_unet, self.index.anchor.image_model = None, ""
            return
        if not anchored:
            raise CheckpointError(f"an anchor image model was given, but the base stage does not take an anchor frame "
                                  f"(it has {base.options.extra_in_channels} extra input channels, an anchored one "
                                  f"{base.unet.config.in_channels + 1}): train it with model.image_conditioning=true")
        if image_unet.config.cross_attention_dim != self.text_encoder.hidden_size:
            raise CheckpointError(f"the anchor image U-Net attends to {image_unet.config.cross_attention_dim}-wide text "
                                  f"embeddings but the text encoder makes {self.text_encoder.hidden_size}-wide ones")
        self.image_unet = image_unet.eval()
        self.index.anchor.image_model = self.index.anchor.image_model or "anchor"
        self.index.anchor.position = float(position)

    def set_image_base(self, unet: VideoUNet | None) -> None:
        """Run image-to-video with `unet`, a base stage trained around its first frame (an anchored
        one, anchor position 0), saved in the folder index.image_base names; None: with the base stage."""
        if unet is None:
            self.image_base, self.index.image_base, self.index.image_base_motion_noise = None, "", False
            return
        base = self.stages["base"]
        if unet.options.extra_in_channels != unet.unet.config.in_channels + 1:
            raise CheckpointError(f"the image-to-video base stage must read an anchor frame (an anchored base stage, "
                                  f"{unet.unet.config.in_channels + 1} extra input channels), this one has "
                                  f"{unet.options.extra_in_channels}: train it with model.image_conditioning=true "
                                  f"model.anchor_position=0")
        if unet.unet.config.in_channels != base.unet.config.in_channels or \
                unet.unet.config.cross_attention_dim != self.text_encoder.hidden_size:
            raise CheckpointError("the image-to-video base stage makes other latents or reads other text than this "
                                  "model's base stage: train it from this model")
        self.image_base = unet.eval()
        self.index.image_base = self.index.image_base or "image_base"

    def set_critic(self, critic: ArrowCritic | None) -> None:
        """Guide and check the base stage with `critic` (None: no critic), saved in the folder
        index.critic names; it takes this model's device and dtype."""
        if critic is None:
            self.critic, self.index.critic = None, ""
            return
        channels = self.stages["base"].unet.config.in_channels
        if critic.config.latent_channels != channels or critic.config.text_dim != self.text_encoder.hidden_size:
            raise CheckpointError(
                f"the arrow critic reads {critic.config.latent_channels}-channel latents and "
                f"{critic.config.text_dim}-wide text, but this model's base stage makes {channels}-channel latents and "
                f"its text encoder {self.text_encoder.hidden_size}-wide text: train the critic on this model")
        self.critic = critic.to(self.vae.device, self.vae.dtype).eval().requires_grad_(False)
        self.index.critic = self.index.critic or "critic"
