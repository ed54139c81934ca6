"""Guided sampling: one loop for every stage of the cascade, over latents of any shape.

Make-A-Video samples each of its networks with classifier-free guidance (Ho & Salimans 2022):
the model is run with and without the condition and the two predictions are extrapolated,

    eps = eps(x, t, null) + w * (eps(x, t, c) - eps(x, t, null))       (Ho & Salimans, eq. 6)

where the null condition is the empty prompt, or a negative prompt in its place. Both branches
run in one batch. The update rule is a diffusers scheduler's `step` (DDIM, Song et al. 2021, by
default): its math broadcasts over any rank, so video latents (b, c, f, h, w) are never reshaped
here. The model is only a callable `denoise(x, t, cond) -> prediction`.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..errors import VidgenError

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, torch.Tensor, torch.Tensor], None]  # (step index, timestep, latents)
Guide = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> grad of log p(y | x_t) w.r.t. x_t
Prune = tuple[int, Callable[[torch.Tensor], torch.Tensor]]  # (after k steps, select(x0 estimate) -> rows kept)


def classifier_guidance(scheduler, prediction: torch.Tensor, gradient: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The prediction shifted by a classifier's gradient g = grad log p(y | x_t), at timestep t.

    In noise terms this is eps - sqrt(1 - alpha_bar_t) * g (Dhariwal & Nichol 2021, eq. 14): the
    score of p(x_t | y) is the model's score plus g. The same shift written for the other
    prediction types: v = (eps - sqrt(1 - alpha_bar) x_t) / sqrt(alpha_bar), so v moves by the
    eps shift over sqrt(alpha_bar); x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar).
    """
    if not hasattr(scheduler, "alphas_cumprod"):
        raise VidgenError(f"classifier guidance needs a scheduler with a noise schedule (alphas_cumprod); "
                          f"{type(scheduler).__name__} has none: use the DDIM scheduler, or turn the guidance off "
                          f"(e.g. --motion-guidance 0)")
    alpha_bar = scheduler.alphas_cumprod[int(t)].to(prediction.device, prediction.dtype)
    eps_shift = -(1 - alpha_bar) ** 0.5 * gradient
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return prediction + eps_shift
    if kind == "v_prediction":
        return prediction + eps_shift / alpha_bar ** 0.5
    if kind == "sample":
        return prediction - (1 - alpha_bar) ** 0.5 * eps_shift / alpha_bar ** 0.5
    raise VidgenError(f"classifier guidance does not know the prediction type {kind!r}")


