"""Noise that moves with the clip, and motion words that say how it moves.

Go-with-the-Flow (Burgert et al. 2025) controls a video diffusion model's motion through its
initial noise: noise warped along a flow field makes the sampled clip move along it, and
fine-tuning on noise warped along each training video's own optical flow makes the model follow
it closely. Here the flow is one translation per frame (the whole picture's, which in a clip of one
moving object on a plain ground is the object's), and the warp keeps the PYoCo mixed prior of
vidgen.diffusion.noise: with share rho,

    noise_f = sqrt(rho) * shift(shared, d_f) + sqrt(1 - rho) * independent_f,

where `shared` is drawn on a grid FINE times finer than the latents, moved by d_f (frame f's
displacement from frame 0, whole fine cells), and summed back over each latent cell (divided by
FINE, so every element stays a unit Gaussian). Frames whose displacements differ by a fraction of
a cell still share most of their noise, as the warped noise of that paper does.

- Training (`model.flow_noise`): d_f is measured on each clip's own latents (`estimate_shifts`),
  so the model learns to move what it draws with the noise, from unlabeled clips alike.
- Sampling: d_f comes from the prompt's motion words (`word_shifts`), a table of each word's mean
  velocity over the captioned clips of the corpus (`motion_words`), written in vidgen.json.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

FINE = 4  # fine noise cells per latent cell, per side


def moving_noise(shape: Sequence[int], generator: torch.Generator | None, share: float, shifts: torch.Tensor,
                 fine: int = FINE, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(b c f h w) standard Gaussian noise whose part `share` (of the variance) moves by `shifts`
    (b f 2), each frame's displacement from the first in latent cells (rows, columns). All-zero
    shifts give the static mixed prior of vidgen.diffusion.noise with correlation `share`."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the moving share of the noise must be in [0, 1), got {share}")
    b, c, f, h, w = shape
    shared = torch.randn((b, c, h * fine, w * fine), generator=generator, dtype=dtype)  # (b c H W)
    independent = torch.randn((b, c, f, h, w), generator=generator, dtype=dtype)
    cells = torch.round(shifts.detach().cpu().double() * fine).long()  # (b f 2) whole fine cells
    frames = torch.empty((b, c, f, h, w), dtype=dtype)
    for i in range(b):
        for k in range(f):
            moved = torch.roll(shared[i], shifts=(int(cells[i, k, 0]), int(cells[i, k, 1])), dims=(1, 2))
            frames[i, :, k] = moved.view(c, h, fine, w, fine).sum((2, 4)) / fine  # (c h w), unit variance
    return share ** 0.5 * frames + (1.0 - share) ** 0.5 * independent


def estimate_shifts(latents: torch.Tensor, fine: int = FINE) -> torch.Tensor:
    """(b c f h w) clean latents -> (b f 2): how far each frame's content has moved from the first
    frame's, in latent cells (rows, columns), to 1/fine of a cell: the peak of the two frames'
    circular cross-correlation on a grid `fine` times finer (bilinear), their means removed."""
    b, c, f, h, w = latents.shape
    x = latents.detach().float()
    x = x - x.mean((3, 4), keepdim=True)
    x = F.interpolate(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), scale_factor=fine, mode="bilinear",
                      align_corners=False).view(b, f, c, h * fine, w * fine)
    spectrum = torch.fft.rfft2(x)  # (b f c H rW)
    corr = torch.fft.irfft2(spectrum * spectrum[:, :1].conj(), s=x.shape[-2:]).sum(2)  # (b f H W)
    rows, cols = corr.shape[-2:]
    peak = corr.flatten(2).argmax(2)  # (b f)
    r, q = peak // cols, peak % cols
    r = torch.where(r > rows // 2, r - rows, r)  # circular offsets -> signed
    q = torch.where(q > cols // 2, q - cols, q)
    return torch.stack([r, q], dim=-1).float() / fine


def words_of(text: str) -> list[str]:
    """The lower-case words of a prompt or caption, punctuation dropped ("Left." is "left")."""
    return re.findall(r"[a-z]+", text.lower())


def word_shifts(prompts: Sequence[str], words: dict[str, Sequence[float]], num_frames: int, fps: float,
                side: tuple[int, int]) -> torch.Tensor:
    """(b f 2) displacements for `prompts` from a motion-word table (word -> velocity in sides per
    second, rows and columns): the sum of the velocities of the prompt's words, at `fps`, over a
    latent grid of `side` (h, w) cells. A prompt without a motion word gets zeros (still noise)."""
    seconds = torch.arange(num_frames, dtype=torch.float64) / fps  # (f)
    out = torch.zeros((len(prompts), num_frames, 2), dtype=torch.float64)
    for i, prompt in enumerate(prompts):
        velocity = torch.zeros(2, dtype=torch.float64)
        for word in words_of(prompt):
            if word in words:
                velocity += torch.tensor([float(v) for v in words[word]], dtype=torch.float64)
        out[i] = seconds[:, None] * velocity * torch.tensor(side, dtype=torch.float64)
    return out.float()


def fitted_velocity(shifts: torch.Tensor) -> torch.Tensor:
    """(b f 2) displacements -> (b 2) the slope of a least-squares line through them, per frame."""
    x = shifts.double()
    if x.shape[1] < 2:  # one frame: no motion to fit
        return torch.zeros(x.shape[0], 2)
    t = torch.arange(x.shape[1], dtype=torch.float64)
    t = t - t.mean()
    return ((t[None, :, None] * (x - x.mean(1, keepdim=True))).sum(1) / t.square().sum()).float()


def continued_shifts(latents: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(b c k h w) latents of the frames a window continues from -> (b num_frames 2): displacements
    that go on at their measured velocity (`estimate_shifts`, a line fitted through it), so the
    noise of the next window moves as the clip already does, at its own speed and way."""
    velocity = fitted_velocity(estimate_shifts(latents))  # (b 2) latent cells per frame
    return velocity[:, None, :] * torch.arange(num_frames, dtype=torch.float32)[None, :, None]


