"""What each stage of the cascade trains, on what, with which loss, and what it exports.

A stage hands the training loop (vidgen.training.loop) four things: `model` (the module the
optimizer updates: only its parameters with requires_grad), `dataset()`, `loss(model, batch,
generator)`, and `export(model, folder)`; `preview` is optional. The loop calls the model
only through its `forward`, so data-parallel training (DDP) sees every call.

- vae:    AutoencoderKL on single frames: reconstruction + KL (vae.py).
- image:  the spatial text-to-image U-Net on (frame, caption) pairs; exports a diffusers
          text-to-image folder that `vidgen inflate` takes (image.py).
- video:  the temporal layers of an inflated U-Net on clips (Make-A-Video section 3.2; video.py).
- interp: masked frame interpolation (section 3.3; interp.py); see vidgen.models.cascade.
- sr:     video super-resolution (section 3.4; sr.py); see vidgen.models.cascade.
- critic: the arrow critic that guides the base stage's motion at sampling (vidgen.models.critic),
          on the captioned clips alone (critic.py).
- preference: the base stage fine-tuned with Diffusion-DPO on (clip, clip played backwards)
          pairs under the clip's caption (preference.py).
- distill: the base stage distilled to half the steps, guidance folded in (distill.py).
- reflow: the base stage retrained on its own (noise, sample) pairs, captioned by the shapes judge,
          to follow the words in a few unguided steps (reflow.py).
- reward: the base stage fine-tuned by the arrow critic's reading of the clips it starts to draw,
          backpropagated through one early sampling step (reward.py).

What they share (the corpus, the frozen VAE and text encoder, the model folder of the video
stages) is in base.py.
"""

from __future__ import annotations

import torch

from ...errors import VidgenError
from ..config import STAGES, RunConfig
from .base import (NOISE_SCHEDULE, CascadeStage, DiffusionStage, Stage, drop_captions, repeat_captioned,
                   withhold_captions)
from .critic import CriticStage, swap_groups
from .distill import DistillStage
from .image import ImageStage, save_text_to_image_folder
from .interp import InterpolationStage
from .preference import PreferenceStage
from .reflow import ReflowStage
from .reward import RewardStage
from .sr import SuperResolutionStage
from .vae import AutoencoderWithKL, VaeStage
from .video import VideoStage

__all__ = ["NOISE_SCHEDULE", "STAGE_CLASSES", "AutoencoderWithKL", "CascadeStage", "CriticStage", "DiffusionStage",
           "DistillStage", "ImageStage", "InterpolationStage", "PreferenceStage", "ReflowStage", "RewardStage", "Stage", "SuperResolutionStage", "VaeStage", "VideoStage",
           "build_stage", "drop_captions", "repeat_captioned", "save_text_to_image_folder", "swap_groups",
           "withhold_captions"]

STAGE_CLASSES = {"vae": VaeStage, "image": ImageStage, "video": VideoStage, "interp": InterpolationStage,
                 "sr": SuperResolutionStage, "critic": CriticStage, "preference": PreferenceStage,
                 "distill": DistillStage, "reflow": ReflowStage,
                 "reward": RewardStage}


def build_stage(cfg: RunConfig, device: torch.device) -> Stage:
    if cfg.stage not in STAGES:
        raise VidgenError(f"stage must be one of {', '.join(STAGES)}, got {cfg.stage!r}")
    if not cfg.data.manifest and not cfg.data.shards and not (cfg.stage == "reflow" and cfg.data.pairs):
        raise VidgenError("data.manifest is not set: give the manifest of a corpus (from `vidgen data index` or "
                          "`vidgen data shapes`), e.g. data.manifest=corpus/manifest.jsonl, or data.shards")
    return STAGE_CLASSES[cfg.stage](cfg, device)
