"""The preference stage: the base stage fine-tuned to prefer clips that move the way their prompt says.

In a world symmetric in time (docs/shapes-world.md: one object at constant velocity), a captioned
clip played backwards is a clip of the opposite motion, so every clip whose caption names a
motion word gives a preference pair for free: the clip (preferred) and its time reversal
(rejected), under the clip's own caption. The denoiser is trained on these pairs with the
Diffusion-DPO objective (vidgen.diffusion.preference) against a frozen copy of the model it starts
from, both samples noised with mirrored noise so the two inputs differ only in time's arrow. What
was a 2 % term of the denoising loss (docs/experiments.md, "Why direction stays near chance")
becomes the whole of this objective.

Config (`stage: preference`, e.g. configs/shapes/preference.yaml): `data.time_reverse` names the
motion words and their opposites (required: it says which captions make pairs);
`model.preference_beta` the DPO strength; `model.preference_sft` the weight of the plain
denoising loss on every clip of the batch beside it (0: DPO alone); `model.preference_min_timestep`
the lowest timestep a pair is noised to (the direction is decided at high noise).
"""

from __future__ import annotations

import copy

import torch

from ...data.dataset import TimeReversal
from ...diffusion.losses import diffusion_loss
from ...diffusion.preference import diffusion_dpo_loss
from ...errors import VidgenError
from .video import VideoStage


def reverse_in_time(x: torch.Tensor) -> torch.Tensor:
    return x.flip(2)  # (b c f h w): f reversed


class PreferenceStage(VideoStage):
    """DPO on (clip, clip played backwards) under the clip's caption; see the module docstring."""

    reverses_in_data = False  # the pairs play clips backwards themselves

    def __init__(self, cfg, device):
        if not cfg.data.time_reverse:
            raise VidgenError("the preference stage makes its pairs by playing captioned clips backwards: set "
                              "data.time_reverse to the motion words and their opposites, e.g. "
                              "\"data.time_reverse={left: right, right: left, up: down, down: up}\"")
        if cfg.model.image_conditioning:
            raise VidgenError("the preference stage trains a base stage without an anchor frame: set "
                              "model.image_conditioning=false")
        super().__init__(cfg, device)
        self.motion_words = TimeReversal(dict(cfg.data.time_reverse))
        self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)  # the policy's start, frozen
        self.last_stats = None

    def loss(self, model, batch, generator):
        x0 = self.latents(batch, generator)  # (b c f h w)
        fps = batch["fps"].to(self.device)
        paired = [i for i, caption in enumerate(batch["caption"]) if self.motion_words.applies(caption)]
        total = x0.new_zeros(())
        if paired:
            index = torch.tensor(paired, device=x0.device)
            cond = self.embed([batch["caption"][i] for i in paired])
            cond2, fps2 = torch.cat([cond, cond]), torch.cat([fps[index], fps[index]])  # preferred, then rejected
            win = x0[index]
            stats = diffusion_dpo_loss(
                lambda x, t: model(x, t, cond2, fps=fps2), lambda x, t: self.reference(x, t, cond2, fps=fps2),
                self.noise_schedule, win, reverse_in_time(win), generator, beta=self.cfg.model.preference_beta,
                noise_correlation=self.cfg.model.frame_noise_correlation,
                min_timestep=self.cfg.model.preference_min_timestep, pair_noise=reverse_in_time)
            total = total + stats.loss
            self.last_stats = stats
        if self.cfg.model.preference_sft > 0:
            cond = self.conditioning(batch, generator)
            total = total + self.cfg.model.preference_sft * diffusion_loss(
                lambda x, t: model(x, t, cond, fps=fps), self.noise_schedule, x0, generator,
                self.cfg.model.prediction_type, noise_correlation=self.cfg.model.frame_noise_correlation)
        if not paired and self.cfg.model.preference_sft <= 0:
            total = total + 0.0 * sum(p.sum() for p in model.parameters() if p.requires_grad)  # no pair: no update
        return total
