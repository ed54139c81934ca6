"""The sr stage: video super-resolution from noise-augmented low-resolution latents
(Make-A-Video section 3.4)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from ...data.manifest import read_manifest
from ...data.latent_cache import build_latent_cache
from ...diffusion.losses import add_noise, diffusion_loss
from ...models import cascade
from ...models.inflate import inflate_unet
from ...models.vae import latent_factor
from .base import CascadeStage


class SuperResolutionStage(CascadeStage):
    """Video super-resolution (Make-A-Video section 3.4): clips at data.size, their low-resolution
    versions at data.size / model.sr_scale, noise-augmented at a random level the model is told.

    The network is the base video U-Net extended with the low-resolution input, or, when
    `model.unet` gives an architecture, a new one of that shape (at the larger size a lighter
    network, e.g. without attention at the top level, keeps sampling affordable).
    """

    stage_name = "sr"

    def use_latent_cache(self, folder: str, progress: bool = True) -> None:
        """Two caches of the corpus under `folder`: at data.size (the targets) and at data.size /
        model.sr_scale (the inputs, from the same antialiased downscaling as the uncached path)."""
        records = read_manifest(self.cfg.data.manifest)
        size, low = self.cfg.data.size, self.cfg.data.size // self.cfg.model.sr_scale
        self.latent_cache = build_latent_cache(records, self.vae, size, Path(folder) / f"{size}px", progress=progress)
        self.low_res_cache = build_latent_cache(records, self.vae, low, Path(folder) / f"{low}px", progress=progress)

    def clip_latents(self, batch, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(b c f h w) latents of the clips and (b c f h/s w/s) of their low-resolution versions."""
        if batch["latent_mean"] is not None:
            return (self.posterior_latents(batch["latent_mean"], batch["latent_std"], generator),
                    self.posterior_latents(batch["low_latent_mean"], batch["low_latent_std"], generator))
        video = batch["video"].to(self.device)  # (b c f H W)
        b, _, f, size, _ = video.shape
        low_size = size // self.cfg.model.sr_scale
        low = torch.nn.functional.interpolate(video.flatten(1, 2), size=(low_size, low_size), mode="bilinear",
                                              antialias=True, align_corners=False)  # (b 3*f h w): frames as channels
        low = low.view(b, 3, f, low_size, low_size)  # (b 3 f h w)
        return self.encode(video, generator), self.encode(low, generator)

    def build_unet(self, base):
        if self.cfg.model.unet:
            channels = base.unet.config.in_channels
            unet2d = UNet2DConditionModel(**{"in_channels": channels, "out_channels": channels,
                                             "sample_size": self.cfg.data.size // latent_factor(self.vae),
                                             **self.cfg.model.unet, "cross_attention_dim": self.text_encoder.hidden_size})
            base = inflate_unet(unet2d, **dataclasses.asdict(base.options))
        return cascade.super_resolution_unet(base)

    def record_settings(self, index):
        index.sr.scale = self.cfg.model.sr_scale

    def loss(self, model, batch, generator):
        x0, low_latents = self.clip_latents(batch, generator)  # (b c f h w), (b c f h/s w/s)
        b = x0.shape[0]
        scale = self.cfg.model.sr_scale
        levels = torch.randint(0, self.cfg.model.sr_max_noise_level + 1, (b,), generator=generator)
        low_latents, _, _ = add_noise(self.noise_schedule, low_latents, generator, timesteps=levels)
        low_up = cascade.upsample_latents(low_latents, scale)
        cond = self.conditioning(batch, generator)
        fps = batch["fps"].to(self.device)

        def denoise(x, t):
            return model(cascade.super_resolution_input(x, low_up), t, cond, fps=fps,
                         conditions={cascade.SR_CONDITION: levels.to(self.device)})

        return diffusion_loss(denoise, self.noise_schedule, x0, generator, self.cfg.model.prediction_type,
                              weighting=self.cfg.model.loss_weighting)
