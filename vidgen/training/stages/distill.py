"""The distill stage: the base stage taught to sample in fewer steps, one network call each.

The student starts as the model's base U-Net and the teacher is a frozen copy of it. Each
training clip is noised to a timestep of the student's K-step DDIM grid; the teacher takes two
guided DDIM steps from there and the student learns the single unguided step that lands in the
same place (vidgen.diffusion.distill). Run it again from its output with half the steps to halve
them again (progressive distillation). The exported model samples with `model.distill_steps`
steps and guidance 1 (the guidance is in the weights), which its vidgen.json records.

Config (`stage: distill`, e.g. configs/shapes/distill.yaml): `model.distill_steps` (K, the
student's steps), `model.distill_guidance` (the teacher's guidance scale w; 0: the model's own
default; 1: a teacher without guidance, for a model distilled already).
"""

from __future__ import annotations

import copy

import torch

from ...diffusion.distill import distillation_target, distillation_weights, student_grid
from ...diffusion.losses import add_noise
from ...errors import VidgenError
from .video import VideoStage


class DistillStage(VideoStage):
    """Progressive step distillation of the base stage, guidance folded in; see the module docstring."""

    def __init__(self, cfg, device):
        m = cfg.model
        if m.distill_steps < 1:
            raise VidgenError(f"model.distill_steps is the student's number of sampling steps: set it to at least 1, "
                              f"e.g. half the model's defaults.num_inference_steps; got {m.distill_steps}")
        if m.prediction_type != "epsilon" or m.image_conditioning:
            raise VidgenError("the distill stage distils an epsilon-prediction base stage without an anchor frame")
        super().__init__(cfg, device)
        self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.guidance = m.distill_guidance or self.video_model.index.defaults.guidance_scale
        if not self.guidance >= 1.0:
            raise VidgenError(f"model.distill_guidance must be 1 (no guidance) or more, got {self.guidance}")
        self.scheduler = self.video_model.scheduler  # the sampler's own grid and noise schedule
        self.grid, self.next = student_grid(self.scheduler, m.distill_steps)

    def guided_teacher(self, cond: torch.Tensor, null: torch.Tensor, fps: torch.Tensor):
        def teacher(x, t):
            if self.guidance == 1.0:
                return self.teacher(x, t, cond, fps=fps)
            both = self.teacher(torch.cat([x, x]), torch.cat([t, t]), torch.cat([null, cond]),
                                fps=torch.cat([fps, fps]))  # (2b ...): unconditional half first
            uncond, conditional = both.chunk(2)
            return uncond + self.guidance * (conditional - uncond)  # Ho & Salimans, eq. 6
        return teacher

    def loss(self, model, batch, generator):
        x0 = self.latents(batch, generator)  # (b c f h w)
        b = x0.shape[0]
        cond = self.conditioning(batch, generator)
        null = self.embed([""] * b)
        fps = batch["fps"].to(self.device)
        step = torch.randint(0, len(self.grid), (b,), generator=generator)
        t, s = self.grid[step], self.next[step]
        x_t, _, t = add_noise(self.scheduler, x0, generator, t, correlation=self.cfg.model.frame_noise_correlation)
        s = s.to(t.device)
        target = distillation_target(self.guided_teacher(cond, null, fps), self.scheduler, x_t, t, s)
        error = (model(x_t, t, cond, fps=fps).float() - target.float()) ** 2
        weights = distillation_weights(self.scheduler, t).to(error.device)
        return (error.flatten(1).mean(1) * weights).sum() / weights.sum()

    def record_settings(self, index):
        super().record_settings(index)
        index.defaults.num_inference_steps = self.cfg.model.distill_steps
        index.defaults.guidance_scale = 1.0  # folded into the weights
