"""The cascade: prompt -> frames (Make-A-Video, section 3 and eq. 1), stage by stage.

    pipe = VideoPipeline.from_pretrained("my-video-model")
    out = pipe("a red circle moving left", num_frames=16, seed=0)
    out.frames                                   # uint8 (b, f, h, w, 3), played at out.fps

`pipe.model` holds the components of the model folder (vidgen.model_folder.VideoModel); this
module samples them. Each stage is a video U-Net sampled with the same guided loop
(vidgen.diffusion.sampler). The base stage makes keyframe latents from noise, around an anchor
frame drawn first by a text-to-image U-Net where the model has one (vidgen.models.cascade);
frame interpolation and super-resolution refine the previous stage's latents in the same loop.
Where the model has an arrow critic, it steers the base stage's motion, checks which way each
finished clip runs and keeps the best of several candidates (vidgen.models.critic_choice).
A call returns a `VideoOutput`: the frames, and what made them (settings, stages run, seconds
per part, the critic's decisions, the precision).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import base_noise
from .diffusion.motion_projection import onto_translation
from .diffusion.noise import frame_noise
from .diffusion.sampler import sample, steps_run
from .diffusion.schedulers import DEFAULT as DEFAULT_SCHEDULER
from .errors import VidgenError
from .media import conditioning, long_clips
from .media.inputs import own_anchor_refusal
from .media.api import MediaMethods
from .model_folder import VideoModel
from .model_index import GenerationDefaults
from .models import cascade, critic_choice
from .models.vae import decode_latents
from .precision import autocast, autocast_dtype, autocast_name
from .request import ModelFacts, check_settings, output_size
from .sampling_call import OUTPUT_TYPES, StepCallback, VideoOutput  # noqa: F401 (the public names, kept here too)
from .sampling_call import Call as _Call, as_list as _as_list, new_generator as _generator
from .video_io import to_uint8_frames

class VideoPipeline(MediaMethods):
    """Text-to-video generation with the stages of one model (`model`, a VideoModel); from a user's
    picture or clip too, and on a user's clip (`extend`, `interpolate`, `upscale`: vidgen.media)."""

    def __init__(self, model: VideoModel):
        self.model = model

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, scheduler: str = DEFAULT_SCHEDULER) -> "VideoPipeline":
        """A pipeline over `VideoModel.from_pretrained(folder, device, dtype, scheduler)`."""
        return cls(VideoModel.from_pretrained(folder, device, dtype, scheduler))

    @classmethod
    def from_image_model(cls, folder: str | os.PathLike, **options) -> "VideoPipeline":
        """A pipeline over `VideoModel.from_image_model(folder, **options)`: a diffusers
        text-to-image folder inflated into a video model."""
        return cls(VideoModel.from_image_model(folder, **options))

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        return self.model.save_pretrained(folder)

    def to(self, device: str | torch.device) -> "VideoPipeline":
        self.model.to(device)
        return self

    # --- what a call may ask for ---------------------------------------------------------------

    def settings(self, stages: Sequence[str] | None = None, **given) -> GenerationDefaults:
        """The model's generation defaults with the given (non-None) values in their place, checked
        for the given stages (default: all the model has) as the commands check them."""
        return self._checked(given, stages)[0]

    def _checked(self, given: dict, stages: Sequence[str] | None = None,
                 batch: int = 1) -> tuple[GenerationDefaults, list[str]]:
        """The settings and the stages to run, refused where the model cannot take them
        (vidgen.request.check_settings: the same rules the commands apply before loading)."""
        s = dataclasses.replace(self.model.index.defaults, **{k: v for k, v in given.items() if v is not None})
        return s, check_settings(ModelFacts.of_model(self.model), s, stages, batch)

    def output_size(self, settings: GenerationDefaults,
                    stages: Sequence[str] | None = None) -> tuple[int, int, int, float]:
        """(frames, height, width, fps) of the clip the given stages (default: all) make."""
        run = list(self.model.stages) if stages is None else stages
        return output_size(ModelFacts.of_model(self.model), settings, run)

    # --- generating ----------------------------------------------------------------------------

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
        choose_at_step: int | None = None,
        reconstruction_guidance: float | None = None,
        autocast: str | None = None,
        motion_noise: bool | None = None,
        guidance_from_step: int | None = None,
        continue_strength: float | None = None,
        motion_projection: int | None = None,
        eta: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        progress: bool = True,
        stages: Sequence[str] | None = None,
        callback: StepCallback | None = None,
        image=None,
        video=None,
        strength: float | None = None,
        seconds: float | None = None,
        latents: torch.Tensor | None = None,
    ) -> VideoOutput:
        """Generate one clip per prompt.

        Unset sizes and settings come from the model folder's defaults. negative_prompt takes the
        place of the empty prompt in the unconditional branch of guidance. motion_guidance: the
        strength of the arrow critic's guidance of the base stage (0: off; needs a model with a
        critic). arrow_check: play backwards the base-stage clips the critic reads as running
        against their prompt (only for models of a world symmetric in time). candidates:
        base-stage clips drawn per prompt, of which the arrow critic keeps the one it reads as
        running the prompt's way most clearly. choose_by: what it keeps one by, "arrow" (the
        arrow logit) or "swaps" (the prompt against its swapped captions, for a critic trained on
        them); choose_at_step: choose after that many base-stage steps, from the clips they predict,
        and finish only the kept one (0, or the number of steps or more: after the last step).
        reconstruction_guidance: its weight toward frames given to the base stage (image, seconds;
        0: replacement alone). autocast: the precision of the U-Nets' matrix products, "off" (float32),
        "bfloat16", "float16" or "auto" (bfloat16 where the device computes it natively). motion_noise:
        move the base stage's shared noise as the prompt's motion words say (a model with motion
        words; vidgen.diffusion.flow_noise). guidance_from_step: the base stage's first guided step
        (the ones before it call the network on the prompt alone; 0: every step guided).
        continue_strength: below 1, a long clip's later windows start from their known keyframes moved
        on at the clip's velocity, that share of the schedule redrawn (1: from noise).
        motion_projection: the base stage's first K steps hold their clean clip to one picture moving
        as the motion words say (vidgen.diffusion.motion_projection; 0: off). seed
        (or a CPU `generator`) fixes the initial noise, so a seed gives the same clip on any device.
        num_frames, height, width and fps describe the base stage's keyframes; frame interpolation
        and super-resolution, where the model has them, multiply them (`output_size`).
        stages: the stages to run, the base one first (default: all the model has).
        callback(part, step, steps): called after every denoising step (StepCallback).
        image: a picture (path, PIL image or uint8 (h w 3)) the clip starts from; video: a clip (path
        or uint8 frames at `fps`) redrawn to the prompt, `strength` of it (0.6 by default;
        vidgen.media.conditioning). seconds: the clip's length where longer than one base-stage
        window (vidgen.media.long_clips; output_type "np" only).
        Returns a VideoOutput: uint8 frames (b, f, h, w, 3) for output_type "np", or float
        (b, 3, f, h, w) in [-1, 1] on the CPU for "pt", and what made them.
        """
        # 1. Settings: the call's, else the model's defaults; refuse what the model cannot take.
        prompts = _as_list(prompt)
        s, run = self._checked(dict(num_frames=num_frames, height=height, width=width, fps=fps,
                                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                    motion_guidance=motion_guidance, arrow_check=arrow_check, candidates=candidates,
                                    choose_by=choose_by, choose_at_step=choose_at_step,
                                    reconstruction_guidance=reconstruction_guidance, autocast=autocast,
                                    motion_noise=motion_noise, guidance_from_step=guidance_from_step,
                                    continue_strength=continue_strength, motion_projection=motion_projection), stages,
                                   batch=len(prompts))
        if output_type not in OUTPUT_TYPES or (seconds is not None and output_type != "np"):
            raise VidgenError(f"output_type {output_type!r} is not one of {', '.join(OUTPUT_TYPES)} (long clips: np)")
        s, given = conditioning.prepare(self, s, image, video, strength)  # the user's picture or clip, encoded
        if seconds is not None and not seconds > 0:
            raise VidgenError(f"seconds must be positive, got {seconds}")
        if seconds is not None and self.model.image_unet is not None:
            raise VidgenError(own_anchor_refusal(self.model.index.anchor.position, "a longer clip"))
        device = self.model.device
        call = _Call(s, eta, _generator(seed, generator), progress, autocast_dtype(s.autocast, device), device,
                     callback)

        # 2. Text: prompts and the unconditional branch (negative prompts, else the null conditioning).
        #    Each prompt's clip is drawn `candidates` times (prompt-major); after the base stage the
        #    arrow critic keeps one (5c).
        n = s.candidates
        with call.timed("text"):
            if hasattr(self.model.text_encoder, "image_size"):  # SDXL's size conditioning (vidgen.interop.sdxl)
                self.model.text_encoder.image_size = (s.height, s.width)
            cond, uncond = self._text(prompts, negative_prompt)  # (b n d) each
        if n > 1:
            cond, uncond = cond.repeat_interleave(n, dim=0), uncond.repeat_interleave(n, dim=0)  # (b*n n d)

        # 3. Initial noise, drawn on the CPU so that a seed means the same clip on every device.
        # (an image base stage, which a picture goes to, trained on still noise gets still noise)
        moving = given is None or given.anchor is None or self.model.image_base is None or \
            self.model.index.image_base_motion_noise
        rows = [p for p in prompts for _ in range(n)]
        drawn = self._initial_noise(call, len(cond), rows if moving else None)
        if latents is not None:
            if latents.shape != drawn.shape:
                raise VidgenError(f"latents of shape {tuple(latents.shape)} given where the base stage starts from "
                                  f"{tuple(drawn.shape)}: (prompts x candidates, channels, frames, height, width)")
            drawn = latents.to(device=device, dtype=drawn.dtype)
        latents = drawn

        early = None
        if n > 1 and 0 < s.choose_at_step < s.num_inference_steps:  # 5c part-way: only the kept ones are finished
            if self.model.image_unet is not None and given is None:  # (a picture's anchor is one for every row)
                raise VidgenError("choose_at_step is for base stages without an anchor frame: leave it at 0")
            early = critic_choice.EarlyChoice(self.model.critic, cond, prompts, n, s.choose_by, s.arrow_check,
                                              self.encode_prompts)
        options = {"prune": (s.choose_at_step, early)} if early else {}

        # 4. Anchor frame, where the base stage takes one: a text-to-image U-Net draws it, with the
        #    same guidance and steps (Emu Video's first step, section 3.1).
        anchor = None
        if self.model.image_unet is not None and given is None:
            with call.timed("anchor"):
                anchor = self._draw_anchor(call, latents.shape, cond, uncond)  # (b c h w)

        # 5. Base stage: noise -> keyframe latents (around the anchor frame, which every frame reads),
        #    steered by the arrow critic where motion guidance is on.
        with call.timed("base"):
            if s.motion_projection and moving and s.motion_noise:  # the early clean clips moved as the words say
                shifts = base_noise.keyframe_shifts(self.model, s, rows)  # (b f 2)
                options["clean_edit"] = (s.motion_projection, lambda x0: onto_translation(x0, shifts))
            latents = self._base_stage(call, latents, cond, uncond, anchor, given, **options)  # (b c f h w)
            latents = given.keep(latents) if given else latents
        kept, fps = [0] * len(prompts), s.fps  # per prompt: the candidate the critic kept
        if early is not None:
            cond, uncond, kept, n = cond[::n], uncond[::n], early.kept, 1

        def made(frames, fps) -> VideoOutput:
            return VideoOutput(frames=frames, fps=fps, settings=s, stages=run, timings=call.timings,
                               reversed=reversed_, kept_candidates=kept, autocast=autocast_name(call.precision))

        # 5b. Arrow check: in a world symmetric in time the critic's reading of the finished
        #     keyframes (t = 0, where it is surest) decides which way each clip is played.
        reversed_ = [False] * len(cond)
        if s.arrow_check or n > 1:
            with call.timed("arrow_check"):
                if s.arrow_check:
                    latents, reversed_ = critic_choice.arrow_check(self.model.critic, latents, cond)
                # 5c. Of each prompt's candidates, the one the critic reads as running its way most
                #     clearly: in the shapes world the clips that move far and straight along the
                #     asked axis, as one object.
                if n > 1:
                    scores = critic_choice.candidate_scores(self.model.critic, latents, cond, prompts, n,
                                                            s.choose_by, self.encode_prompts)  # (prompts n)
                    kept = scores.argmax(dim=1).tolist()
                    rows = [i * n + j for i, j in enumerate(kept)]
                    latents, cond, uncond = latents[rows], cond[::n], uncond[::n]  # (b c f h w), (b n d)
                    reversed_ = [reversed_[row] for row in rows]

        # 5d. A clip longer than one window: more keyframes, each window knowing the last's end, and
        #     the later stages a window at a time.
        if seconds is not None:
            frames_out, height, width, fps_out = self.output_size(s, run)
            frames_out = max(1, round(seconds * fps_out))
            per_keyframe = self.model.index.interp.factor if "interp" in run else 1
            with call.timed("base"):
                latents = long_clips.continue_keyframes(self, call, latents, cond, uncond,
                                                        -(-frames_out // per_keyframe))  # a row each
            frames, fps = long_clips.render(self, call, latents, cond, uncond, run, (height, width), frames_out)
            return made(frames, fps)

        # 6. Frame interpolation: keyframes every `factor` frames, the frames between (and after the
        #    last keyframe) sampled by masked frame interpolation (Make-A-Video section 3.3).
        if "interp" in run:
            with call.timed("interp"):
                latents, fps = self._interpolate(call, latents, fps, cond, uncond)  # (b c f*k h w)

        # 7. Super-resolution: the latents, upsampled and noise-augmented, condition a sampler at the
        #    larger size; one noise image shared by every frame keeps the detail steady (section 3.4).
        if "sr" in run:
            with call.timed("sr"):
                latents = self._super_resolve(call, latents, fps, cond, uncond)  # (b c f h*s w*s)

        # 8. Latents -> frames, a chunk of frames at a time.
        if output_type == "latent":
            return made(latents.float().cpu(), fps)
        with call.timed("decode"):
            video = decode_latents(self.model.vae, latents, self.model.index.vae_chunk_size)  # (b c f h w)
            video = video.float().cpu()
        frames = video if output_type == "pt" else np.stack([to_uint8_frames(clip) for clip in video])  # (b f h w 3)
        return made(frames, fps)

    # --- the steps -----------------------------------------------------------------------------

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """The prompts as this model's U-Nets read them: (b, n, d) token embeddings."""
        return self.model.text_encoder.encode(prompts)

    def predict(self, unet: Callable[..., torch.Tensor], x: torch.Tensor, t, cond: torch.Tensor,
                precision: torch.dtype | None = None, **kwargs) -> torch.Tensor:
        """One U-Net call of a sampling step: inputs in the model's dtype, under autocast in
        `precision` where given, and the prediction back in float32 for the scheduler's update."""
        with autocast(self.model.device, precision):
            return unet(x.to(self.model.dtype), t, cond, **kwargs).float()

    def _sample(self, call: _Call, denoise, noise: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
                guidance_scale: float, num_inference_steps: int, desc: str, **options) -> torch.Tensor:
        """The guided loop (vidgen.diffusion.sampler.sample) with this call's scheduler, eta, randomness
        and step callback (told `desc` and the steps this part runs)."""
        scheduler, on_step = self.model.scheduler, None
        if call.callback is not None:
            def on_step(i, t, latents):  # the scheduler's timesteps are set by now
                call.callback(desc, i + 1, steps_run(len(scheduler.timesteps), options.get("strength", 1.0)))
        return sample(denoise, scheduler, noise, cond, uncond, guidance_scale=guidance_scale,
                      num_inference_steps=num_inference_steps, eta=call.eta, generator=call.generator,
                      progress=call.progress, desc=desc, callback=on_step, **options)

    def _text(self, prompts: list[str], negative_prompt) -> tuple[torch.Tensor, torch.Tensor]:
        """(b n d) tokens of the prompts and of the unconditional branch."""
        cond = self.encode_prompts(prompts)
        if negative_prompt is None:
            return cond, self.model.text_encoder.null(len(prompts))
        negatives = _as_list(negative_prompt)
        if len(negatives) not in (1, len(prompts)):
            raise VidgenError(f"{len(negatives)} negative prompts for {len(prompts)} prompts: "
                              f"give one, or one per prompt")
        return cond, self.encode_prompts(negatives).expand_as(cond)

    def _initial_noise(self, call: _Call, batch: int, prompts: list[str] | None = None,
                       shifts: torch.Tensor | None = None) -> torch.Tensor:
        """(b c f h w) noise of the base stage, moving with the prompts' words or `shifts` (b f 2)
        where motion_noise is on (vidgen.base_noise)."""
        return base_noise.initial_noise(self.model, call, batch, prompts, shifts)

    def _draw_anchor(self, call: _Call, shape, cond, uncond) -> torch.Tensor:
        """(b c h w) latents of one frame per clip, from the anchor image U-Net; its noise is
        drawn after the clip's, so models without an anchor give the same clips for a seed."""
        b, c, _, h, w = shape
        noise = torch.randn((b, c, h, w), generator=call.generator).to(call.device)
        image_unet = self.model.image_unet

        def denoise(x, t, text):
            return self.predict(lambda *inputs: image_unet(*inputs).sample, x, t, text, call.precision)

        s = call.settings
        return self._sample(call, denoise, noise, cond, uncond, s.guidance_scale, s.num_inference_steps,
                            "anchor frame")

    def _base_stage(self, call: _Call, noise, cond, uncond, anchor: torch.Tensor | None, given=None,
                    **options) -> torch.Tensor:
        """(b c f h w) noise -> keyframe latents; with an anchor (b c h w), every frame reads it. given:
        the user's picture or clip (vidgen.media.conditioning), the image-to-video base's anchor."""
        s, base, position = call.settings, self.model.stages["base"], self.model.index.anchor.position
        if given is not None:
            options.update(given.base_options(len(cond)))
            if given.anchor is not None:  # the picture is the first frame of image_base's (or the base's own) clip
                base, anchor, position = self.model.image_base or base, given.anchor, 0.0
        index = cascade.anchor_index(s.num_frames, position) if anchor is not None else None

        def denoise(x, t, c):
            if anchor is not None:
                x = cascade.anchor_input(x, anchor.repeat(x.shape[0] // anchor.shape[0], 1, 1, 1), index)
            return self.predict(base, x, t, c, call.precision, fps=s.fps)

        guide = critic_choice.arrow_guide(self.model.critic, cond, s.motion_guidance) if s.motion_guidance else None
        if "known" in options:  # frames given (a picture, a clip's end): steer the others toward them
            options["reconstruction"] = s.reconstruction_guidance
        if s.guidance_from_step > 0:  # the first steps unguided: one network call each
            options["guidance_interval"] = (s.guidance_from_step, s.num_inference_steps)
        return self._sample(call, denoise, noise, cond, uncond, s.guidance_scale, s.num_inference_steps,
                            "base stage", guide=guide, **options)

    def _interpolate(self, call: _Call, keyframes, fps, cond, uncond):
        """(b c f h w) keyframes at fps -> (b c f*k h w) latents at fps*k."""
        settings, unet = self.model.index.interp, self.model.stages["interp"]
        known, mask = cascade.spread_keyframes(keyframes, settings.factor)  # (b c F h w), (b 1 F h w)
        dense_fps = fps * settings.factor
        skip = torch.full((keyframes.shape[0],), float(settings.factor), device=call.device)

        def denoise(x, t, c):
            repeats = x.shape[0] // known.shape[0]  # 2 when both guidance branches run
            inputs = cascade.interpolation_input(x, known.repeat(repeats, 1, 1, 1, 1), mask.repeat(repeats, 1, 1, 1, 1))
            return self.predict(unet, inputs, t, c, call.precision, fps=dense_fps,
                                conditions={cascade.INTERP_CONDITION: skip.repeat(repeats)})

        noise = frame_noise(known.shape, call.generator, settings.noise_correlation).to(call.device)
        start = cascade.blend_keyframes(keyframes, settings.factor) if settings.strength < 1 else None  # (b c F h w)
        dense = self._sample(call, denoise, noise, cond, uncond, settings.guidance_scale, settings.num_inference_steps,
                             "interp stage", start=start, strength=settings.strength, known=(known, mask))
        return mask * known + (1 - mask) * dense, dense_fps  # the keyframes stay as the base stage made them

    def _super_resolve(self, call: _Call, low, fps, cond, uncond):
        """(b c f h w) -> (b c f h*s w*s) latents."""
        settings, unet = self.model.index.sr, self.model.stages["sr"]
        b, c, f, h, w = low.shape
        levels = torch.full((b,), settings.noise_level, dtype=torch.long)
        augmentation = torch.randn(low.shape, generator=call.generator).to(call.device)
        start = cascade.upsample_latents(low, settings.scale) if settings.strength < 1 else None  # (b c f H W)
        low = self.model.scheduler.add_noise(low, augmentation, levels.to(call.device))
        low_up = cascade.upsample_latents(low, settings.scale)  # (b c f H W)

        def denoise(x, t, cond_batch):
            repeats = x.shape[0] // b
            inputs = cascade.super_resolution_input(x, low_up.repeat(repeats, 1, 1, 1, 1))
            return self.predict(unet, inputs, t, cond_batch, call.precision, fps=fps,
                                conditions={cascade.SR_CONDITION: levels.to(call.device).repeat(repeats)})

        noise = torch.randn((b, c, 1, h * settings.scale, w * settings.scale), generator=call.generator)
        noise = noise.expand(-1, -1, f, -1, -1).contiguous().to(call.device)  # (b c f H W), the same for every frame
        return self._sample(call, denoise, noise, cond, uncond, settings.guidance_scale, settings.num_inference_steps,
                            "sr stage", start=start, strength=settings.strength)
