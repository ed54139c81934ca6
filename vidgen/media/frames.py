"""The cascade's later stages on frames of any number: masked frame interpolation over a timeline
in windows, then super-resolution and decoding in windows.

Make-A-Video's interpolation network (section 3.3) reads the latents of the known frames and a
mask, so one network interpolates (every k-th frame known), extends a clip (its first frames
known) or animates a picture (the first frame known). Here a timeline of any length is filled a
window at a time: the temporal attention holds at most `max_frames` rows, and each window after
the first reads the end of the one before as known frames, so the windows join where they meet.
Memory then stays that of one window, however long the clip.
"""

from __future__ import annotations

import numpy as np
import torch

from ..diffusion.noise import frame_noise
from ..errors import VidgenError
from ..models import cascade
from ..models.vae import decode_latents, encode_video, latent_factor
from ..video_io import to_uint8_frames
from .inputs import fit_frames


def encode_frames(pipe, frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (f h w 3) -> (1 c f h w) float32 latents, the VAE posterior's mean."""
    model = pipe.model
    video = torch.from_numpy(np.array(frames, dtype=np.float32)).div(127.5).sub(1.0)
    video = video.permute(3, 0, 1, 2)[None].to(model.device)  # (1 3 f h w)
    return encode_video(model.vae, video, model.index.vae_chunk_size, mean=True).float()


def blend_known(latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(b c T h w) latents, (T,) bool mask of the known frames -> each frame a linear blend of the
    known frames on either side by its distance to them; before the first known frame and after the
    last, that frame held. For keyframes every k frames this is `cascade.blend_keyframes`."""
    steps = torch.arange(mask.numel(), device=latents.device)
    known_at = steps[mask.to(latents.device)]
    before = known_at[(torch.searchsorted(known_at, steps, right=True) - 1).clamp(min=0)]
    after = known_at[torch.searchsorted(known_at, steps).clamp(max=len(known_at) - 1)]
    span = (after - before).clamp(min=1)
    weight = torch.where(after > before, (steps - before) / span, 0.0).view(1, 1, -1, 1, 1).to(latents.dtype)
    return (1 - weight) * latents[:, :, before] + weight * latents[:, :, after]


def interpolate_window(pipe, call, known: torch.Tensor, mask: torch.Tensor, fps: float, skip: int, cond, uncond,
                       desc: str = "interp stage") -> torch.Tensor:
    """(b c f h w) latents with the frames where `mask` (f,) is True known -> (b c f h w), the others
    sampled by the interpolation network conditioned on the frame skip and fps; the known frames
    stay as they were. Below full strength it starts from the known frames blended over the rest."""
    settings, unet = pipe.model.index.interp, pipe.model.stages["interp"]
    b, _, f, h, w = known.shape
    mask5 = mask.to(known.device, known.dtype).view(1, 1, f, 1, 1).expand(b, 1, f, h, w)  # (b 1 f h w)
    skips = torch.full((b,), float(skip), device=known.device)

    def denoise(x, t, text):
        repeats = x.shape[0] // b  # 2 when both guidance branches run
        inputs = cascade.interpolation_input(x, known.repeat(repeats, 1, 1, 1, 1), mask5.repeat(repeats, 1, 1, 1, 1))
        return pipe.predict(unet, inputs, t, text, call.precision, fps=fps,
                            conditions={cascade.INTERP_CONDITION: skips.repeat(repeats)})

    noise = frame_noise(known.shape, call.generator, settings.noise_correlation).to(known.device)
    start = blend_known(known, mask) if settings.strength < 1 else None  # (b c f h w)
    dense = pipe._sample(call, denoise, noise, cond, uncond, settings.guidance_scale, settings.num_inference_steps,
                         desc, start=start, strength=settings.strength, known=(known, mask5))
    return mask5 * known + (1 - mask5) * dense


def fill_timeline(pipe, call, known: torch.Tensor, mask: torch.Tensor, fps: float, skip: int, cond, uncond,
                  window: int, context: int) -> torch.Tensor:
    """(b c T h w) latents, (T,) bool mask of the given frames -> (b c T h w) with every other frame
    sampled, `window` frames at a time. A window starts `context` frames before the first frame
    still missing (those it reads as known: given, or made by the window before)."""
    if window <= context:  # a window would end before the first missing frame and never fill it
        raise VidgenError(f"a window of {window} frames cannot fill past {context} frames of context: give more "
                          f"frames per window (num_frames)")
    out, done = known.clone(), mask.clone().cpu()
    total = done.numel()
    while not bool(done.all()):
        first = int((~done).nonzero()[0])
        end = min(total, max(first - context, 0) + window)
        begin = max(0, end - window)
        part = done[begin:end]
        out[:, :, begin:end] = interpolate_window(pipe, call, out[:, :, begin:end], part, fps, skip, cond, uncond,
                                                  desc=f"interp frames {begin}-{end - 1}")
        done[begin:end] = True
    return out


def window_frames(pipe, stage: str) -> int:
    """The most frames one call of a stage's U-Net takes (its frame position table)."""
    return pipe.model.stages[stage].options.max_frames


def decode_frames(pipe, call, latents: torch.Tensor, fps: float, cond, uncond, size: tuple[int, int]) -> np.ndarray:
    """(b c T h w) base-size latents -> uint8 (b T H W 3) frames of `size` (H, W), a window at a time:
    through super-resolution where `size` is larger than the latents' and the model has it (every
    window draws the same noise, as the frames of one window share one noise image, section 3.4),
    then resized to `size` where the stages do not reach it exactly."""
    model = pipe.model
    k = latent_factor(model.vae)
    base = (latents.shape[-2] * k, latents.shape[-1] * k)
    sr = "sr" in model.stages and size[0] > base[0]
    window = window_frames(pipe, "sr") if sr else latents.shape[2]
    state = call.generator.get_state()
    parts = []
    for begin in range(0, latents.shape[2], window):
        chunk = latents[:, :, begin:begin + window]  # (b c w h w)
        if sr:
            call.generator.set_state(state)
            chunk = pipe._super_resolve(call, chunk, fps, cond, uncond)
        video = decode_latents(model.vae, chunk, model.index.vae_chunk_size).float().cpu()  # (b 3 w H W)
        parts.append(np.stack([to_uint8_frames(clip) for clip in video]))
    frames = np.concatenate(parts, axis=1)  # (b T H W 3)
    if frames.shape[2:4] != tuple(size):
        frames = np.stack([fit_frames(clip, size) for clip in frames])
    return frames
