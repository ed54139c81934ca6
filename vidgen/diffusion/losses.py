"""Training objectives of the diffusion stages (Ho et al. 2020; Salimans & Ho 2022 for v).

Shape-free like the sampler: `x0` may be images (b, c, h, w) or video latents (b, c, f, h, w);
the scheduler's noise math broadcasts over the trailing dimensions.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .noise import frame_noise

PREDICTION_TYPES = ("epsilon", "v_prediction")
LOSS_WEIGHTINGS = ("uniform", "v")


def timestep_weights(scheduler, timesteps: torch.Tensor, weighting: str) -> torch.Tensor | None:
    """Per-sample loss weights for an epsilon-prediction model, or None for "uniform".

    "v" weighs each noise error as the v objective does (Salimans & Ho 2022: v - v_hat =
    (eps - eps_hat) / sqrt(alpha_bar_t), so the weight is 1 / alpha_bar_t), normalised to mean 1
    over the training timesteps. Plain epsilon MSE spends almost all its weight on low noise,
    where each frame can be denoised alone; the layout every frame must share (background,
    object, where it is) is decided at high noise, which this weighting brings into the loss.
    """
    if weighting == "uniform":
        return None
    if weighting != "v":
        raise ValueError(f"loss weighting must be one of {LOSS_WEIGHTINGS}, got {weighting!r}")
    inverse = 1.0 / scheduler.alphas_cumprod.float()  # (T,)
    return (inverse / inverse.mean())[timesteps.cpu()].to(timesteps.device)


def add_noise(scheduler, x0: torch.Tensor, generator: torch.Generator, timesteps: torch.Tensor | None = None,
              noise: torch.Tensor | None = None, correlation: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward process q(x_t | x_0) at uniformly drawn (or given) timesteps, one per sample.

    Returns (x_t, noise, timesteps). Randomness comes only from `generator`, so a training step
    is reproducible from its seed.
    """
    b = x0.shape[0]
    if timesteps is None:
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    if noise is None:
        noise = frame_noise(x0.shape, generator, correlation)  # correlated across frames where asked
    timesteps, noise = timesteps.to(x0.device), noise.to(x0.device, x0.dtype)
    return scheduler.add_noise(x0, noise, timesteps), noise, timesteps


def diffusion_loss(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scheduler, x0: torch.Tensor,
                   generator: torch.Generator, prediction_type: str = "epsilon",
                   weight: torch.Tensor | None = None, weighting: str = "uniform",
                   noise_correlation: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between `denoise(x_t, t)` and the noise (or v) that made x_t.

    weight: optional per-element weights broadcast against x0 (e.g. zero on known frames).
    weighting: how timesteps weigh against each other (`timestep_weights`; epsilon only).
    noise_correlation: share of the noise common to a clip's frames (vidgen.diffusion.noise).
    noise: the noise itself (like x0), e.g. moving with the clip (vidgen.diffusion.flow_noise); None: drawn.
    """
    if weighting != "uniform" and prediction_type != "epsilon":
        raise ValueError(f"loss weighting {weighting!r} reweighs an epsilon objective; with {prediction_type} "
                         f"use 'uniform'")
    x_t, noise, timesteps = add_noise(scheduler, x0, generator, noise=noise, correlation=noise_correlation)
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(x0, noise, timesteps)
    else:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    error = (denoise(x_t, timesteps).float() - target.float()) ** 2
    per_sample = timestep_weights(scheduler, timesteps, weighting)
    if per_sample is not None:
        error = error * per_sample.view(-1, *[1] * (error.dim() - 1))
    if weight is None:
        return error.mean()
    weight = weight.expand_as(error).float()
    return (error * weight).sum() / weight.sum().clamp_min(1.0)


def vae_loss(reconstruction: torch.Tensor, target: torch.Tensor, kl: torch.Tensor, kl_weight: float) -> torch.Tensor:
    """Reconstruction (L1 + L2, as in the latent-diffusion autoencoders) plus a weighted KL term."""
    rec = F.l1_loss(reconstruction.float(), target.float()) + F.mse_loss(reconstruction.float(), target.float())
    return rec + kl_weight * kl.mean()
