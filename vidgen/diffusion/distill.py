"""Progressive step distillation with guidance folded in (Salimans & Ho 2022; Meng et al. 2023).

A student sampled with K deterministic DDIM steps and no guidance learns, step by step, to land
where its teacher lands in 2K guided steps: from x_t the teacher takes two DDIM steps, t -> m -> s
(m halfway), each with classifier-free guidance at scale w (two network calls), and the student
is taught the one noise prediction that makes a single DDIM step t -> s arrive at the same x_s
(Salimans & Ho, Algorithm 2, written for an epsilon model). Folding the guidance in (Meng et al.,
stage one) halves the calls again: the student is called once per step, on the prompt alone.

DDIM with eta = 0, in alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t):

    x_s = alpha_s * x0_hat + sigma_s * eps,   x0_hat = (x_t - sigma_t * eps) / alpha_t        (Song et al., eq. 12)

so the eps that takes x_t to a given x_s in one step is

    eps = (x_s - (alpha_s / alpha_t) x_t) / (sigma_s - alpha_s * sigma_t / alpha_t).

Shape-free: every per-sample quantity broadcasts over the trailing dimensions (images or clips).
"""

from __future__ import annotations

from typing import Callable

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, timesteps (b,)) -> eps


def alpha_bars(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """alpha_bar at each timestep; a negative timestep (past the last step) is the scheduler's final one."""
    table = scheduler.alphas_cumprod.to(torch.float64)
    final = torch.as_tensor(getattr(scheduler, "final_alpha_cumprod", table[0]), dtype=torch.float64)
    t = timesteps.to("cpu").long()
    return torch.where(t >= 0, table[t.clamp_min(0)], final)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device, torch.float32).view(-1, *[1] * (like.dim() - 1))  # (b 1 1 ...)


def ddim_step(scheduler, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step from timesteps t to s (per sample)."""
    a_t, a_s = alpha_bars(scheduler, t), alpha_bars(scheduler, s)
    alpha_t, sigma_t = _per_sample(a_t.sqrt(), x_t), _per_sample((1 - a_t).sqrt(), x_t)
    alpha_s, sigma_s = _per_sample(a_s.sqrt(), x_t), _per_sample((1 - a_s).sqrt(), x_t)
    x0 = (x_t - sigma_t * eps) / alpha_t
    return alpha_s * x0 + sigma_s * eps


def eps_between(scheduler, x_t: torch.Tensor, x_s: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The noise prediction that makes one DDIM step from (x_t, t) arrive at (x_s, s)."""
    a_t, a_s = alpha_bars(scheduler, t), alpha_bars(scheduler, s)
    alpha_t, sigma_t = _per_sample(a_t.sqrt(), x_t), _per_sample((1 - a_t).sqrt(), x_t)
    alpha_s, sigma_s = _per_sample(a_s.sqrt(), x_t), _per_sample((1 - a_s).sqrt(), x_t)
    return (x_s - alpha_s / alpha_t * x_t) / (sigma_s - alpha_s * sigma_t / alpha_t)


def student_grid(scheduler, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, s): the timesteps a `steps`-step DDIM sampler visits and the one each steps to (-1: the end)."""
    scheduler.set_timesteps(steps)
    grid = scheduler.timesteps.to("cpu").long()  # descending
    return grid, torch.cat([grid[1:], grid.new_tensor([-1])])


def distillation_target(teacher: Denoise, scheduler, x_t: torch.Tensor, t: torch.Tensor,
                        s: torch.Tensor) -> torch.Tensor:
    """The eps a one-step student needs at (x_t, t) to land where two teacher steps t -> m -> s do."""
    m = torch.where(s >= 0, (t + s) // 2, t // 2)  # halfway; the last step's end is the clean sample
    with torch.no_grad():
        first = teacher(x_t, t)
        x_m = ddim_step(scheduler, x_t, first, t, m)
        x_s = ddim_step(scheduler, x_m, teacher(x_m, m), m, s)
        # A step between equal noise levels (t = 0 to the end, where the schedule's final alpha_bar
        # is alpha_bar_0) leaves x_t as it is whatever eps says: there the teacher's own eps is taught.
        same = _per_sample((alpha_bars(scheduler, t) - alpha_bars(scheduler, s)).abs() < 1e-9, x_t) > 0  # (b 1 ...)
        return torch.where(same, first, eps_between(scheduler, x_t, x_s, t, s))  # 0/0 there is not taken


def distillation_weights(scheduler, t: torch.Tensor) -> torch.Tensor:
    """Per-sample weights of the eps error: max(SNR, 1) on the x0 error (Salimans & Ho, "truncated
    SNR"), which in eps terms is max(1, 1 / SNR): high-noise steps, where the layout is set, count."""
    a = alpha_bars(scheduler, t)
    return torch.clamp((1 - a) / a, min=1.0).float()  # (b,)
