"""The reflow stage: the base stage retrained on (noise, sample) pairs of its own, captioned with
what each sample shows, so that it follows the words by itself in a few unguided steps.

Reflow (Liu et al. 2022, section 2.3): a generator retrained on the couplings (z, x) it draws
itself learns straighter paths from z to x, so few DDIM steps land where many did. The pairs were
sampled with guidance, and the student learns them under the prompt alone, so guidance is folded
into the weights as in guidance distillation (Meng et al. 2023): one network call per step. The
captions come from the judge and each noise is paired with a clip and its time reversal under
opposite direction words (vidgen.training.reflow_pairs), which makes the words decide the motion.

For a pair (z, x) at a uniformly drawn timestep t the network sees x_t = sqrt(a_t) x + sqrt(1-a_t) z
and learns to predict z; the error is weighted max(1, 1/SNR) (Salimans & Ho's truncated SNR,
vidgen.diffusion.distill.distillation_weights), so the high-noise steps, where the layout and the
direction are decided, count by the error of the clip they imply.

Config (`stage: reflow`, configs/shapes/reflow.yaml): `data.pairs` (the folder of `vidgen data
pairs`), `model.reflow_steps` (the steps the exported model samples with, recorded in vidgen.json
with guidance 1, one candidate and no arrow check).
"""

from __future__ import annotations

import torch

from ...diffusion.distill import distillation_weights
from ...diffusion.losses import add_noise
from ...errors import VidgenError
from ..reflow_pairs import PairDataset
from .base import CascadeStage


class ReflowStage(CascadeStage):
    """See the module docstring."""

    def __init__(self, cfg, device):
        m = cfg.model
        if not cfg.data.pairs:
            raise VidgenError("the reflow stage trains on pairs: set data.pairs to a folder written by "
                              "`vidgen data pairs --model MODEL --out FOLDER`")
        if m.reflow_steps < 1:
            raise VidgenError(f"model.reflow_steps is the exported model's number of sampling steps: set it to at "
                              f"least 1 (e.g. 4); got {m.reflow_steps}")
        if m.prediction_type != "epsilon" or m.image_conditioning:
            raise VidgenError("the reflow stage retrains an epsilon-prediction base stage without an anchor frame")
        super().__init__(cfg, device)
        self.scheduler = self.video_model.scheduler

    def dataset(self) -> PairDataset:
        return PairDataset(self.cfg.data.pairs)

    def use_latent_cache(self, folder: str, progress: bool = True) -> None:
        raise VidgenError("the reflow stage reads latents from its pairs: leave data.latent_cache empty")

    def loss(self, model, batch, generator):
        x0 = batch["latent_mean"].to(self.device)  # (b c f h w): the sample
        z = batch["noise"].to(self.device)  # (b c f h w): the noise it was sampled from
        cond = self.embed(batch["caption"])  # no caption dropout: sampled with guidance 1
        fps = batch["fps"].to(self.device)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator)
        x_t, z, t = add_noise(self.scheduler, x0, generator, t, noise=z)
        error = (model(x_t, t, cond, fps=fps).float() - z.float()) ** 2
        weights = distillation_weights(self.scheduler, t).to(error.device)
        return (error.flatten(1).mean(1) * weights).sum() / weights.sum()

    def record_settings(self, index):
        d = index.defaults
        d.num_inference_steps, d.guidance_scale = self.cfg.model.reflow_steps, 1.0
        d.candidates, d.arrow_check, d.motion_guidance = 1, False, 0.0
