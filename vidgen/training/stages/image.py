"""The image stage: the spatial text-to-image U-Net on (frame, caption) pairs, the model
Make-A-Video starts from (section 3.1); it exports a diffusers text-to-image folder that
`vidgen inflate` takes."""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from ...diffusion.losses import diffusion_loss
from ...errors import VidgenError
from ...fs import atomic_dir
from ...models.vae import latent_factor
from ...packaged import resolve_text_encoder
from ...text import TextEncoder
from ...weights import load_diffusers
from .base import NOISE_SCHEDULE, DiffusionStage


class ImageStage(DiffusionStage):
    def __init__(self, cfg, device):
        m = cfg.model
        source = Path(m.pretrained) if m.pretrained else None
        vae_dir = source / "vae" if source else Path(m.vae) if m.vae else None
        if vae_dir is None:
            raise VidgenError("the image stage needs a VAE: set model.vae to a folder from the vae stage, or model.pretrained "
                              "to a diffusers text-to-image folder to fine-tune")
        if source and (source / "text_encoder").is_dir():
            text = TextEncoder.from_pretrained(source)
        else:  # from scratch, or a folder that ships without its text encoder
            text = TextEncoder.from_pretrained(resolve_text_encoder(m.text_encoder))
        if m.text_max_length:  # short prompts need few tokens; the cross-attention cost grows with them
            text.max_length = text.tokenizer.model_max_length = m.text_max_length
        vae = load_diffusers(AutoencoderKL, vae_dir)
        super().__init__(cfg, device, vae, text)
        if source:
            if (source / "vidgen.json").is_file():
                raise VidgenError(f"{source} is a vidgen video model; the image stage trains a text-to-image U-Net from a "
                                  f"diffusers text-to-image folder (or from scratch): start the video stage from it instead")
            unet = load_diffusers(UNet2DConditionModel, source / "unet")
        else:
            channels = vae.config.latent_channels
            unet = UNet2DConditionModel(**{"in_channels": channels, "out_channels": channels,
                                           "sample_size": cfg.data.size // latent_factor(vae), **m.unet,
                                           "cross_attention_dim": text.hidden_size})
        self.model = unet.to(device)
        if cfg.train.gradient_checkpointing:
            unet.enable_gradient_checkpointing()

    def loss(self, model, batch, generator):
        x0 = self.latents(batch, generator)[:, :, 0]  # (b c 1 h w) -> (b c h w)
        cond = self.conditioning(batch, generator)
        return diffusion_loss(lambda x, t: model(x, t, cond).sample, self.noise_schedule, x0, generator,
                              self.cfg.model.prediction_type, weighting=self.cfg.model.loss_weighting)

    def export(self, model, folder):
        save_text_to_image_folder(folder, model, self.vae, self.text_encoder, self.cfg.model.prediction_type)


def save_text_to_image_folder(folder, unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: TextEncoder,
                              prediction_type: str = "epsilon") -> None:
    """A diffusers text-to-image folder: unet/, vae/, text_encoder/, tokenizer/, scheduler/, model_index.json."""
    with atomic_dir(folder) as tmp:
        unet.save_pretrained(tmp / "unet")
        vae.save_pretrained(tmp / "vae")
        text_encoder.save_pretrained(tmp)
        DDIMScheduler(**NOISE_SCHEDULE, prediction_type=prediction_type, clip_sample=False,
                      set_alpha_to_one=False).save_pretrained(tmp / "scheduler")
        index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "vidgen",
                 "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                 "scheduler": ["diffusers", "DDIMScheduler"],
                 "text_encoder": ["transformers", type(text_encoder.model).__name__],
                 "tokenizer": ["transformers", type(text_encoder.tokenizer).__name__]}
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
