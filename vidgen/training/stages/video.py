"""The video stage: the temporal layers of an inflated U-Net learn motion from clips
(Make-A-Video section 3.2), optionally around an anchor frame the base draws first."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from ...data.dataset import SkippedSample, VideoClipDataset, collate_clips
from ...diffusion.flow_noise import estimate_shifts, motion_words, moving_noise
from ...diffusion.losses import diffusion_loss
from ...errors import VidgenError
from ...fs import atomic_dir
from ...interop import lora
from ...interop.diffusers_video import DiffusersVideoUNet
from ...models import cascade
from ...models.inflate import with_options
from ..config import VIDEO_STAGE_LAYERS
from .base import CascadeStage

LORA_FILE = "lora.safetensors"  # what a LoRA run exports into model/


class VideoStage(CascadeStage):
    """The temporal layers learn motion from clips (Make-A-Video section 3.2); the spatial layers
    stay frozen unless model.freeze_spatial is false.

    With model.image_conditioning the base stage learns to make each clip around one of its own
    frames, the anchor at model.anchor_position, given at every frame (cascade.anchored_unet).
    The U-Net that will draw anchors at sampling time is the base's image U-Net as it stands when
    the anchor input is added, copied and frozen, so training the clip model cannot move it.

    With model.lora_rank only a LoRA on the temporal attention trains (vidgen.interop.lora), and
    the export is that adapter alone.
    """

    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        if cfg.model.lora_rank:  # only the adapter trains (vidgen.interop.lora)
            lora.add_temporal_adapter(self.model, cfg.model.lora_rank)

    def export(self, model, folder):
        """The model folder, or with model.lora_rank the adapter alone: folder/lora.safetensors."""
        if not self.cfg.model.lora_rank:
            return super().export(model, folder)
        with atomic_dir(folder) as tmp:
            lora.save(model, tmp / LORA_FILE, extra_metadata={"base_model": str(self.cfg.model.pretrained)})

    def build_unet(self, base):
        m = self.cfg.model
        added = {key: True for key in VIDEO_STAGE_LAYERS if getattr(m, key) and not getattr(base.options, key)}
        if isinstance(base, DiffusersVideoUNet) and (added or m.image_conditioning):
            keys = [f"model.{key}" for key in (*added, *(["image_conditioning"] if m.image_conditioning else []))]
            raise VidgenError(f"{m.pretrained} has a diffusers {base.kind} base stage, which has no place for "
                              f"{' or '.join(keys)}: set {' and '.join(k + '=false' for k in keys)}")
        unet = with_options(base, **added) if added else base
        has_anchor = self.video_model.image_unet is not None
        if has_anchor and not m.image_conditioning:
            raise VidgenError(f"{m.pretrained} has a base stage that takes an anchor frame: keep training it with "
                              f"model.image_conditioning=true, or start from a model without one")
        if m.image_conditioning and not has_anchor:
            if unet.options.extra_in_channels:
                raise VidgenError(f"model.image_conditioning adds the anchor input to the base stage, but the one in "
                                  f"{m.pretrained} already has {unet.options.extra_in_channels} extra input channels")
            image_unet = UNet2DConditionModel.from_config(unet.unet.config)
            image_unet.load_state_dict(unet.unet.state_dict())
            unet = cascade.anchored_unet(unet)
            self.video_model.set_stage("base", unet)
            self.video_model.set_anchor(image_unet.requires_grad_(False).to(self.device), m.anchor_position)
        return unet

    def unet_input(self, x_t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """What the U-Net reads for noisy clips x_t of clean clips x0, both (b c f h w): x_t, and
        with model.image_conditioning the anchor frame of x0 and each frame's offset from it."""
        if not self.cfg.model.image_conditioning:
            return x_t
        index = cascade.anchor_index(x0.shape[2], self.cfg.model.anchor_position)
        return cascade.anchor_input(x_t, x0[:, :, index], index)

    def loss(self, model, batch, generator):
        return self.denoising_loss(model, batch, self.latents(batch, generator), generator)

    def denoising_loss(self, model, batch, x0, generator):
        """The plain objective on the batch's clean latents x0 (b c f h w), captions dropped as data.caption_dropout says."""
        cond = self.conditioning(batch, generator)
        fps = batch["fps"].to(self.device)
        m, noise = self.cfg.model, None
        if m.flow_noise:  # the shared part of the noise moves as the clip does (vidgen.diffusion.flow_noise)
            noise = moving_noise(x0.shape, generator, m.frame_noise_correlation, estimate_shifts(x0)).to(x0)
        return diffusion_loss(lambda x, t: model(self.unet_input(x, x0), t, cond, fps=fps), self.noise_schedule, x0,
                              generator, m.prediction_type, weighting=m.loss_weighting,
                              noise_correlation=m.frame_noise_correlation, noise=noise)

    def record_settings(self, index):
        index.frame_noise_correlation = self.cfg.model.frame_noise_correlation
        if self.cfg.model.flow_noise:  # sampling moves the noise as the prompt's motion words say
            index.motion_words = self.corpus_motion_words()
            index.defaults.motion_noise = bool(index.motion_words)

    def corpus_motion_words(self, limit: int = 512) -> dict[str, list[float]]:
        """The motion-word table (vidgen.diffusion.flow_noise.motion_words) of up to `limit` of the
        run's captioned clips, each one's displacement measured on its latents as in training (the
        posterior mean where the latent cache has it); empty for a shard stream."""
        clips = self.dataset()
        if not isinstance(clips, VideoClipDataset):
            return {}
        measured, seen = [], set()
        generator = torch.Generator().manual_seed(self.cfg.train.seed)
        with torch.no_grad():
            for i, record in enumerate(clips.records):
                if not record.get("caption") or str(record["path"]) in seen:
                    continue
                seen.add(str(record["path"]))
                item = clips[i]
                if isinstance(item, SkippedSample):
                    continue
                batch = collate_clips([item])
                x0 = batch["latent_mean"] if batch["latent_mean"] is not None else self.latents(batch, generator)
                side = torch.tensor(x0.shape[-2:], dtype=torch.float32)
                measured.append((item["caption"], estimate_shifts(x0.float())[0] / side, float(item["fps"])))  # (f 2)
                if len(measured) == limit:
                    break
        return motion_words(measured)
