"""What each stage of the cascade trains, on what, with which loss, and what it exports.

A stage hands the training loop (vidgen.training.loop) four things: `model` (the module the
optimizer updates: only its parameters with requires_grad), `dataset()`, `loss(model, batch,
generator)`, and `export(model, folder)`; `preview` is optional. The loop calls the model
only through its `forward`, so data-parallel training (DDP) sees every call.

- vae:    AutoencoderKL on single frames: reconstruction + KL.
- image:  the spatial text-to-image U-Net on (frame, caption) pairs; exports a diffusers
          text-to-image folder that `vidgen inflate` takes.
- video:  the temporal layers of an inflated U-Net on clips (Make-A-Video section 3.2).
- interp: masked frame interpolation (section 3.3); see vidgen.models.cascade.
- sr:     video super-resolution (section 3.4); see vidgen.models.cascade.
- critic: the arrow critic that guides the base stage's motion at sampling (vidgen.models.critic),
          on the captioned clips alone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from torch import nn

from ..checkpoint import load_diffusers
from ..data.dataset import VideoClipDataset
from ..data.latent_cache import LatentCache, build_latent_cache
from ..data.manifest import read_manifest
from ..diffusion.losses import add_noise, diffusion_loss, vae_loss
from ..errors import VidgenError
from ..fs import atomic_dir
from ..models import cascade
from ..models.critic import ArrowCritic, CriticConfig, arrow_loss, swap_loss, swaps
from ..models.inflate import inflate_unet, with_options
from ..models.vae import encode_video, latent_factor
from ..packaged import resolve_text_encoder
from ..text import TextEncoder
from ..video_io import save_video
from .config import STAGES, VIDEO_STAGE_LAYERS, RunConfig

NOISE_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def withhold_captions(records: list[dict], fraction: float, seed: int) -> list[dict]:
    """Drop the captions of a fixed `fraction` of the captioned clips (drawn from `seed`), so that
    they train as unlabeled video with the null conditioning."""
    if not 0.0 <= fraction <= 1.0:
        raise VidgenError(f"data.withhold_captions must be in [0, 1], got {fraction}")
    draws = np.random.default_rng([seed, 7]).random(len(records))
    return [{k: v for k, v in r.items() if k != "caption"} if r.get("caption") and draw < fraction else r
            for r, draw in zip(records, draws)]


def repeat_captioned(records: list[dict], times: int) -> list[dict]:
    """List every record that has a caption `times` times (unlabeled ones once), so that a batch
    holds more labeled clips; the dataset draws each listing's frames and fps on its own."""
    if times < 1:
        raise VidgenError(f"data.captioned_repeat must be a whole number >= 1, got {times}")
    return [r for r in records for _ in range(times if r.get("caption") else 1)]


def drop_captions(captions: list[str], probability: float, generator: torch.Generator) -> list[str]:
    """Replace each caption by the empty prompt with `probability` (classifier-free guidance training)."""
    drops = torch.rand(len(captions), generator=generator) < probability
    return ["" if drop else caption for caption, drop in zip(captions, drops.tolist())]


