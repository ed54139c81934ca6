"""Diffusion-DPO (Wallace et al. 2023): preference fine-tuning of a denoiser against a frozen copy.

For a preferred sample x_w and a rejected one x_l of the same prompt, both noised at the same
timestep, the objective (their eq. 14, with the per-sample mean squared error as the diffusion
"likelihood" and the constant T*omega(lambda_t) folded into beta) is

    L = -log sigmoid( -beta/2 * [ (e_w - e_w_ref) - (e_l - e_l_ref) ] ),
    e = || eps - eps_theta(x_t, t, c) ||^2  (mean over the sample's elements),

so the policy is pushed to denoise the preferred sample better than the reference does, relative
to how it denoises the rejected one, and is held near the reference by the same term (the
implicit KL of DPO, Rafailov et al. 2023). Shape-free like the other losses: images or clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .losses import add_noise

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, timesteps) -> eps prediction


@dataclass(frozen=True)
class PreferenceStats:
    """What a DPO step measured: the loss, and the share of pairs the policy already ranks right
    (its preferred sample denoised better than the rejected one, relative to the reference)."""

    loss: torch.Tensor
    accuracy: float
    margin: float  # mean of -[(e_w - e_w_ref) - (e_l - e_l_ref)]: positive when the policy prefers x_w


def _per_sample_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((prediction.float() - target.float()) ** 2).flatten(1).mean(1)  # (b,)


def diffusion_dpo_loss(policy: Denoise, reference: Denoise, scheduler, x_win: torch.Tensor, x_lose: torch.Tensor,
                       generator: torch.Generator, beta: float, noise_correlation: float = 0.0,
                       min_timestep: int = 0, pair_noise: Callable[[torch.Tensor], torch.Tensor] | None = None
                       ) -> PreferenceStats:
    """The Diffusion-DPO loss of pairs (x_win[i], x_lose[i]) of epsilon-prediction latents.

    Both samples of a pair share the timestep (drawn uniformly from [min_timestep, T)) and the
    noise; `pair_noise` maps the preferred sample's noise to the rejected one's (e.g. a clip's
    time reversal reversed with it, so that the two noisy inputs are exact mirrors).
    """
    if x_win.shape != x_lose.shape:
        raise ValueError(f"preferred and rejected samples must have one shape, got {x_win.shape} and {x_lose.shape}")
    b, total = x_win.shape[0], scheduler.config.num_train_timesteps
    if not 0 <= min_timestep < total:
        raise ValueError(f"min_timestep must be in [0, {total}), got {min_timestep}")
    timesteps = torch.randint(min_timestep, total, (b,), generator=generator)
    win_t, noise, timesteps = add_noise(scheduler, x_win, generator, timesteps, correlation=noise_correlation)
    lose_noise = pair_noise(noise) if pair_noise is not None else noise
    lose_t, lose_noise, _ = add_noise(scheduler, x_lose, generator, timesteps, noise=lose_noise)
    x_t = torch.cat([win_t, lose_t])  # (2b ...): the preferred half first
    t = torch.cat([timesteps, timesteps])
    target = torch.cat([noise, lose_noise])
    errors = _per_sample_error(policy(x_t, t), target)  # (2b,)
    with torch.no_grad():
        ref_errors = _per_sample_error(reference(x_t, t), target)
    policy_gap = errors[:b] - errors[b:]  # (b,): below zero where x_win is denoised better
    reference_gap = ref_errors[:b] - ref_errors[b:]
    inside = -0.5 * beta * (policy_gap - reference_gap)
    loss = -F.logsigmoid(inside).mean()
    inside = inside.detach()
    return PreferenceStats(loss, float((inside > 0).float().mean()), float((reference_gap - policy_gap.detach()).mean()))
