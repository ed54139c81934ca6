"""The interp stage: masked frame interpolation and extrapolation (Make-A-Video section 3.3)."""

from __future__ import annotations

import torch

from ...diffusion.losses import diffusion_loss
from ...errors import VidgenError
from ...models import cascade
from .base import CascadeStage


class InterpolationStage(CascadeStage):
    """Masked frame interpolation and extrapolation (Make-A-Video section 3.3).

    Each clip hides all frames but every k-th (k drawn from 2..model.interp_factor); one clip in
    ten instead shows only its first frame (image animation) and one in ten its first half
    (extension). The loss is taken on the hidden frames.
    """

    stage_name = "interp"

    def build_unet(self, base):
        if self.cfg.model.interp_factor < 2:
            raise VidgenError(f"model.interp_factor must be at least 2, got {self.cfg.model.interp_factor}")
        return cascade.interpolation_unet(base)

    def record_settings(self, index):
        index.interp.factor = self.cfg.model.interp_factor
        index.interp.noise_correlation = self.cfg.model.frame_noise_correlation

    def masks(self, batch_size: int, frames: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, f) known-frame masks and (b,) frame skips."""
        skips = torch.randint(2, self.cfg.model.interp_factor + 1, (batch_size,), generator=generator)
        modes = torch.rand(batch_size, generator=generator)
        masks = torch.stack([cascade.keyframe_mask(frames, int(k)) for k in skips])  # (b f)
        masks[modes < 0.1] = torch.arange(frames) < 1  # animate the first frame
        masks[(modes >= 0.1) & (modes < 0.2)] = torch.arange(frames) < frames // 2  # extend the first half
        return masks, skips

    def loss(self, model, batch, generator):
        x0 = self.latents(batch, generator)  # (b c f h w)
        b, _, f, h, w = x0.shape
        cond = self.conditioning(batch, generator)
        masks, skips = self.masks(b, f, generator)
        mask = masks.to(self.device, x0.dtype).view(b, 1, f, 1, 1).expand(b, 1, f, h, w)  # (b 1 f h w)
        fps = batch["fps"].to(self.device)

        def denoise(x, t):
            return model(cascade.interpolation_input(x, x0, mask), t, cond, fps=fps,
                         conditions={cascade.INTERP_CONDITION: skips.to(self.device)})

        return diffusion_loss(denoise, self.noise_schedule, x0, generator, self.cfg.model.prediction_type,
                              weight=1.0 - mask, weighting=self.cfg.model.loss_weighting,
                              noise_correlation=self.cfg.model.frame_noise_correlation)