def predicted_clean(scheduler, prediction: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The clean sample x0 a prediction of the scheduler's type implies at x_t, timestep t."""
    alpha_bar = scheduler.alphas_cumprod[int(t)].to(x_t.device, x_t.dtype)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (x_t - (1 - alpha_bar) ** 0.5 * prediction) / alpha_bar ** 0.5
    if kind == "v_prediction":
        return alpha_bar ** 0.5 * x_t - (1 - alpha_bar) ** 0.5 * prediction
    if kind == "sample":
        return prediction
    raise VidgenError(f"the clean sample of prediction type {kind!r} is not known")


def reconstruction_gradient(denoise: Denoiser, scheduler, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                            known: tuple[torch.Tensor, torch.Tensor],
                            weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction guidance (Ho et al. 2022, "Video Diffusion Models", eq. 7) as a classifier
    gradient for `classifier_guidance`: grad log p(x^a | x_t), with p(x^a | x_t) taken as a normal
    around the network's clean estimate of the known part, variance (1 - alpha_bar) / alpha_bar,
    sharpened by `weight` (their w_r). Only the unknown entries get it (the known ones are replaced).
    x_t: the latents the network reads (b ...); known: (values, mask) broadcast to them.
    Returns (the conditional prediction it was read from, the gradient): the sampler uses the
    prediction as the step's conditional branch instead of computing it again."""
    values, mask = known
    alpha_bar = float(scheduler.alphas_cumprod[int(t)])
    with torch.inference_mode(False), torch.enable_grad():
        x = x_t.clone().requires_grad_()
        prediction = denoise(scheduler.scale_model_input(x, t), t, cond.clone())
        error = (mask.clone() * (predicted_clean(scheduler, prediction, x, t) - values.clone())).square().sum()
        gradient, = torch.autograd.grad(error, x)
    return prediction.detach(), (-weight * alpha_bar / (2 * (1 - alpha_bar))) * (1 - mask) * gradient


def prediction_for_clean(scheduler, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The prediction of the scheduler's type that implies the clean sample x0 at x_t, timestep t
    (the inverse of `predicted_clean`): eps = (x_t - sqrt(alpha_bar) x0) / sqrt(1 - alpha_bar)."""
    alpha_bar = scheduler.alphas_cumprod[int(t)].to(x_t.device, x_t.dtype)
    kind = scheduler.config.prediction_type
    eps = (x_t - alpha_bar ** 0.5 * x0) / (1 - alpha_bar) ** 0.5
    if kind == "epsilon":
        return eps
    if kind == "v_prediction":
        return alpha_bar ** 0.5 * eps - (1 - alpha_bar) ** 0.5 * x0
    if kind == "sample":
        return x0
    raise VidgenError(f"the prediction of type {kind!r} for a clean sample is not known")


def _step_kwargs(scheduler, eta: float, generator: torch.Generator | None) -> dict:
    """The extra arguments `scheduler.step` takes: eta (DDIM) and a generator (stochastic samplers)."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    elif eta != 0:
        raise VidgenError(f"eta={eta} is a DDIM setting and {type(scheduler).__name__} has none: leave eta at 0 "
                          f"or use the DDIM scheduler")
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def steps_run(num_timesteps: int, strength: float = 1.0) -> int:
    """How many of a schedule's `num_timesteps` steps `sample` runs at `strength` (its last ones)."""
    return num_timesteps if strength >= 1.0 else max(1, round(strength * num_timesteps))


def sample(
    denoise: Denoiser,
    scheduler,
    noise: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None = None,
    guidance_scale: float = 7.5,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    desc: str = "sampling",
    start: torch.Tensor | None = None,
    strength: float = 1.0,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    guide: Guide | None = None,
    prune: Prune | None = None,
    reconstruction: float = 0.0,
    guidance_interval: tuple[int, int] | None = None,
    clean_edit: tuple[int, Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> torch.Tensor:
    """Denoise `noise` (standard normal, any shape with the batch first) into a sample.

    cond / uncond: conditioning batches for `denoise` (batch first, same shape); uncond is the
    null or negative-prompt conditioning. Guidance runs when uncond is given and
    guidance_scale != 1; otherwise only the conditional branch runs.
    eta: DDIM's noise level (0: deterministic DDIM, 1: DDPM-like). generator: the randomness
    of stochastic steps. callback(i, t, latents) runs after every step.
    start, strength: run only the last `strength` of the schedule, from `start` noised with `noise`
    to the first timestep run (SDEdit, Meng et al. 2022); strength 1 starts from the noise alone.
    known: (values, mask), mask 1 where the sample is known to be `values` (broadcast to the
    latents' shape). Before every step those entries are set to `values` noised with `noise` to
    that step's level, so the network sees the known part as it saw it in training and fills in
    the rest to agree with it (the replacement method, Ho et al. 2022, "Video Diffusion Models",
    section 3.1); the last step's output keeps what the network made of them. reconstruction > 0
    also steers the unknown part by the gradient of the known part's reconstruction error
    (`reconstruction_gradient`, their eq. 7, w_r = reconstruction): the conditional branch then
    runs apart from the unconditional one, with a backward pass.
    guide(x_t, t): the gradient of a classifier's log-probability at the model's input, added to
    the guided prediction at every step (`classifier_guidance`).
    guidance_interval: (first, stop): classifier-free guidance runs at steps first..stop-1 of the
    whole schedule (counted from 0, the steps a strength below 1 leaves out counted too: the
    interval is one of noise levels) and the other steps call the conditional branch alone, one network
    call instead of two (guidance in a limited interval, Kynkaanniemi et al. 2024); None: every step.
    clean_edit: (k, edit): at the steps of the whole schedule before k (counted as for the
    guidance interval), edit(x0) replaces the clean sample the guided prediction implies, and the
    step goes on from it (`prediction_for_clean`).
    prune: (k, select): after k steps, select(x0) gets the clean samples those steps predict (the
    scheduler's pred_original_sample, batch first) and returns the rows to go on with; the other
    rows' remaining steps are not run, and the result holds the kept rows in that order.
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if strength < 1.0 and start is None:
        raise ValueError("a strength below 1 needs the `start` latents to noise")
    if reconstruction > 0 and known is not None and float(getattr(scheduler, "init_noise_sigma", 1.0)) != 1.0:
        raise VidgenError(f"reconstruction guidance reads latents as sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise, "
                          f"and {type(scheduler).__name__} scales them otherwise: use --scheduler ddim (or dpm++, "
                          f"unipc, pndm, ddpm), or --reconstruction-guidance 0")
    if clean_edit is not None and float(getattr(scheduler, "init_noise_sigma", 1.0)) != 1.0:
        raise VidgenError(f"editing the clean sample (motion projection) reads latents as sqrt(alpha_bar) x0 + "
                          f"sqrt(1 - alpha_bar) noise, and {type(scheduler).__name__} scales them otherwise: use "
                          f"--scheduler ddim (or dpm++, unipc, pndm, ddpm), or --motion-projection 0")
    guided = uncond is not None and guidance_scale != 1.0
    if guided and uncond.shape != cond.shape:
        raise ValueError(f"cond {tuple(cond.shape)} and uncond {tuple(uncond.shape)} must have the same shape")
    step_kwargs = _step_kwargs(scheduler, eta, generator)
    both = torch.cat([uncond, cond]) if guided else cond
    scheduler.set_timesteps(num_inference_steps, device=noise.device)
    timesteps = scheduler.timesteps
    skipped = len(timesteps) - steps_run(len(timesteps), strength)  # the highest-noise steps SDEdit leaves out
    if strength < 1.0:
        timesteps = timesteps[skipped:]
        if hasattr(scheduler, "set_begin_index"):  # schedulers that count their own steps (DPM-Solver, Euler)
            scheduler.set_begin_index(len(scheduler.timesteps) - len(timesteps))
        latents = scheduler.add_noise(start, noise, timesteps[:1].expand(noise.shape[0]))
    else:
        latents = noise * scheduler.init_noise_sigma
    for i, t in enumerate(tqdm(timesteps, desc=desc, disable=not progress, leave=False)):
        if known is not None:
            values, mask = known
            noised = scheduler.add_noise(values.expand_as(latents), noise, t.expand(noise.shape[0]))
            latents = mask * noised + (1 - mask) * latents
        steering = None
        at = i + skipped  # the step's place in the whole schedule
        guided_now = guided and (guidance_interval is None or guidance_interval[0] <= at < guidance_interval[1])
        if reconstruction > 0 and known is not None:  # its pass with the gradient is the conditional branch
            pred_cond, steering = reconstruction_gradient(denoise, scheduler, latents, t, cond, known, reconstruction)
            pred_uncond = denoise(scheduler.scale_model_input(latents, t), t, uncond) if guided_now else None
        else:
            x = torch.cat([latents, latents]) if guided_now else latents  # both branches in one batch
            prediction = denoise(scheduler.scale_model_input(x, t), t, both if guided_now else cond)
            pred_uncond, pred_cond = prediction.chunk(2) if guided_now else (None, prediction)
        prediction = pred_uncond + guidance_scale * (pred_cond - pred_uncond) if guided_now else pred_cond
        if guide is not None:
            gradient = guide(scheduler.scale_model_input(latents, t), t)  # at the input the model reads
            prediction = classifier_guidance(scheduler, prediction, gradient, t)
        if steering is not None:
            prediction = classifier_guidance(scheduler, prediction, steering, t)
        if clean_edit is not None and at < clean_edit[0]:
            x0 = clean_edit[1](predicted_clean(scheduler, prediction, latents, t))
            prediction = prediction_for_clean(scheduler, x0, latents, t)
        stepped = scheduler.step(prediction, t, latents, **step_kwargs)
        latents = stepped.prev_sample
        if prune is not None and i + 1 == prune[0]:
            rows = _kept_rows(prune[1], stepped, scheduler)
            batch = latents.shape[0]
            latents, noise, cond = latents[rows], noise[rows], cond[rows]
            uncond = uncond[rows] if uncond is not None else None
            if known is not None:  # (values, mask): per row where they have the batch's rows
                known = tuple(k[rows] if k.shape[0] == batch else k for k in known)
            both = torch.cat([uncond, cond]) if guided else cond
        if callback is not None:
            callback(i, t, latents)
    return latents


def _kept_rows(select: Callable[[torch.Tensor], torch.Tensor], stepped, scheduler) -> torch.Tensor:
    x0 = getattr(stepped, "pred_original_sample", None)
    if x0 is None:
        raise VidgenError(f"{type(scheduler).__name__} does not report the clean sample its step predicts, which a "
                          f"choice during sampling reads: use the DDIM scheduler, or choose after the last step")
    return select(x0)
