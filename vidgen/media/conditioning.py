"""A picture or a clip as the base stage reads it: image-to-video and video-to-video.

- Image: the picture's latents are the first keyframe, set before every step to themselves noised
  to that step's level (the replacement method of Ho et al. 2022, "Video Diffusion Models",
  section 3.1, the same masked conditioning the interpolation stage uses); the base stage draws
  the rest of the clip around it as its prompt says, and the first frame keeps the picture.
  Where the model has an image-to-video base stage (`image_base`, trained around each clip's
  first frame), that stage runs instead and reads the picture at every frame as its anchor
  (Emu Video's image-and-text-to-video step, Girdhar et al. 2023, section 3.1).
- Video: the clip's frames at the keyframe rate, encoded, noised part-way and denoised under the
  prompt (SDEdit, Meng et al. 2022): at moderate strength the layout and motion stay and the
  appearance follows the prompt.

Both turn the arrow check off: playing the clip backwards would move the picture to the end or
reverse the clip's own motion. The critic may still choose among candidates.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import VidgenError
from .frames import encode_frames
from .inputs import Clip, check_fit, fit_frames, own_anchor_refusal, read_clip, read_image

DEFAULT_STRENGTH = 0.6
IMAGE_STRENGTH = 1.0  # from noise; below 1 the keyframes start from the picture held still (SDEdit)


@dataclass
class Given:
    """What the base stage is given besides the prompt."""

    known: tuple[torch.Tensor, torch.Tensor] | None = None  # (values (1 c f h w), mask (1 1 f 1 1))
    start: torch.Tensor | None = None  # (1 c f h w) latents to start part-way from
    strength: float = 1.0
    anchor: torch.Tensor | None = None  # (1 c h w): the picture, for a base stage made around its first frame
    notes: dict = field(default_factory=dict)  # what was done to the inputs, for the sidecar

    def base_options(self, batch: int) -> dict:
        """The sampler's options (vidgen.diffusion.sampler.sample) for a base stage of `batch` clips."""
        options = {}
        if self.known is not None:
            values, mask = self.known
            options["known"] = (values.expand(batch, -1, -1, -1, -1), mask)
        if self.start is not None:
            options.update(start=self.start.expand(batch, -1, -1, -1, -1), strength=self.strength)
        return options

    def keep(self, latents: torch.Tensor) -> torch.Tensor:
        """(b c f h w) -> the same with the known frames exactly as given."""
        if self.known is None:
            return latents
        values, mask = self.known
        return mask * values + (1 - mask) * latents


def image_frames(image) -> np.ndarray:
    """A picture (path, PIL image or uint8 array (h w 3)) as uint8 (h w 3)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise VidgenError(f"image must be a picture file, a PIL image or uint8 (h, w, 3), got {array.dtype} "
                          f"{array.shape}")
    return array


def video_clip(video, fps: float) -> Clip:
    """A clip (path, Clip, or uint8 frames (f h w 3) at `fps`)."""
    if isinstance(video, Clip):
        return video
    if isinstance(video, (str, os.PathLike)):
        return read_clip(video, "--video")
    frames = np.asarray(video)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise VidgenError(f"video must be a clip file, a Clip or uint8 frames (f, h, w, 3), got {frames.dtype} "
                          f"{frames.shape}")
    return Clip(frames, fps, "<frames>", {})


def keyframe_indices(num_clip_frames: int, clip_fps: float, fps: float, most: int) -> list[int]:
    """The clip's frames nearest to times 0, 1/fps, 2/fps, ...: at most `most`, within the clip."""
    step = clip_fps / fps
    count = min(most, int((num_clip_frames - 1) / step + 1e-6) + 1)
    return [min(num_clip_frames - 1, round(i * step)) for i in range(count)]


def prepare(pipe, s, image=None, video=None, strength: float | None = None):
    """(settings, Given or None): the call's picture or clip fitted, encoded and placed; refused
    (VidgenError) where it cannot be used, before any sampling."""
    if image is None and video is None:
        if strength is not None:
            raise VidgenError("strength applies to a video or picture to start from: give one, or leave strength out")
        return s, None
    if image is not None and video is not None:
        raise VidgenError("give an image or a video to start from, not both")
    picture_is_anchor = pipe.model.image_unet is not None  # the base reads a first frame: the picture takes its place
    if picture_is_anchor and (video is not None or pipe.model.index.anchor.position != 0):
        raise VidgenError(own_anchor_refusal(pipe.model.index.anchor.position, "a video" if video is not None else "a picture"))
    size = (s.height, s.width)
    if image is not None:
        strength = IMAGE_STRENGTH if strength is None else float(strength)
        if not 0.0 < strength <= 1.0:
            raise VidgenError(f"strength must be in (0, 1] (how much of the still picture is redrawn), got {strength}")
        picture = image_frames(image)
        note = check_fit(picture.shape[0], picture.shape[1], size, "the image")
        first = encode_frames(pipe, fit_frames(picture[None], size))  # (1 c 1 h w)
        values = first.new_zeros(*first.shape[:2], s.num_frames, *first.shape[3:])
        values[:, :, :1] = first
        mask = torch.zeros(1, 1, s.num_frames, 1, 1, device=values.device)
        mask[:, :, 0] = 1
        start = first.expand(-1, -1, s.num_frames, -1, -1) if strength < 1 else None  # the picture held still
        anchor = first[:, :, 0] if pipe.model.image_base is not None or picture_is_anchor else None  # (1 c h w)
        notes = {"image": note, "strength": strength, "image_base_stage": pipe.model.image_base is not None,
                 "picture_as_anchor": anchor is not None}
        return (dataclasses.replace(s, arrow_check=False),
                Given(known=(values, mask), start=start, strength=strength, anchor=anchor, notes=notes))
    strength = DEFAULT_STRENGTH if strength is None else float(strength)
    if not 0.0 < strength <= 1.0:
        raise VidgenError(f"strength must be in (0, 1] (how much of the clip is redrawn), got {strength}")
    clip = video_clip(video, s.fps)
    note = check_fit(*clip.size, size, "the video")
    indices = keyframe_indices(len(clip.frames), clip.fps, s.fps, s.num_frames)
    start = encode_frames(pipe, fit_frames(clip.frames[indices], size))  # (1 c f h w)
    notes = {"video": f"{len(indices)} of its {len(clip.frames)} frames at {s.fps:g} fps, {note}",
             "strength": strength}
    return (dataclasses.replace(s, arrow_check=False, num_frames=len(indices)),
            Given(start=start, strength=strength, notes=notes))
