"""Clip sampling: `num_frames` frames from a video at a chosen fps or frame stride, resized and
centre-cropped to a square, as a float tensor in [-1, 1] shaped (c, f, h, w).

Make-A-Video (section 3.2) trains the temporal layers on clips sampled at varying frame rates
and tells the model the rate; `clip_indices` is where that rate becomes frame indices.

Short videos follow one stated rule (`short_clip`):
- "loop": indices wrap around to the start of the video (a 20-frame video gives a 48-frame clip);
- "skip": `ClipTooShortError` is raised; `VideoClipDataset` turns it into a skipped sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..errors import ClipTooShortError, VidgenError
from .reader import VideoInfo, probe_video, read_frames

SHORT_CLIP_RULES = ("loop", "skip")


def frame_step(source_fps: float, fps: float | None = None, stride: int | None = None) -> float:
    """Source frames advanced per clip frame: `source_fps / fps` for a target fps, else `stride` (default 1)."""
    if fps is not None and stride is not None:
        raise VidgenError("give a target fps or a frame stride, not both")
    if fps is not None:
        if not fps > 0:
            raise VidgenError(f"target fps must be positive, got {fps}")
        if not source_fps > 0:
            raise VidgenError("the video reports no fps, so a target fps cannot be met: give a frame stride instead")
        return source_fps / fps
    if stride is not None and stride < 1:
        raise VidgenError(f"frame stride must be >= 1, got {stride}")
    return float(stride or 1)


def clip_indices(
    total_frames: int,
    num_frames: int,
    step: float = 1.0,
    start: int | None = None,
    short_clip: str = "loop",
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Frame indices of one clip: `num_frames` indices `step` apart from `start`.

    `start=None` draws the start uniformly from the valid range with `rng` (or takes the first
    frame when `rng` is None). A clip that does not fit follows `short_clip` (module docstring).
    """
    if short_clip not in SHORT_CLIP_RULES:
        raise VidgenError(f"short_clip must be one of {SHORT_CLIP_RULES}, got {short_clip!r}")
    if num_frames < 1 or total_frames < 1:
        raise VidgenError(f"need num_frames >= 1 and a video with frames (num_frames={num_frames}, video has {total_frames})")
    offsets = [int(math.floor(i * step + 1e-6)) for i in range(num_frames)]
    span = offsets[-1] + 1
    if span > total_frames:
        if short_clip == "skip":
            raise ClipTooShortError(f"clip needs {span} frames (num_frames={num_frames}, step={step:g}) but the video has {total_frames}")
        first = 0 if start is None else start % total_frames
        return [(first + o) % total_frames for o in offsets]
    last_start = total_frames - span
    if start is None:
        start = int(rng.integers(0, last_start + 1)) if rng is not None else 0
    elif not 0 <= start <= last_start:
        raise VidgenError(f"start frame {start} leaves too few frames: it must be in [0, {last_start}] for this clip")
    return [start + o for o in offsets]


def resize_center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Scale the short side to `size` (antialiased bilinear), then crop the centre square.

    frames: (f, c, h, w) float. Returns (f, c, size, size).
    """
    _, _, h, w = frames.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return frames[:, :, top:top + size, left:left + size]


def frames_to_tensor(frames: np.ndarray, size: int | None = None) -> torch.Tensor:
    """uint8 frames (f, h, w, c) -> float clip (c, f, h, w) in [-1, 1], optionally resized/cropped to `size`."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).float()
    video = rearrange(video, "f h w c -> f c h w")
    if size is not None:
        video = resize_center_crop(video, size)
    video = video / 127.5 - 1.0
    return rearrange(video, "f c h w -> c f h w").clamp_(-1.0, 1.0)


@dataclass
class Clip:
    video: torch.Tensor  # (c f h w) in [-1, 1]
    indices: list[int]
    fps: float  # the frame rate of the sampled clip: source fps / step
    info: VideoInfo


def sample_clip(
    path: str,
    num_frames: int,
    size: int,
    fps: float | None = None,
    stride: int | None = None,
    start: int | None = None,
    short_clip: str = "loop",
    rng: np.random.Generator | None = None,
    info: VideoInfo | None = None,
) -> Clip:
    """Read one clip of `num_frames` frames at `fps` (or every `stride`-th frame) from `path`."""
    info = info or probe_video(path)
    step = frame_step(info.fps, fps=fps, stride=stride)
    indices = clip_indices(info.num_frames, num_frames, step, start=start, short_clip=short_clip, rng=rng)
    unique = sorted(set(indices))
    decoded = read_frames(path, unique)  # (u h w c): each frame decoded once, even when looping
    frames = decoded[[unique.index(i) for i in indices]]  # (f h w c)
    clip_fps = info.fps / step if info.fps > 0 else 0.0
    return Clip(frames_to_tensor(frames, size), indices, clip_fps, info)


