"""The cascade: prompt -> frames (Make-A-Video, section 3 and eq. 1), stage by stage.

    pipe = VideoPipeline.from_pretrained("my-video-model")
    frames = pipe("a red circle moving left", num_frames=16, seed=0)   # uint8 (b, f, h, w, 3)

A model folder (vidgen.checkpoint) names its stages in run order. Each stage is a video U-Net
sampled with the same guided loop (vidgen.diffusion.sampler). The base stage makes keyframe
latents from noise; the frame interpolation and super-resolution stages of the paper will
refine the previous stage's latents in the same loop, behind the same `__call__`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from . import __version__
from .checkpoint import CheckpointError, GenerationDefaults, ModelIndex, read_model_index, write_model_index
from .diffusion.sampler import sample
from .diffusion.schedulers import DEFAULT as DEFAULT_SCHEDULER, load_scheduler
from .errors import VidgenError
from .fs import atomic_dir
from .models.inflate import VideoUNet, inflate_unet
from .models.temporal import check_num_frames
from .models.vae import decode_latents, latent_factor
from .text import TextEncoder
from .video_io import to_uint8_frames

STAGES = ("base",)  # the stages this version runs, in cascade order
OUTPUT_TYPES = ("np", "pt")
IMAGE_MODEL_FOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # a diffusers text-to-image folder


def _load_diffusers(cls, folder: Path, dtype: torch.dtype | None = None):
    try:
        return cls.from_pretrained(folder, use_safetensors=True, torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load {cls.__name__} from {folder}: {exc} "
                              f"(vidgen needs diffusers folders with safetensors weights)") from None


def _as_list(prompt: str | Sequence[str]) -> list[str]:
    return [prompt] if isinstance(prompt, str) else list(prompt)


class VideoPipeline:
    """Text-to-video generation with the stages of one model folder.

    stages: stage name -> VideoUNet, in run order (only "base" for now). index: the folder's
    vidgen.json contents (stage folders, VAE chunk size, generation defaults).
    """

    def __init__(self, stages: dict[str, VideoUNet], vae: AutoencoderKL, text_encoder: TextEncoder,
                 scheduler: SchedulerMixin, index: ModelIndex):
        if list(stages) != list(index.stages):
            raise ValueError(f"stages {list(stages)} and index.stages {list(index.stages)} must name the same stages")
        if list(stages)[:1] != ["base"] or any(name not in STAGES for name in stages):
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
        for module in (*stages.values(), vae, text_encoder):
            module.eval()

    # --- loading and saving --------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, scheduler: str = DEFAULT_SCHEDULER) -> "VideoPipeline":
        """Load a vidgen model folder. device: default CPU; dtype: default float32;
        scheduler: `ddim`, `dpm++`, ... or a diffusers scheduler class name (vidgen.diffusion.schedulers)."""
        folder, dtype = Path(folder), dtype or torch.float32
        index = read_model_index(folder)
        stages = {name: VideoUNet.from_pretrained(folder / sub, dtype) for name, sub in index.stages.items()}
        vae = _load_diffusers(AutoencoderKL, folder / "vae", dtype)
        text_encoder = TextEncoder.from_pretrained(folder, dtype)
        pipe = cls(stages, vae, text_encoder, load_scheduler(scheduler, folder / "scheduler"), index)
        return pipe.to(device or "cpu")

    @classmethod
    def from_image_model(cls, folder: str | os.PathLike, defaults: GenerationDefaults | None = None,
                         dtype: torch.dtype = torch.float32, **inflate_options) -> "VideoPipeline":
        """Inflate a diffusers text-to-image pipeline folder (unet/, vae/, text_encoder/, tokenizer/,
        scheduler/) into a video pipeline whose base stage equals the image model frame by frame.

        defaults: generation defaults to record; by default the image model's native size.
        dtype: the precision every component is loaded (and later saved) in.
        inflate_options: see `inflate_unet` (max_frames, attention_head_dim).
        """
        folder = Path(folder)
        missing = [sub for sub in IMAGE_MODEL_FOLDERS if not (folder / sub).is_dir()]
        if missing:
            raise CheckpointError(f"{folder} is not a diffusers text-to-image folder: it lacks {', '.join(missing)}/ "
                                  f"(expected unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
        unet = inflate_unet(_load_diffusers(UNet2DConditionModel, folder / "unet", dtype), **inflate_options)
        vae = _load_diffusers(AutoencoderKL, folder / "vae", dtype)
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
        """Write the model folder (layout in vidgen.checkpoint), replacing `folder` whole and atomically."""
        with atomic_dir(folder) as tmp:
            for name, unet in self.stages.items():
                unet.save_pretrained(tmp / self.index.stages[name])
            self.vae.save_pretrained(tmp / "vae")
            self.text_encoder.save_pretrained(tmp)
            self.scheduler.save_pretrained(tmp / "scheduler")
            write_model_index(tmp, self.index)
        return Path(folder)

    def to(self, device: str | torch.device) -> "VideoPipeline":
        """Move every model to `device` (the dtype is chosen when loading)."""
        for module in (*self.stages.values(), self.vae, self.text_encoder):
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.vae.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    # --- generating ----------------------------------------------------------------------------

    def settings(self, **given) -> GenerationDefaults:
        """The model's generation defaults with the given (non-None) values in their place, checked."""
        s = dataclasses.replace(self.index.defaults, **{k: v for k, v in given.items() if v is not None})
        self.check_request(s.num_frames, s.height, s.width, s.fps)
        return s

    def check_request(self, num_frames: int, height: int, width: int, fps: float) -> None:
        """Refuse sizes the model cannot take, with the rule broken."""
        k = latent_factor(self.vae)
        for name, value in (("height", height), ("width", width)):
            if value <= 0 or value % k:
                nearest = max(k, round(value / k) * k)
                raise VidgenError(f"{name} {value} is not a positive multiple of {k}: this model's VAE turns each "
                                  f"{k}x{k} pixels into one latent; try {name} {nearest}")
        check_num_frames(num_frames, self.stages["base"].options.max_frames)
        if not fps > 0:
            raise VidgenError(f"fps must be positive, got {fps}")

    @torch.inference_mode()
    def __call__(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        fps: float | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        eta: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        progress: bool = True,
    ) -> np.ndarray | torch.Tensor:
        """Generate one clip per prompt.

        Unset sizes and settings come from the model folder's defaults. negative_prompt takes the
        place of the empty prompt in the unconditional branch of guidance. seed (or a CPU
        `generator`) fixes the initial noise, so a seed gives the same clip on any device.
        Returns uint8 frames (b, f, h, w, 3) for output_type "np", or float (b, 3, f, h, w) in
        [-1, 1] on the CPU for "pt".
        """
        # 1. Settings: the call's, else the model's defaults; refuse what the model cannot take.
        s = self.settings(num_frames=num_frames, height=height, width=width, fps=fps,
                          num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
        if output_type not in OUTPUT_TYPES:
            raise VidgenError(f"output_type {output_type!r} is not one of {', '.join(OUTPUT_TYPES)}")

        # 2. Text: prompts and the unconditional branch (negative prompts, else the null conditioning).
        prompts = _as_list(prompt)
        cond = self.text_encoder.encode(prompts)
        if negative_prompt is None:
            uncond = self.text_encoder.null(len(prompts))
        else:
            negatives = _as_list(negative_prompt)
            if len(negatives) not in (1, len(prompts)):
                raise VidgenError(f"{len(negatives)} negative prompts for {len(prompts)} prompts: "
                                  f"give one, or one per prompt")
            uncond = self.text_encoder.encode(negatives).expand_as(cond)

        # 3. Initial noise, drawn on the CPU so that a seed means the same clip on every device.
        if generator is not None and seed is not None:
            raise ValueError("give a seed or a generator, not both")
        if generator is None:
            generator = torch.Generator()
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
        k = latent_factor(self.vae)
        shape = (len(prompts), self.vae.config.latent_channels, s.num_frames, s.height // k, s.width // k)
        latents = torch.randn(shape, generator=generator).to(self.device)  # (b c f h w)

        # 4. Base stage: noise -> keyframe latents. (Frame interpolation and super-resolution, when a
        #    folder has them, will follow here, each refining the previous stage's latents.)
        base = self.stages["base"]

        def denoise(x, t, c):  # latents stay float32 for the scheduler; the model runs in its dtype
            return base(x.to(self.dtype), t, c, fps=s.fps).float()

        latents = sample(denoise, self.scheduler, latents, cond, uncond, guidance_scale=s.guidance_scale,
                         num_inference_steps=s.num_inference_steps, eta=eta, generator=generator, progress=progress,
                         desc="base stage")

        # 5. Latents -> frames, a chunk of frames at a time.
        video = decode_latents(self.vae, latents, self.index.vae_chunk_size).float().cpu()  # (b c f h w)
        if output_type == "pt":
            return video
        return np.stack([to_uint8_frames(clip) for clip in video])  # (b f h w 3)
