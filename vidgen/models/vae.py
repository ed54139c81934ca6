"""The image VAE applied to video: frames in, frame-sequence latents out, a chunk of frames at a time.

Make-A-Video's spatial layers come from a text-to-image model; in a latent-diffusion
realisation of it (as here) every frame passes through that model's VAE (diffusers
`AutoencoderKL`) on its own. Frames go through in chunks of `chunk_size`, so the VAE's
activation memory is bounded by the chunk, not by the clip length. Latents are scaled (and
shifted, where the VAE has a shift) as the image model was trained: z = (mean-or-sample - shift) * scale.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from einops import rearrange


def latent_factor(vae: AutoencoderKL) -> int:
    """Pixels per latent along each side (8 for Stable Diffusion's VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _shift(vae: AutoencoderKL) -> float:
    return vae.config.shift_factor or 0.0


def encode_video(vae: AutoencoderKL, video: torch.Tensor, chunk_size: int = 8,
                 generator: torch.Generator | None = None, mean: bool = False) -> torch.Tensor:
    """(b, 3, f, H, W) frames in [-1, 1] -> (b, c, f, H/k, W/k) scaled latents sampled from the posterior
    (its mean where `mean` is set)."""
    b = video.shape[0]
    frames = rearrange(video, "b c f h w -> (b f) c h w").to(vae.dtype)
    posteriors = [vae.encode(chunk).latent_dist for chunk in frames.split(chunk_size)]
    z = torch.cat([p.mean if mean else p.sample(generator) for p in posteriors])
    z = (z - _shift(vae)) * vae.config.scaling_factor
    return rearrange(z, "(b f) c h w -> b c f h w", b=b)  # (b c f h w)


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
    """(b, c, f, h, w) scaled latents -> (b, 3, f, h*k, w*k) frames, clamped to [-1, 1]."""
    b = latents.shape[0]
    z = rearrange(latents, "b c f h w -> (b f) c h w").to(vae.dtype)
    z = z / vae.config.scaling_factor + _shift(vae)
    frames = None
    for start in range(0, z.shape[0], chunk_size):  # the output is filled in place: no second copy to concatenate
        chunk = vae.decode(z[start:start + chunk_size]).sample.clamp_(-1, 1)
        if frames is None:
            frames = chunk.new_empty((z.shape[0], *chunk.shape[1:]))
        frames[start:start + chunk_size] = chunk
    return rearrange(frames, "(b f) c h w -> b c f h w", b=b)  # (b c f h w)
