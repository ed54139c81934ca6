"""`VideoPipeline.extend`, `.interpolate` and `.upscale`: the cascade's stages on a user's clip.

Each takes a clip (a file, a PNG frames folder, a `Clip`, or uint8 frames (f h w 3) with their
fps), refuses what the model cannot do before any sampling, and returns the pipeline's
VideoOutput with the clip's own frames kept where the method promises.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import VidgenError
from ..precision import autocast_dtype, autocast_name
from ..sampling_call import Call, VideoOutput, new_generator
from .conditioning import video_clip
from .frames import decode_frames, encode_frames, fill_timeline
from .inputs import check_fit, crop_to_shape, fit_frames, own_anchor_refusal
from .long_clips import dense_window, extend_clip


class MediaMethods:
    """Mixed into VideoPipeline: `self.model`, `self._checked`, `self._text` and the stage methods."""

    def supports_input(self, kind: str) -> bool:
        """Whether this model's generation can start from a user's `kind` ("image" or "video"): a base
        stage that draws its own anchor frame cannot, but for a picture where that anchor is the first
        frame (vidgen.media.conditioning.prepare refuses the rest)."""
        own = self.model.image_unet is not None
        return (kind == "image" and (not own or self.model.index.anchor.position == 0)) or (kind == "video" and not own)

    def _media_call(self, needs: str | None, prompt, settings: dict, seed, generator, progress, eta=0.0):
        """(call, cond, uncond) for one clip, refused where the model lacks the stage `needs`."""
        if needs is not None and needs not in self.model.stages:
            raise VidgenError(f"this model has no {needs} stage (it has {', '.join(self.model.stages)}): use a model "
                              f"with one")
        s, _ = self._checked({k: v for k, v in settings.items() if v is not None}, ["base"])
        device = self.model.device
        call = Call(s, eta, new_generator(seed, generator), progress, autocast_dtype(s.autocast, device), device)
        with call.timed("text"):
            if hasattr(self.model.text_encoder, "image_size"):  # SDXL's size conditioning (vidgen.interop.sdxl)
                self.model.text_encoder.image_size = (s.height, s.width)
            cond, uncond = self._text([prompt], None)
        return call, cond, uncond

    def _media_output(self, call, frames: np.ndarray, fps: float, stages: list[str]):
        return VideoOutput(frames=frames[None], fps=fps, settings=call.settings, stages=stages, timings=call.timings,
                           reversed=[False], kept_candidates=[0], autocast=autocast_name(call.precision))

    @staticmethod
    def _prompt_of(clip, prompt):
        return prompt if prompt is not None else str(clip.metadata.get("prompt") or "")

    @torch.inference_mode()
    def extend(self, video, prompt: str | None = None, seconds: float = 1.0, fps: float | None = None,
               seed: int | None = None, generator=None, progress: bool = True, **settings):
        """The clip, its frames as they were, then `seconds` more that continue it (the base stage
        draws keyframes knowing the clip's last ones; interpolation fills between them knowing the
        clip's last frames). prompt: default the clip's own (its sidecar), else none. fps: of
        `video` where it is an array. settings: GenerationDefaults fields (num_inference_steps, ...)."""
        clip = video_clip(video, fps or self.model.index.defaults.fps)
        if not seconds > 0:
            raise VidgenError(f"seconds must be positive, got {seconds}")
        if self.model.image_unet is not None:
            raise VidgenError(own_anchor_refusal(self.model.index.anchor.position, "a clip to extend"))
        prompt = self._prompt_of(clip, prompt)
        call, cond, uncond = self._media_call(None, prompt, dict(settings, arrow_check=False, candidates=1), seed,
                                              generator, progress)
        check_fit(*clip.size, (call.settings.height, call.settings.width), "the clip")
        clip = crop_to_shape(clip, (call.settings.height, call.settings.width))  # kept and new frames alike
        frames = extend_clip(self, call, clip, cond, uncond, seconds)
        return self._media_output(call, frames, clip.fps, ["base", "interp"] if "interp" in self.model.stages
                                  else ["base"])

    @torch.inference_mode()
    def interpolate(self, video, factor: int | None = None, prompt: str | None = None, fps: float | None = None,
                    seed: int | None = None, generator=None, progress: bool = True, **settings):
        """`factor` times the frame rate (default: the model's interpolation factor): the clip's own
        frames every `factor` frames, exactly as they were, the frames between drawn by the
        interpolation stage; (f - 1) * factor + 1 frames."""
        clip = video_clip(video, fps or self.model.index.defaults.fps)
        most = self.model.index.interp.factor
        factor = most if factor is None else int(factor)
        if "interp" in self.model.stages and not 2 <= factor <= most:
            raise VidgenError(f"factor {factor}: this model's interpolation stage was trained on frame skips 2 to "
                              f"{most}: give --factor between them")
        call, cond, uncond = self._media_call("interp", self._prompt_of(clip, prompt), settings, seed, generator,
                                              progress)
        s = call.settings
        check_fit(*clip.size, (s.height, s.width), "the clip")
        clip = crop_to_shape(clip, (s.height, s.width))  # kept and drawn frames show the same region
        if len(clip.frames) < 2:
            raise VidgenError("the clip has one frame: interpolation needs at least two")
        keys = encode_frames(self, fit_frames(clip.frames, (s.height, s.width)))  # (1 c f h w)
        total = (keys.shape[2] - 1) * factor + 1
        known = keys.new_zeros(*keys.shape[:2], total, *keys.shape[3:])
        known[:, :, ::factor] = keys
        mask = torch.zeros(total, dtype=torch.bool)
        mask[::factor] = True
        with call.timed("interp"):
            dense = fill_timeline(self, call, known, mask, clip.fps * factor, factor, cond, uncond,
                                  dense_window(self, s), context=factor)
        with call.timed("sr+decode"):
            frames = decode_frames(self, call, dense, clip.fps * factor, cond, uncond, clip.size)[0]
        frames[::factor] = clip.frames  # the clip's own frames where they were
        return self._media_output(call, frames, clip.fps * factor, ["interp"])

    @torch.inference_mode()
    def upscale(self, video, prompt: str | None = None, fps: float | None = None, seed: int | None = None,
                generator=None, progress: bool = True, **settings):
        """The super-resolution stage on the clip: fitted to the base size, then scaled by the stage's
        factor (128x128 from any clip, with the shapes model)."""
        clip = video_clip(video, fps or self.model.index.defaults.fps)
        call, cond, uncond = self._media_call("sr", self._prompt_of(clip, prompt), settings, seed, generator,
                                              progress)
        s, scale = call.settings, self.model.index.sr.scale
        check_fit(*clip.size, (s.height, s.width), "the clip")
        low = encode_frames(self, fit_frames(clip.frames, (s.height, s.width)))  # (1 c f h w)
        with call.timed("sr+decode"):
            frames = decode_frames(self, call, low, clip.fps, cond, uncond, (s.height * scale, s.width * scale))[0]
        return self._media_output(call, frames, clip.fps, ["sr"])

