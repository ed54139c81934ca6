"""Reward gradients at the steps where a clip's layout and motion are decided.

DRaFT (Clark et al. 2023) fine-tunes a diffusion model by backpropagating a differentiable reward
of its samples through the last K sampling steps. Here the reward is the arrow critic's reading
of a clip's motion (vidgen.models.critic), and what it must change is decided at the other end
of the chain: the first steps of the base stage fix where the object goes (the early choice of
issue 38 keeps a candidate after 4 of 13 steps with nearly the verdicts of the finished clips).
So the sampler runs k guided DDIM steps without a gradient, and the reward reads the clean clip
x0 that step k's guided prediction implies (DDIM's pred_original_sample, Song et al. 2021 eq. 12),
with the gradient through that one network call (DRaFT-1's truncation, moved to the first steps).

Only the conditional branch of classifier-free guidance carries the gradient; the unconditional
one is computed without it, as the reference the guidance extrapolates from.
"""

from __future__ import annotations

from typing import Callable

import torch

from .sampler import predicted_clean

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t (b,), cond) -> eps


def _guided(denoise: Denoiser, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
            guidance_scale: float, grad: bool) -> torch.Tensor:
    """eps_null + w (eps_c - eps_null) (Ho & Salimans eq. 6), the gradient through eps_c where grad."""
    steps = t.expand(x.shape[0])
    with torch.no_grad():
        unconditional = denoise(x, steps, uncond)
        if not grad:
            conditional = denoise(x, steps, cond)
    if grad:
        conditional = denoise(x, steps, cond)
    return unconditional + guidance_scale * (conditional - unconditional)


def early_prediction(denoise: Denoiser, scheduler, noise: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
                     guidance_scale: float, num_inference_steps: int, step: int,
                     finish: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean sample (b c f h w) that guided DDIM predicts at its step `step` (0: the first) from
    `noise`, differentiable through that step's conditional network call; and that step's timestep.
    The scheduler (a DDIM one) is set to num_inference_steps here.

    finish: the rest of the steps are run too (without a gradient), and what is returned is the
    finished sample, carrying step `step`'s prediction's gradient as a straight-through estimate
    (finished + x0_k - stop_gradient(x0_k)): the reward then reads the clip the sampler really
    makes, and a change of the early prediction is taken to move the finished clip alike (the
    layout and motion it sets are the finished clip's)."""
    scheduler.set_timesteps(num_inference_steps, device=noise.device)
    if not 0 <= step < len(scheduler.timesteps):
        raise ValueError(f"step must be in [0, {len(scheduler.timesteps)}), got {step}")
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps[:step]:  # the steps before: no gradient
        eps = _guided(denoise, x, t, cond, uncond, guidance_scale, grad=False)
        x = scheduler.step(eps, t, x).prev_sample
    t = scheduler.timesteps[step]
    eps = _guided(denoise, x, t, cond, uncond, guidance_scale, grad=True)
    predicted = predicted_clean(scheduler, eps, x, t)
    if not finish:
        return predicted, t
    x = scheduler.step(eps.detach(), t, x).prev_sample
    for later in scheduler.timesteps[step + 1:]:
        x = scheduler.step(_guided(denoise, x, later, cond, uncond, guidance_scale, grad=False), later, x).prev_sample
    return x + predicted - predicted.detach(), t
