"""Clips longer than one window of the base stage, and the continuation of a user's clip.

The base stage's temporal attention has one position table row per keyframe (64), and it was
trained on windows of `num_frames` keyframes. A longer clip is made autoregressively: each new
window knows its first half, the last keyframes made so far, and draws the second half, the
known half set before every step to itself noised to that step's level (the replacement method,
Ho et al. 2022, section 3.1; the extend mask of Make-A-Video's interpolation network, section
3.3, at the keyframe level). Frame interpolation then fills the dense timeline window by window
(vidgen.media.frames.fill_timeline), each window reading the end of the last as known frames, and
super-resolution and decoding run a window at a time with one shared noise image. Only the
latents (a few KiB a frame) and the finished frames grow with the length.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..diffusion.flow_noise import continued_shifts, translated
from ..errors import VidgenError
from .frames import decode_frames, encode_frames, fill_timeline, window_frames
from .inputs import Clip, fit_frames


def continue_keyframes(pipe, call, keyframes: torch.Tensor, cond, uncond, total: int) -> torch.Tensor:
    """(b c k h w) keyframe latents -> (b c total h w): the first k as given, the rest drawn by the
    base stage a window at a time, each window knowing the last half-window made so far. Where the
    settings ask for motion noise, each window's noise moves on as that half-window moves
    (`continued_shifts`), so the clip keeps its own speed and way; where continue_strength is below
    1, its new keyframes start from its last known one moved on at that velocity."""
    s = call.settings
    window = s.num_frames
    if window < 2 and keyframes.shape[2] < total:
        raise VidgenError(f"continuing a clip needs windows of at least 2 keyframes, got num_frames={window}")
    made, have = [keyframes], keyframes.shape[2]
    while have < total:
        history = torch.cat(made, dim=2)[:, :, -max(1, window // 2):]  # (b c k h w)
        k = history.shape[2]
        values = history.new_zeros(*history.shape[:2], window, *history.shape[3:])
        values[:, :, :k] = history
        mask = torch.zeros(1, 1, window, 1, 1, device=values.device)
        mask[:, :, :k] = 1
        # (b window 2) at the frames' own velocity, where the noise or the start moves with it
        onward = continued_shifts(history.float().cpu(), window) if s.motion_noise or s.continue_strength < 1 else None
        # the noise goes on moving as the frames made so far move (where motion noise is on)
        noise = pipe._initial_noise(call, history.shape[0], shifts=onward if s.motion_noise else None)
        options = {}
        if s.continue_strength < 1:  # start from the last frame moved on at that velocity (SDEdit)
            start = values.clone()  # (b c window h w)
            start[:, :, k:] = translated(history[:, :, -1], onward[:, 1:window - k + 1])
            options = {"start": start, "strength": s.continue_strength}
        new = pipe._base_stage(call, noise, cond, uncond, None, known=(values, mask), **options)[:, :, k:]
        made.append(new)
        have += new.shape[2]
    return torch.cat(made, dim=2)[:, :, :total]


def dense_window(pipe, settings) -> int:
    """Frames of one interpolation window: what the stage was trained on, within its position table."""
    return min(window_frames(pipe, "interp"), settings.num_frames * pipe.model.index.interp.factor)


def render(pipe, call, keyframes: torch.Tensor, cond, uncond, run, size: tuple[int, int],
           frames: int) -> tuple[np.ndarray, float]:
    """(b c K h w) keyframes -> uint8 (b frames H W 3) through the stages in `run` after the base
    one, and the fps they play at."""
    s = call.settings
    fps, latents = s.fps, keyframes
    if "interp" in run:
        factor = pipe.model.index.interp.factor
        b, c, k, h, w = keyframes.shape
        known = keyframes.new_zeros(b, c, k * factor, h, w)  # the last keyframe's tail extrapolated, as in generate
        known[:, :, ::factor] = keyframes
        mask = torch.zeros(k * factor, dtype=torch.bool)
        mask[::factor] = True
        fps = s.fps * factor
        with call.timed("interp"):
            latents = fill_timeline(pipe, call, known, mask, fps, factor, cond, uncond, dense_window(pipe, s),
                                    context=factor + 1)
    with call.timed("sr+decode"):
        out = decode_frames(pipe, call, latents[:, :, :frames], fps, cond, uncond, size)
    return out, fps


def extend_clip(pipe, call, clip: Clip, cond, uncond, seconds: float) -> np.ndarray:
    """uint8 (f + n h w 3): the clip's own frames as they were, then `seconds` more."""
    s, model = call.settings, pipe.model
    step = max(1, round(clip.fps / s.fps))  # clip frames per keyframe
    if step > 1 and "interp" not in model.stages:
        raise VidgenError(f"the clip plays at {clip.fps:g} fps and this model's keyframes at {s.fps:g} fps, and it has "
                          f"no interpolation stage to fill the frames between: give a clip at {s.fps:g} fps")
    if step > 1 and step > model.index.interp.factor:
        raise VidgenError(f"the clip plays at {clip.fps:g} fps, {step} times the keyframes' {s.fps:g} fps, and the "
                          f"interpolation stage fills at most {model.index.interp.factor}: give a clip at "
                          f"{s.fps * model.index.interp.factor:g} fps or less")
    dense = encode_frames(pipe, fit_frames(clip.frames, (s.height, s.width)))  # (1 c f h w)
    f = dense.shape[2]
    history = list(range(f - 1, -1, -step))[::-1][-s.num_frames:]  # keyframes ending at the clip's last frame
    added = max(1, math.ceil(seconds * clip.fps / step))
    with call.timed("base"):
        keyframes = continue_keyframes(pipe, call, dense[:, :, history], cond, uncond, len(history) + added)
    new = keyframes[:, :, len(history):]  # (1 c added h w)
    if step > 1:
        total = f + added * step
        known = dense.new_zeros(*dense.shape[:2], total, *dense.shape[3:])
        mask = torch.zeros(total, dtype=torch.bool)
        known[:, :, :f], mask[:f] = dense, True
        known[:, :, f - 1 + step::step], mask[f - 1 + step::step] = new, True
        window = dense_window(pipe, s)
        with call.timed("interp"):
            new = fill_timeline(pipe, call, known, mask, clip.fps, step, cond, uncond, window, window // 2)[:, :, f:]
    with call.timed("sr+decode"):
        frames = decode_frames(pipe, call, new, clip.fps, cond, uncond, clip.size)[0]
    return np.concatenate([clip.frames, frames[:max(1, round(seconds * clip.fps))]])