def shifted(frames: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """(b c f h w) frames, (b f 2) displacements in latent cells (rows, columns) -> (b c f h w):
    each frame moved by its own displacement (bilinear, to a fraction of a cell); what enters at an
    edge repeats the edge (in a clip of one object on a plain ground, the ground)."""
    b, c, f, h, w = frames.shape
    theta = torch.zeros(b * f, 2, 3, dtype=torch.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    cells = shifts.reshape(b * f, 2).float().cpu()
    theta[:, 0, 2] = -2 * cells[:, 1] / w  # a sample at x reads the frame at x - d (normalized coordinates)
    theta[:, 1, 2] = -2 * cells[:, 0] / h
    grid = F.affine_grid(theta, [b * f, c, h, w], align_corners=False).to(frames.device, torch.float32)
    flat = frames.float().permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    moved = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return moved.view(b, f, c, h, w).permute(0, 2, 1, 3, 4).to(frames.dtype)


def translated(frame: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """(b c h w) one frame, (b n 2) displacements -> (b c n h w): the frame moved by each (`shifted`)."""
    return shifted(frame[:, :, None].expand(-1, -1, shifts.shape[1], -1, -1), shifts)


def motion_words(clips: Iterable[tuple[str, torch.Tensor, float]], min_clips: int = 8,
                 min_agreement: float = 0.8) -> dict[str, list[float]]:
    """The motion-word table from captioned clips: (caption, shifts (f 2) in sides, fps) each. A
    word's velocity is the mean over its clips of each clip's displacement per second (from a
    least-squares line through its frames); it is kept where at least `min_clips` clips carry it
    and its mean velocity is at least `min_agreement` of their mean speed (the word says which way,
    not only that something moves: a color word's clips move every way and average out)."""
    sums: dict[str, list] = defaultdict(lambda: [torch.zeros(2, dtype=torch.float64), 0.0, 0])
    for caption, shifts, fps in clips:
        velocity = fitted_velocity(shifts[None])[0].double() * fps  # (2) sides per second
        for word in set(words_of(caption)):
            entry = sums[word]
            entry[0] += velocity
            entry[1] += float(velocity.norm())
            entry[2] += 1
    table = {}
    for word, (total, speed, count) in sorted(sums.items()):
        if count >= min_clips and float(total.norm()) >= min_agreement * speed:
            table[word] = [round(float(v) / count, 4) for v in total]
    return table