class Stage:
    """Base of the stages: the data every stage reads, and the defaults."""

    frames_per_sample = 1  # clip length the dataset gives; the video stages use data.num_frames

    def __init__(self, cfg: RunConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.model: nn.Module
        self.latent_cache: LatentCache | None = None
        self.low_res_cache: LatentCache | None = None  # the sr stage's inputs

    def dataset(self) -> VideoClipDataset:
        d = self.cfg.data
        records = withhold_captions(read_manifest(d.manifest), d.withhold_captions, self.cfg.train.seed)
        records = repeat_captioned(records, d.captioned_repeat)
        fps_range = tuple(d.fps_range) if d.fps_range and self.frames_per_sample > 1 else None
        return VideoClipDataset(records, self.frames_per_sample, d.size, fps_range=fps_range, stride=d.stride,
                                short_clip=d.short_clip, seed=self.cfg.train.seed, latent_cache=self.latent_cache,
                                low_res_cache=self.low_res_cache, time_reverse=dict(d.time_reverse) or None)

    def use_latent_cache(self, folder: str, progress: bool = True) -> None:
        raise VidgenError(f"the {self.cfg.stage} stage reads frames, not latents: leave data.latent_cache empty")

    def preview(self, model: nn.Module, folder: Path, prompts: list[str]) -> None:
        """Write preview clips of the model as it is now (stages that make video override this)."""

    def export(self, model: nn.Module, folder: Path) -> None:
        raise NotImplementedError


# --- vae -----------------------------------------------------------------------------------------

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


# --- shared by the diffusion stages -------------------------------------------------------------

class DiffusionStage(Stage):
    """Frozen VAE and text encoder; text embeddings cached per caption (corpora repeat captions)."""

    def __init__(self, cfg, device, vae: AutoencoderKL, text_encoder: TextEncoder):
        super().__init__(cfg, device)
        self.vae = vae.to(device).requires_grad_(False).eval()
        self.text_encoder = text_encoder.to(device).requires_grad_(False).eval()
        self.noise_schedule = DDPMScheduler(**NOISE_SCHEDULE, prediction_type=cfg.model.prediction_type)
        self._embeddings: dict[str, torch.Tensor] = {}

    def embed(self, captions: list[str]) -> torch.Tensor:
        """(b, n, d) text embeddings, each caption encoded once per run."""
        new = sorted({c for c in captions if c not in self._embeddings})
        if new:
            with torch.no_grad():
                for caption, emb in zip(new, self.text_encoder.encode(new)):
                    self._embeddings[caption] = emb
        return torch.stack([self._embeddings[c] for c in captions])

    def conditioning(self, batch, generator) -> torch.Tensor:
        return self.embed(drop_captions(batch["caption"], self.cfg.data.caption_dropout, generator))

    def use_latent_cache(self, folder: str, progress: bool = True) -> None:
        records = read_manifest(self.cfg.data.manifest)
        self.latent_cache = build_latent_cache(records, self.vae, self.cfg.data.size, folder, progress=progress)

    def posterior_latents(self, mean: torch.Tensor, std: torch.Tensor, generator) -> torch.Tensor:
        """Latents from a cached posterior: a draw (what encoding the frames would give), or with
        data.posterior=mean its mean.

        A VAE trained with a small KL weight can leave some latent channels to noise: the shapes
        VAE's posterior std is about 0.6 in scaled units, one of its four channels carries almost
        nothing but that noise, and decoding the mean or a draw differs by 0.002 in [-1, 1]
        pixels. A draw then puts that much unpredictable noise in every diffusion target, frame
        by frame; the mean leaves it out.
        """
        if self.cfg.data.posterior == "mean":
            return mean.to(self.device, self.vae.dtype)
        noise = torch.randn(mean.shape, generator=generator).to(mean.device)  # the batch may already be on the GPU
        return (mean + std * noise).to(self.device, self.vae.dtype)

    def encode(self, video: torch.Tensor, generator) -> torch.Tensor:
        """(b 3 f H W) frames -> (b c f h w) latents through the VAE, a draw or the mean as data.posterior says."""
        with torch.no_grad():
            return encode_video(self.vae, video, generator=generator, mean=self.cfg.data.posterior == "mean")

    def latents(self, batch, generator) -> torch.Tensor:
        """(b c f h w) latents of the batch's clips (`posterior_latents`), from the cache or the VAE."""
        if batch["latent_mean"] is not None:
            return self.posterior_latents(batch["latent_mean"], batch["latent_std"], generator)
        return self.encode(batch["video"].to(self.device), generator)


# --- image ---------------------------------------------------------------------------------------

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


# --- video ---------------------------------------------------------------------------------------

class CascadeStage(DiffusionStage):
    """A stage of a vidgen video model folder: it loads the folder (model.pretrained), trains one
    of its video U-Nets and exports the folder with that stage in place."""

    stage_name = "base"

    def __init__(self, cfg, device):
        from ..pipeline import VideoPipeline

        if not cfg.model.pretrained:
            raise VidgenError(f"the {cfg.stage} stage starts from a vidgen video model: set model.pretrained to a folder "
                              "made by `vidgen inflate` or exported by an earlier stage's run (its model/)")
        self.pipeline = VideoPipeline.from_pretrained(cfg.model.pretrained)
        super().__init__(cfg, device, self.pipeline.vae, self.pipeline.text_encoder)
        self.frames_per_sample = cfg.data.num_frames
        unet = self.build_unet(self.pipeline.stages["base"])
        unet.freeze_spatial(cfg.model.freeze_spatial)
        if cfg.train.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.model = unet.to(device).train()

    def build_unet(self, base):
        return base

    def export(self, model, folder):
        self.pipeline.set_stage(self.stage_name, model)
        self.record_settings(self.pipeline.index)
        self.pipeline.save_pretrained(folder)

    def record_settings(self, index) -> None:
        """Write what sampling this stage needs to know into the model index (vidgen.json)."""

    def preview(self, model, folder, prompts):
        was_training = model.training
        self.pipeline.set_stage(self.stage_name, model.eval())
        try:
            frames = self.pipeline(prompts, num_inference_steps=self.cfg.train.preview_steps, seed=0, progress=False)
            fps = self.pipeline.output_fps()
            for i, (prompt, clip) in enumerate(zip(prompts, frames)):
                save_video(clip, folder / f"{i:02d}.mp4", fps=fps, metadata={"prompt": prompt, "seed": 0})
        finally:
            model.train(was_training)


class VideoStage(CascadeStage):
    """The temporal layers learn motion from clips (Make-A-Video section 3.2); the spatial layers
    stay frozen unless model.freeze_spatial is false.

    With model.image_conditioning the base stage learns to make each clip around one of its own
    frames, the anchor at model.anchor_position, given at every frame (cascade.anchored_unet).
    The U-Net that will draw anchors at sampling time is the base's image U-Net as it stands when
    the anchor input is added, copied and frozen, so training the clip model cannot move it.
    """

    def build_unet(self, base):
        m = self.cfg.model
        added = {key: True for key in VIDEO_STAGE_LAYERS if getattr(m, key) and not getattr(base.options, key)}
        unet = with_options(base, **added) if added else base
        has_anchor = self.pipeline.image_unet is not None
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
            self.pipeline.set_stage("base", unet)
            self.pipeline.set_anchor(image_unet.requires_grad_(False).to(self.device), m.anchor_position)
        return unet

    def unet_input(self, x_t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """What the U-Net reads for noisy clips x_t of clean clips x0, both (b c f h w): x_t, and
        with model.image_conditioning the anchor frame of x0 and each frame's offset from it."""
        if not self.cfg.model.image_conditioning:
            return x_t
        index = cascade.anchor_index(x0.shape[2], self.cfg.model.anchor_position)
        return cascade.anchor_input(x_t, x0[:, :, index], index)

    def loss(self, model, batch, generator):
        x0 = self.latents(batch, generator)  # (b c f h w)
        cond = self.conditioning(batch, generator)
        fps = batch["fps"].to(self.device)
        return diffusion_loss(lambda x, t: model(self.unet_input(x, x0), t, cond, fps=fps), self.noise_schedule, x0,
                              generator, self.cfg.model.prediction_type, weighting=self.cfg.model.loss_weighting,
                              noise_correlation=self.cfg.model.frame_noise_correlation)

    def record_settings(self, index):
        index.frame_noise_correlation = self.cfg.model.frame_noise_correlation


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
        masks = torch.stack([cascade.keyframe_mask(frames, int(k)) for k in skips])
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
                                              antialias=True, align_corners=False).view(b, 3, f, low_size, low_size)
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


# --- critic --------------------------------------------------------------------------------------

def swap_groups(records: list[dict], slots: list[str]) -> dict[str, list[str]]:
    """{slot: its values in the manifest's captioned records, in order of first appearance}, for
    the critic's swapped captions (model.critic_swap_slots)."""
    groups: dict[str, list[str]] = {slot: [] for slot in slots}
    for record in records:
        for slot in slots:
            value = (record.get("slots") or {}).get(slot)
            if record.get("caption") and isinstance(value, str) and value not in groups[slot]:
                groups[slot].append(value)
    thin = [slot for slot, values in groups.items() if len(values) < 2]
    if thin:
        raise VidgenError(f"model.critic_swap_slots: the manifest's captioned clips name fewer than two values of "
                          f"{', '.join(thin)} in their 'slots' (each record's slots, e.g. "
                          f"{{\"direction\": \"left\"}}); list slots the corpus names, or leave the key empty")
    return groups


class CriticStage(DiffusionStage):
    """The arrow critic of a vidgen video model (model.pretrained): does a noisy clip run forward
    in time under its caption? It learns from the clips that keep their caption (after
    data.withhold_captions) and nothing else: an unlabeled clip and its reversal are equally
    likely, so they carry no arrow. Each clip is noised as the base stage's training noised it
    (the model's frame noise prior, a uniform timestep); its reversal is the negative, for free
    (`ArrowCritic.forward`). Exports the model folder with the critic in it; a model that has one
    already goes on training it."""

    def __init__(self, cfg, device):
        from ..pipeline import VideoPipeline

        if not cfg.model.pretrained:
            raise VidgenError("the critic stage learns the arrow critic of a vidgen video model: set model.pretrained to "
                              "the model's folder (made by `vidgen inflate` or exported by a video stage run)")
        self.pipeline = VideoPipeline.from_pretrained(cfg.model.pretrained)
        super().__init__(cfg, device, self.pipeline.vae, self.pipeline.text_encoder)
        self.frames_per_sample = cfg.data.num_frames
        critic = self.pipeline.critic
        if critic is None:
            try:
                config = CriticConfig(**{**cfg.model.critic,
                                         "latent_channels": self.pipeline.stages["base"].unet.config.in_channels,
                                         "text_dim": self.text_encoder.hidden_size})
            except TypeError as exc:
                raise VidgenError(f"model.critic: {exc} (its keys are the fields of "
                                  f"vidgen.models.critic.CriticConfig: widths, embed_dim)") from None
            if not config.widths or min(config.widths) < 1 or config.embed_dim < 1:
                raise VidgenError(f"model.critic: widths must be a non-empty list of positive channel counts and "
                                  f"embed_dim positive, got widths={list(config.widths)}, embed_dim={config.embed_dim}")
            critic = ArrowCritic(config)
        elif cfg.model.critic:
            raise VidgenError(f"{cfg.model.pretrained} has an arrow critic already, which this run goes on training: "
                              f"leave model.critic empty (its shape is fixed), or start from a model without one")
        self.model = copy.deepcopy(critic).requires_grad_(True).to(device).train()
        if cfg.model.critic_swap_slots:
            self.model.config.swap_words = swap_groups(read_manifest(cfg.data.manifest), cfg.model.critic_swap_slots)

    def dataset(self):
        data = super().dataset()
        data.records = [r for r in data.records if r.get("caption")]
        if not data.records:
            raise VidgenError("the critic stage learns from captioned clips, and this run keeps none: lower "
                              "data.withhold_captions, or give a manifest whose clips have captions")
        return data

    def loss(self, model, batch, generator):
        x0 = self.latents(batch, generator)  # (b c f h w)
        tokens = self.embed(batch["caption"])  # every clip keeps its caption: the arrow is read from it
        x_t, _, t = add_noise(self.noise_schedule, x0, generator,
                              correlation=self.pipeline.index.frame_noise_correlation)
        groups = self.model.config.swap_words
        alternatives = [swaps(caption, groups) for caption in batch["caption"]]
        k = max(map(len, alternatives), default=0)
        if not k:
            return arrow_loss(model(x_t, t, tokens))
        # Every clip gets k swapped captions, its own caption filling the places it has no swap for.
        swapped = torch.stack([self.embed(alt + [caption] * (k - len(alt)))
                               for caption, alt in zip(batch["caption"], alternatives)])  # (b k n d)
        valid = torch.tensor([[True] + [j < len(alt) for j in range(k)] for alt in alternatives], device=x0.device)
        d, scores = model(x_t, t, tokens, swapped.to(tokens))
        return arrow_loss(d) + self.cfg.model.critic_swap_weight * swap_loss(scores, valid)

    def export(self, model, folder):
        self.pipeline.set_critic(copy.deepcopy(model).cpu())
        self.pipeline.save_pretrained(folder)


STAGE_CLASSES = {"vae": VaeStage, "image": ImageStage, "video": VideoStage, "interp": InterpolationStage,
                 "sr": SuperResolutionStage, "critic": CriticStage}


def build_stage(cfg: RunConfig, device: torch.device) -> Stage:
    if cfg.stage not in STAGES:
        raise VidgenError(f"stage must be one of {', '.join(STAGES)}, got {cfg.stage!r}")
    if not cfg.data.manifest:
        raise VidgenError("data.manifest is not set: give the manifest of a corpus (from `vidgen data index` or "
                          "`vidgen data shapes`), e.g. data.manifest=corpus/manifest.jsonl")
    return STAGE_CLASSES[cfg.stage](cfg, device)
