"""The vae stage: an AutoencoderKL trained on single frames, reconstruction + KL (the latent
space every diffusion stage works in)."""

from __future__ import annotations

import copy

import torch
from diffusers import AutoencoderKL
from torch import nn

from ...diffusion.losses import vae_loss
from ...fs import atomic_dir
from ...weights import load_diffusers
from .base import Stage


class AutoencoderWithKL(nn.Module):
    """AutoencoderKL whose forward returns what the loss needs: reconstruction, KL, latents."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor, generator: torch.Generator):
        posterior = self.vae.encode(images).latent_dist
        z = posterior.sample(generator)
        return self.vae.decode(z).sample, posterior.kl(), z


class VaeStage(Stage):
    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        m = cfg.model
        vae = load_diffusers(AutoencoderKL, m.pretrained) if m.pretrained else AutoencoderKL(**m.autoencoder)
        self.model = AutoencoderWithKL(vae.to(device))
        self.latent_std = None  # running estimate, becomes the exported scaling factor

    def loss(self, model, batch, generator):
        images = batch["video"][:, :, 0].to(self.device)  # (b c 1 h w) -> (b c h w)
        reconstruction, kl, z = model(images, generator)
        std = z.detach().float().std().item()
        self.latent_std = std if self.latent_std is None else 0.99 * self.latent_std + 0.01 * std
        return vae_loss(reconstruction, images, kl, self.cfg.model.kl_weight)

    def export(self, model, folder):
        vae = copy.deepcopy(model.vae).cpu()
        if self.latent_std:  # latents scaled to unit variance, as the diffusion stages expect (LDM section 4.3.2)
            vae.register_to_config(scaling_factor=round(1.0 / self.latent_std, 5))
        with atomic_dir(folder) as tmp:
            vae.save_pretrained(tmp)
