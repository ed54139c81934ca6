"""The base stage's initial noise for one call, and how far the motion words move each keyframe.

Still noise has the model's frame noise prior (vidgen.diffusion.noise); with `motion_noise` its
shared part moves as each row's prompt's motion words say, or by displacements given (a continued
window's, vidgen.media.long_clips), after Go-with-the-Flow (vidgen.diffusion.flow_noise).
"""

from __future__ import annotations

import torch

from .diffusion.flow_noise import moving_noise, word_shifts
from .diffusion.noise import frame_noise
from .models.vae import latent_factor


def latent_shape(model, settings, batch: int) -> tuple[int, ...]:
    """(b c f h w) of the base stage's latents for `settings` (GenerationDefaults)."""
    k = latent_factor(model.vae)
    return (batch, model.vae.config.latent_channels, settings.num_frames, settings.height // k, settings.width // k)


def keyframe_shifts(model, settings, prompts: list[str]) -> torch.Tensor:
    """(b f 2) each keyframe's displacement from the first, in latent cells, as the prompts' motion
    words say (zeros for a prompt without one)."""
    side = latent_shape(model, settings, 1)[-2:]
    return word_shifts(prompts, model.index.motion_words, settings.num_frames, settings.fps, side)


def initial_noise(model, call, batch: int, prompts: list[str] | None = None,
                  shifts: torch.Tensor | None = None) -> torch.Tensor:
    """(b c f h w) noise on `call.device`, drawn with `call.generator`: moving where the settings ask
    for motion noise and prompts or shifts (b f 2) are given, still otherwise."""
    s, correlation = call.settings, model.index.frame_noise_correlation
    shape = latent_shape(model, s, batch)
    if s.motion_noise and (prompts is not None or shifts is not None):
        shifts = keyframe_shifts(model, s, prompts) if shifts is None else shifts
        return moving_noise(shape, call.generator, correlation, shifts).to(call.device)
    return frame_noise(shape, call.generator, correlation).to(call.device)
