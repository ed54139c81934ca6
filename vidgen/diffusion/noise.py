"""Gaussian noise for frame sequences, optionally shared in part by all the frames of a clip.

A video model inflated from an image model denoises every frame with the same spatial layers;
with independent noise per frame, each frame starts towards its own picture and the temporal
layers must pull them together. The mixed noise prior of PYoCo (Ge et al. 2023, "Preserve Your
Own Correlation", section 3.2) draws part of each frame's noise from one image shared by the
clip: with correlation rho,

    noise_f = sqrt(rho) * shared + sqrt(1 - rho) * independent_f,

still unit-variance Gaussian per element (so each frame is what the image model knows), with
correlation rho between frames. A model trained with it must be sampled with it (vidgen.json
records the value).
"""

from __future__ import annotations

import torch


def frame_noise(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
                correlation: float = 0.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard Gaussian noise of `shape`; for video (b c f h w) with correlation > 0, correlated
    across frames as above. Correlation 0 draws exactly `torch.randn(shape, generator=generator)`."""
    if not 0.0 <= correlation < 1.0:
        raise ValueError(f"frame noise correlation must be in [0, 1), got {correlation}")
    shape = tuple(shape)
    if correlation == 0.0 or len(shape) != 5 or shape[2] == 1:
        return torch.randn(shape, generator=generator, dtype=dtype)
    b, c, _, h, w = shape
    shared = torch.randn((b, c, 1, h, w), generator=generator, dtype=dtype)  # (b c 1 h w), one per clip
    independent = torch.randn(shape, generator=generator, dtype=dtype)  # (b c f h w)
    return correlation ** 0.5 * shared + (1.0 - correlation) ** 0.5 * independent
