"""The reward stage: the base stage fine-tuned so that the clips it draws move the way their
prompt says, as the arrow critic reads them.

Every captioned clip whose caption names a motion the critic reads gives a prompt (its caption)
and, for an anchored base, an anchor (its frame at the anchor's place). The base samples from
fresh noise under that prompt with guided DDIM, and the frozen critic reads the finished clip at
t = 0. The reward is the critic's margin (`motion_margin`: the arrow logit plus the caption's
score over its swaps'), counted only where it is positive and up to `model.reward_cap`: a clip the
critic reads as moving the asked way is pushed further that way, one it reads as wrong or still is
left alone (pushing those made every clip stop moving, docs/experiments.md). The gradient enters
through one network call, that of step k, drawn from the first `model.reward_steps` steps, where
the motion is decided, and is passed straight through from the finished clip to that step's
clean prediction (vidgen.diffusion.reward; after DRaFT, Clark et al. 2023, whose truncated
backpropagation runs through the last steps instead). Beside it, the plain denoising loss on the
whole batch (captions dropped and withheld as in the video stage) holds the model to the data.

Config (`stage: reward`, configs/shapes/reward.yaml): `model.reward_weight` (the reward against
the denoising loss, which has weight 1), `model.reward_steps`, `model.reward_sampling_steps` (0:
the starting model's steps), `model.reward_cap`; the guidance is the starting model's
(vidgen.json), with which it will be sampled.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ...diffusion.noise import frame_noise
from ...diffusion.reward import early_prediction
from ...errors import VidgenError
from ...models.critic import motion_margin, swaps
from .video import VideoStage


class RewardStage(VideoStage):
    """See the module docstring."""

    log_fields = ("reward",)

    def __init__(self, cfg, device):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # A process whose batch has no caption to reward skips the sampling, so the processes'
            # network calls would differ (a hang where weights are gathered per call).
            raise VidgenError("the reward stage trains on one process: launch it without --processes / accelerate")
        super().__init__(cfg, device)
        critic, m = self.video_model.critic, cfg.model
        if critic is None:
            raise VidgenError(f"the reward stage reads the base stage's clips with the arrow critic, and "
                              f"{m.pretrained} has none: train one first (stage: critic), or start from a model "
                              f"that has one")
        if m.prediction_type != "epsilon" or m.lora_rank:
            raise VidgenError("the reward stage fine-tunes an epsilon-prediction base stage in full: set "
                              "model.prediction_type=epsilon and model.lora_rank=0")
        defaults = self.video_model.index.defaults
        sampling_steps = m.reward_sampling_steps or defaults.num_inference_steps
        if m.reward_steps > sampling_steps:
            raise VidgenError(f"model.reward_steps={m.reward_steps} is more than the {sampling_steps} sampling steps "
                              f"the reward samples with: set it to at most that")
        self.critic = copy.deepcopy(critic).float().requires_grad_(False).to(device).eval()
        self.sampler = copy.deepcopy(self.video_model.scheduler)
        self.groups = critic.config.swap_words
        self.rewarded: list[float] = []  # rewards (mean counted margin) since the last log line

    def build_unet(self, base):
        """The base as it is: the reward stage adds no layer, and reads the anchor where the model has it."""
        m, index = self.cfg.model, self.video_model.index
        has_anchor = self.video_model.image_unet is not None
        if m.image_conditioning != has_anchor or (has_anchor and m.anchor_position != index.anchor.position):
            where = f"model.image_conditioning=true model.anchor_position={index.anchor.position}" if has_anchor \
                else "model.image_conditioning=false"
            raise VidgenError(f"the reward stage goes on training {m.pretrained}'s base stage as it is: set {where}")
        return super().build_unet(base)

    def _rewarded_rows(self, captions: list[str]) -> list[int]:
        """Clips whose caption the critic can read a motion from (a swap word, or any caption for an arrow-only critic)."""
        return [i for i, c in enumerate(captions) if c and (swaps(c, self.groups) if self.groups else True)]

    def loss(self, model, batch, generator):
        x0 = self.latents(batch, generator)  # (b c f h w)
        total = self.denoising_loss(model, batch, x0, generator)
        rows = self._rewarded_rows(batch["caption"])
        if not rows:
            return total
        m, defaults = self.cfg.model, self.video_model.index.defaults
        index = torch.tensor(rows, device=x0.device)
        clean, fps = x0[index], batch["fps"].to(self.device)[index]
        captions = [batch["caption"][i] for i in rows]
        cond = self.embed(captions)  # (r n d)
        uncond = self.embed([""] * len(rows))
        noise = frame_noise(clean.shape, generator, m.frame_noise_correlation).to(clean)  # (r c f h w)
        step = int(torch.randint(0, m.reward_steps, (1,), generator=generator))

        def denoise(x, t, c):
            return model(self.unet_input(x, clean), t, c, fps=fps)

        finished, _ = early_prediction(denoise, self.sampler, noise, cond, uncond, defaults.guidance_scale,
                                       m.reward_sampling_steps or defaults.num_inference_steps, step,
                                       finish=True)  # (r c f h w), the gradient through step `step`
        zero = torch.zeros(1, dtype=torch.long, device=x0.device)
        margin = motion_margin(self.critic, finished.float(), zero, cond.float(), captions, self.embed)  # (r,)
        reward = margin.clamp(0.0, m.reward_cap).mean()  # clips read as wrong or still: no push
        self.rewarded.append(float(reward.detach()))
        return total - m.reward_weight * reward

    def log_values(self):
        values, self.rewarded = self.rewarded, []
        return {"reward": float(np.mean(values))} if values else {}
