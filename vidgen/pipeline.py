"""The cascade: prompt -> frames (Make-A-Video, section 3 and eq. 1), stage by stage.

    pipe = VideoPipeline.from_pretrained("my-video-model")
    frames = pipe("a red circle moving left", num_frames=16, seed=0)   # uint8 (b, f, h, w, 3)

A model folder (vidgen.checkpoint) names its stages in run order. Each stage is a video U-Net
sampled with the same guided loop (vidgen.diffusion.sampler). The base stage makes keyframe
latents from noise, around an anchor frame drawn first by a text-to-image U-Net where the
model has one (vidgen.models.cascade.anchored_unet); the frame interpolation and
super-resolution stages refine the previous stage's latents in the same loop, behind the same `__call__`.
Where the model has an arrow critic (vidgen.models.critic), its gradient steers the base stage's
motion toward the way the prompt names (`motion_guidance`); for a world symmetric in time it can
instead read the finished keyframes and play backwards a clip that runs against the prompt
(`arrow_check`). After each call `last_timings` holds the seconds each part took (text, anchor,
base, arrow_check, interp, sr, decode), for benchmarks, and `last_reversed` which clips the arrow
check played backwards.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from . import __version__
from .checkpoint import (CheckpointError, GenerationDefaults, ModelIndex, check_autocast, check_choose_by,
                         load_diffusers, read_model_index, write_model_index)
from .diffusion.noise import frame_noise
from .diffusion.sampler import sample
from .diffusion.schedulers import DEFAULT as DEFAULT_SCHEDULER, load_scheduler
from .errors import VidgenError
from .fs import atomic_dir
from .models import cascade
from .models.critic import ArrowCritic, swaps
from .models.inflate import VideoUNet, autocast, autocast_dtype, inflate_unet
from .models.temporal import check_num_frames
from .models.vae import decode_latents, latent_factor
from .packaged import resolve_text_encoder
from .text import TextEncoder
from .video_io import to_uint8_frames

STAGES = ("base", "interp", "sr")  # the stages this version runs, in cascade order
OUTPUT_TYPES = ("np", "pt")
IMAGE_MODEL_FOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # a diffusers text-to-image folder


def _as_list(prompt: str | Sequence[str]) -> list[str]:
    return [prompt] if isinstance(prompt, str) else list(prompt)


class VideoPipeline:
    """Text-to-video generation with the stages of one model folder.

    stages: stage name -> VideoUNet, in run order, "base" first. index: the folder's vidgen.json
    contents (stage folders, VAE chunk size, generation defaults). image_unet: the text-to-image
    U-Net that draws the base stage's anchor frame, where the base stage takes one
    (index.anchor.image_model names its folder). critic: the arrow critic that guides the base
    stage's motion (index.critic names its folder), or None.
    """

    def __init__(self, stages: dict[str, VideoUNet], vae: AutoencoderKL, text_encoder: TextEncoder,
                 scheduler: SchedulerMixin, index: ModelIndex, image_unet: UNet2DConditionModel | None = None,
                 critic: ArrowCritic | None = None):
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
        self.image_unet: UNet2DConditionModel | None = None
        self.set_anchor(image_unet, index.anchor.position)
        self.critic: ArrowCritic | None = None
        self.set_critic(critic)
        # The U-Nets' matrix-product precision in the running call, from its `autocast` setting (`predict`).
        self.autocast_dtype: torch.dtype | None = None
        self.last_timings: dict[str, float] = {}  # seconds per part of the last call
        self.last_reversed: list[bool] = []  # per clip of the last call: played backwards by the arrow check
        for module in self._modules():
            module.eval()

    def _modules(self) -> list[torch.nn.Module]:
        return [*self.stages.values(), *([self.image_unet] if self.image_unet is not None else []),
                *([self.critic] if self.critic is not None else []), self.vae, self.text_encoder]

    # --- loading and saving --------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, scheduler: str = DEFAULT_SCHEDULER) -> "VideoPipeline":
        """Load a vidgen model folder. device: default CPU; dtype: default float32;
        scheduler: `ddim`, `dpm++`, ... or a diffusers scheduler class name (vidgen.diffusion.schedulers)."""
        folder, dtype = Path(folder), dtype or torch.float32
        index = read_model_index(folder)
        stages = {name: VideoUNet.from_pretrained(folder / sub, dtype) for name, sub in index.stages.items()}
        image_unet = None
        if index.anchor.image_model:
            image_unet = load_diffusers(UNet2DConditionModel, folder / index.anchor.image_model, dtype)
        critic = ArrowCritic.from_pretrained(folder / index.critic, dtype) if index.critic else None
        vae = load_diffusers(AutoencoderKL, folder / "vae", dtype)
        if index.text_encoder:
            text_encoder = TextEncoder.from_pretrained(resolve_text_encoder(index.text_encoder), dtype,
                                                       max_length=index.text_max_length or None)
        else:
            text_encoder = TextEncoder.from_pretrained(folder, dtype)
        pipe = cls(stages, vae, text_encoder, load_scheduler(scheduler, folder / "scheduler"), index, image_unet,
                   critic)
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
        """Write the model folder (layout in vidgen.checkpoint), replacing `folder` whole and atomically."""
        with atomic_dir(folder) as tmp:
            for name, unet in self.stages.items():
                unet.save_pretrained(tmp / self.index.stages[name])
            if self.image_unet is not None:
                self.image_unet.save_pretrained(tmp / self.index.anchor.image_model)
            if self.critic is not None:
                self.critic.save_pretrained(tmp / self.index.critic)
            self.vae.save_pretrained(tmp / "vae")
            if not self.index.text_encoder:  # else a packaged encoder, named in vidgen.json
                self.text_encoder.save_pretrained(tmp)
            self.scheduler.save_pretrained(tmp / "scheduler")
            write_model_index(tmp, self.index)
        return Path(folder)

    def to(self, device: str | torch.device) -> "VideoPipeline":
        """Move every model to `device` (the dtype is chosen when loading)."""
        for module in self._modules():
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
        if not math.isfinite(s.motion_guidance) or s.motion_guidance < 0:
            raise VidgenError(f"motion guidance must be 0 (off) or positive, got {s.motion_guidance}")
        if s.motion_guidance and self.critic is None:
            raise VidgenError(f"motion guidance {s.motion_guidance} needs an arrow critic, and this model has none: "
                              f"train one with `vidgen train configs/shapes/critic.yaml model.pretrained=MODEL ...`, "
                              f"or leave motion guidance at 0")
        if s.arrow_check and self.critic is None:
            raise VidgenError("the arrow check needs an arrow critic, and this model has none: train one with "
                              "`vidgen train configs/shapes/critic.yaml model.pretrained=MODEL ...`, or turn it off")
        if s.candidates < 1 or (s.candidates > 1 and self.critic is None):
            raise VidgenError(f"candidates must be 1, or more for a model with an arrow critic (which chooses among "
                              f"them), got {s.candidates}" + ("" if self.critic else " and this model has no critic"))
        check_autocast(s.autocast, "autocast")
        check_choose_by(s.choose_by, "choose_by")
        if s.choose_by == "swaps" and not (self.critic is not None and self.critic.config.swap_words):
            which = "has no critic" if self.critic is None else "critic learned no swaps (its swap_words are empty)"
            raise VidgenError(f"choose_by 'swaps' needs an arrow critic trained on swapped captions, and this model "
                              f"{which}: train one with `vidgen train configs/shapes/critic.yaml "
                              f"model.critic_swap_slots=[direction] ...`, or choose by 'arrow'")
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
        if "interp" in self.stages:
            dense = num_frames * self.index.interp.factor
            if dense > self.stages["interp"].options.max_frames:
                raise VidgenError(f"{num_frames} keyframes make {dense} frames after {self.index.interp.factor}x frame "
                                  f"interpolation, more than the {self.stages['interp'].options.max_frames} the "
                                  f"interpolation stage takes: ask for at most "
                                  f"{self.stages['interp'].options.max_frames // self.index.interp.factor} frames")
        if not fps > 0:
            raise VidgenError(f"fps must be positive, got {fps}")

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

    def set_critic(self, critic: ArrowCritic | None) -> None:
        """Guide the base stage with `critic` (None: no critic), saved in the folder index.critic names."""
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

    def set_stage(self, name: str, unet: VideoUNet) -> None:
        """Put `unet` in as stage `name` (replacing one, or adding it in cascade order)."""
        if name not in STAGES:
            raise VidgenError(f"unknown stage {name!r}: the stages are {', '.join(STAGES)}")
        stages = {**self.stages, name: unet}
        self.stages = {n: stages[n] for n in STAGES if n in stages}
        folders = {**self.index.stages, name: self.index.stages.get(name, name)}
        self.index.stages = {n: folders[n] for n in STAGES if n in folders}

    def output_size(self, settings: GenerationDefaults, stages: Sequence[str] | None = None) -> tuple[int, int, int, float]:
        """(frames, height, width, fps) of the clip the given stages (default: all) make."""
        run = self.stages if stages is None else stages
        frames, height, width, fps = settings.num_frames, settings.height, settings.width, settings.fps
        if "interp" in run:
            frames, fps = frames * self.index.interp.factor, fps * self.index.interp.factor
        if "sr" in run:
            height, width = height * self.index.sr.scale, width * self.index.sr.scale
        return frames, height, width, fps

    def output_fps(self) -> float:
        return self.output_size(self.index.defaults)[3]

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
        motion_guidance: float | None = None,
        arrow_check: bool | None = None,
        candidates: int | None = None,
        choose_by: str | None = None,
        autocast: str | None = None,
        eta: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        progress: bool = True,
        stages: Sequence[str] | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Generate one clip per prompt.

        Unset sizes and settings come from the model folder's defaults. negative_prompt takes the
        place of the empty prompt in the unconditional branch of guidance. motion_guidance: the
        strength of the arrow critic's guidance of the base stage (0: off; needs a model with a
        critic). arrow_check: play backwards the base-stage clips the critic reads as running
        against their prompt (only for models of a world symmetric in time; `last_reversed` says
        which were). candidates: base-stage clips drawn per prompt, of which the arrow critic keeps
        the one it reads as running the prompt's way most clearly. choose_by: what it keeps one
        by, "arrow" (the arrow logit) or "swaps" (the prompt against its swapped captions, for a
        critic trained on them). autocast: the precision of the
        U-Nets' matrix products, "off" (float32), "bfloat16", "float16" or "auto" (bfloat16 where
        the device computes it natively; the attribute `autocast_dtype` says what ran). seed (or a CPU
        `generator`) fixes the initial noise, so a seed gives the same clip on any device.
        num_frames, height, width and fps describe the base stage's keyframes; frame interpolation
        and super-resolution, where the model has them, multiply them (`output_size`).
        stages: the stages to run, the base one first (default: all the model has).
        Returns uint8 frames (b, f, h, w, 3) for output_type "np", or float (b, 3, f, h, w) in
        [-1, 1] on the CPU for "pt".
        """
        # 1. Settings: the call's, else the model's defaults; refuse what the model cannot take.
        s = self.settings(num_frames=num_frames, height=height, width=width, fps=fps,
                          num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          motion_guidance=motion_guidance, arrow_check=arrow_check, candidates=candidates,
                          choose_by=choose_by, autocast=autocast)
        self.autocast_dtype = autocast_dtype(s.autocast, self.device)
        if output_type not in OUTPUT_TYPES:
            raise VidgenError(f"output_type {output_type!r} is not one of {', '.join(OUTPUT_TYPES)}")
        run = list(self.stages) if stages is None else list(stages)
        if run[:1] != ["base"] or any(name not in self.stages for name in run):
            raise VidgenError(f"stages {run} must start with 'base' and name only this model's stages: "
                              f"{', '.join(self.stages)}")

        # 2. Text: prompts and the unconditional branch (negative prompts, else the null conditioning).
        self.last_timings, self.last_reversed = {}, []
        prompts = _as_list(prompt)
        with self._timed("text"):
            cond = self.encode_prompts(prompts)
            if negative_prompt is None:
                uncond = self.text_encoder.null(len(prompts))
            else:
                negatives = _as_list(negative_prompt)
                if len(negatives) not in (1, len(prompts)):
                    raise VidgenError(f"{len(negatives)} negative prompts for {len(prompts)} prompts: "
                                      f"give one, or one per prompt")
                uncond = self.encode_prompts(negatives).expand_as(cond)

        # Candidates: each prompt's clip is drawn `candidates` times (prompt-major), and after the
        # base stage the arrow critic keeps one (5c).
        n = s.candidates
        if n > 1:
            cond, uncond = cond.repeat_interleave(n, dim=0), uncond.repeat_interleave(n, dim=0)

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
        shape = (len(prompts) * n, self.vae.config.latent_channels, s.num_frames, s.height // k, s.width // k)
        latents = frame_noise(shape, generator, self.index.frame_noise_correlation).to(self.device)  # (b c f h w)

        # 4. Anchor frame, where the base stage takes one: a text-to-image U-Net draws it, with the
        #    same guidance and steps (Emu Video's first step, section 3.1).
        anchor = None
        if self.image_unet is not None:
            index = cascade.anchor_index(s.num_frames, self.index.anchor.position)
            with self._timed("anchor"):
                anchor = self._draw_anchor(latents.shape, cond, uncond, s, eta, generator, progress)  # (b c h w)

        # 5. Base stage: noise -> keyframe latents (around the anchor frame, which every frame reads).
        base = self.stages["base"]

        def denoise(x, t, c):
            if anchor is not None:
                x = cascade.anchor_input(x, anchor.repeat(x.shape[0] // anchor.shape[0], 1, 1, 1), index)
            return self.predict(base, x, t, c, fps=s.fps)

        guide = self._arrow_guide(cond, s.motion_guidance) if s.motion_guidance else None
        with self._timed("base"):
            latents = sample(denoise, self.scheduler, latents, cond, uncond, guidance_scale=s.guidance_scale,
                             num_inference_steps=s.num_inference_steps, eta=eta, generator=generator,
                             progress=progress, desc="base stage", guide=guide)
        fps = s.fps

        # 5b. Arrow check: in a world symmetric in time the critic's reading of the finished
        #     keyframes (t = 0, where it is surest) decides which way each clip is played.
        self.last_reversed = [False] * len(prompts)
        if s.arrow_check or n > 1:
            with self._timed("arrow_check"):
                reversed_ = [False] * len(cond)
                if s.arrow_check:
                    latents, reversed_ = self._arrow_check(latents, cond)
                # 5c. Of each prompt's candidates, the one the critic reads as running its way most
                #     clearly: in the shapes world the clips that move far and straight along the
                #     asked axis, as one object.
                if n > 1:
                    logits = self._candidate_scores(latents, cond, prompts, n, s.choose_by)  # (prompts n)
                    best = logits.argmax(dim=1) + n * torch.arange(len(prompts), device=logits.device)  # (b,)
                    latents, cond, uncond = latents[best], cond[::n], uncond[::n]
                    reversed_ = [reversed_[i] for i in best.tolist()]
                self.last_reversed = reversed_

        # 6. Frame interpolation: keyframes every `factor` frames, the frames between (and after the
        #    last keyframe) sampled by masked frame interpolation (Make-A-Video section 3.3).
        if "interp" in run:
            with self._timed("interp"):
                latents, fps = self._interpolate(latents, fps, cond, uncond, eta, generator, progress)

        # 7. Super-resolution: the latents, upsampled and noise-augmented, condition a sampler at the
        #    larger size; one noise image shared by every frame keeps the detail steady (section 3.4).
        if "sr" in run:
            with self._timed("sr"):
                latents = self._super_resolve(latents, fps, cond, uncond, eta, generator, progress)

        # 8. Latents -> frames, a chunk of frames at a time.
        with self._timed("decode"):
            video = decode_latents(self.vae, latents, self.index.vae_chunk_size).float().cpu()  # (b c f h w)
        if output_type == "pt":
            return video
        return np.stack([to_uint8_frames(clip) for clip in video])  # (b f h w 3)

    @contextmanager
    def _timed(self, part: str):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.last_timings[part] = time.perf_counter() - started

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """The prompts as this model's U-Nets read them: (b, n, d) token embeddings."""
        return self.text_encoder.encode(prompts)

    def predict(self, unet: Callable[..., torch.Tensor], x: torch.Tensor, t, cond: torch.Tensor,
                **kwargs) -> torch.Tensor:
        """One U-Net call of a sampling step: inputs in the model's dtype, under autocast where
        `autocast_dtype` is set, and the prediction back in float32 for the scheduler's update."""
        with autocast(self.device, self.autocast_dtype):
            return unet(x.to(self.dtype), t, cond, **kwargs).float()

    def _arrow_guide(self, cond: torch.Tensor, scale: float):
        """guide(x_t, t) for the sampler: scale x the gradient of log sigmoid(d(x_t, t, prompt)), the
        arrow critic's log-probability that the clip runs forward under the prompt."""
        with torch.inference_mode(False):  # sampling runs under inference mode; the gradient needs ordinary tensors
            tokens = cond.clone().to(self.dtype)

        def guide(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(False), torch.enable_grad():
                x = x.clone().to(self.dtype).requires_grad_()
                logits = self.critic(x, t.clone().reshape(1), tokens)
                gradient, = torch.autograd.grad(torch.nn.functional.logsigmoid(logits.float()).sum(), x)
            return scale * gradient.float()

        return guide

    def _arrow_logits(self, latents: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(b,) float32: the arrow critic's logit d for finished latents (b c f h w), read at t = 0."""
        tokens = cond.to(self.dtype)
        zero = torch.zeros(1, dtype=torch.long, device=latents.device)
        return self.critic(latents.to(self.dtype), zero, tokens).float()

    def _candidate_scores(self, latents: torch.Tensor, cond: torch.Tensor, prompts: list[str], n: int,
                          choose_by: str = "arrow") -> torch.Tensor:
        """(len(prompts), n) float32, larger for the candidate to keep: the arrow logit d, or, by
        "swaps", where the critic learned swaps of a word the prompt holds (`CriticConfig.swap_words`),
        the log-probability of the prompt against its swaps (e.g. "left" against "right", "up",
        "down"), the arrow logit for a prompt without such a word."""
        scores = self._arrow_logits(latents, cond).view(len(prompts), n)
        groups = self.critic.config.swap_words if choose_by == "swaps" else {}
        tokens = cond.to(self.dtype)
        zero = torch.zeros(1, dtype=torch.long, device=latents.device)
        for i, prompt in enumerate(prompts):
            alternatives = swaps(prompt, groups) if groups else []
            if alternatives:
                rows = slice(i * n, (i + 1) * n)
                swapped = self.encode_prompts(alternatives).to(tokens)  # (k n d)
                _, read = self.critic(latents[rows].to(self.dtype), zero, tokens[rows],
                                      swapped.expand(n, *swapped.shape))  # (n 1+k)
                scores[i] = torch.log_softmax(read.float(), dim=1)[:, 0]
        return scores

    def _arrow_check(self, latents: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, list[bool]]:
        """The keyframe latents (b c f h w), each clip whose arrow-critic logit under its prompt is
        negative played backwards (d(reverse x) = -d(x), so every clip then reads as forward), and
        which clips were."""
        backward = self._arrow_logits(latents, cond) < 0  # (b,)
        latents = torch.where(backward[:, None, None, None, None], latents.flip(2), latents)
        return latents, backward.tolist()

    def _draw_anchor(self, shape, cond, uncond, settings, eta, generator, progress) -> torch.Tensor:
        """(b c h w) latents of one frame per prompt, from the anchor image U-Net; its noise is
        drawn after the clip's, so models without an anchor give the same clips for a seed."""
        b, c, _, h, w = shape
        noise = torch.randn((b, c, h, w), generator=generator).to(self.device)

        def denoise(x, t, text):
            return self.predict(lambda *inputs: self.image_unet(*inputs).sample, x, t, text)

        return sample(denoise, self.scheduler, noise, cond, uncond, guidance_scale=settings.guidance_scale,
                      num_inference_steps=settings.num_inference_steps, eta=eta, generator=generator,
                      progress=progress, desc="anchor frame")

    def _interpolate(self, keyframes, fps, cond, uncond, eta, generator, progress):
        """(b c f h w) keyframes at fps -> (b c f*k h w) latents at fps*k."""
        settings, unet = self.index.interp, self.stages["interp"]
        known, mask = cascade.spread_keyframes(keyframes, settings.factor)  # (b c F h w), (b 1 F h w)
        dense_fps = fps * settings.factor
        skip = torch.full((keyframes.shape[0],), float(settings.factor), device=self.device)

        def denoise(x, t, c):
            repeats = x.shape[0] // known.shape[0]  # 2 when both guidance branches run
            inputs = cascade.interpolation_input(x, known.repeat(repeats, 1, 1, 1, 1), mask.repeat(repeats, 1, 1, 1, 1))
            return self.predict(unet, inputs, t, c, fps=dense_fps,
                                conditions={cascade.INTERP_CONDITION: skip.repeat(repeats)})

        noise = frame_noise(known.shape, generator, settings.noise_correlation).to(self.device)
        start = cascade.blend_keyframes(keyframes, settings.factor) if settings.strength < 1 else None  # (b c F h w)
        dense = sample(denoise, self.scheduler, noise, cond, uncond, guidance_scale=settings.guidance_scale,
                       num_inference_steps=settings.num_inference_steps, eta=eta, generator=generator,
                       progress=progress, desc="interp stage", start=start, strength=settings.strength,
                       known=(known, mask))
        return mask * known + (1 - mask) * dense, dense_fps  # the keyframes stay as the base stage made them

    def _super_resolve(self, low, fps, cond, uncond, eta, generator, progress):
        """(b c f h w) -> (b c f h*s w*s) latents."""
        settings, unet = self.index.sr, self.stages["sr"]
        b, c, f, h, w = low.shape
        levels = torch.full((b,), settings.noise_level, dtype=torch.long)
        augmentation = torch.randn(low.shape, generator=generator).to(self.device)
        start = cascade.upsample_latents(low, settings.scale) if settings.strength < 1 else None  # (b c f H W)
        low = self.scheduler.add_noise(low, augmentation, levels.to(self.device))
        low_up = cascade.upsample_latents(low, settings.scale)  # (b c f H W)

        def denoise(x, t, cond_batch):
            repeats = x.shape[0] // b
            inputs = cascade.super_resolution_input(x, low_up.repeat(repeats, 1, 1, 1, 1))
            return self.predict(unet, inputs, t, cond_batch, fps=fps,
                                conditions={cascade.SR_CONDITION: levels.to(self.device).repeat(repeats)})

        noise = torch.randn((b, c, 1, h * settings.scale, w * settings.scale), generator=generator)
        noise = noise.expand(-1, -1, f, -1, -1).contiguous().to(self.device)  # (b c f H W), the same for every frame
        return sample(denoise, self.scheduler, noise, cond, uncond, guidance_scale=settings.guidance_scale,
                      num_inference_steps=settings.num_inference_steps, eta=eta, generator=generator,
                      progress=progress, desc="sr stage", start=start, strength=settings.strength)
