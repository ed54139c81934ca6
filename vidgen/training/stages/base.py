"""What every stage shares: the corpus it reads, and for the diffusion stages the frozen VAE
and text encoder, the noise schedule and the latents of a batch; `CascadeStage` is a stage of a
vidgen video model folder (the base, interpolation and super-resolution stages of Make-A-Video's
cascade, sections 3.2 to 3.4), which loads the folder and exports it with its stage in place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler
from torch import nn

from ...data.dataset import VideoClipDataset
from ...data.latent_cache import LatentCache, build_latent_cache
from ...data.manifest import read_manifest
from ...errors import VidgenError
from ...model_folder import VideoModel
from ...models.vae import encode_video
from ...pipeline import VideoPipeline
from ...text import TextEncoder
from ...video_io import save_video
from ..config import RunConfig

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

    # Whether the data plays captioned clips backwards as data.time_reverse says (the preference
    # stage reads that map for its pairs instead).
    reverses_in_data = True

    def dataset(self) -> VideoClipDataset:
        """The clips of data.manifest, or with data.shards a stream of them (vidgen.data.shard_dataset)."""
        d = self.cfg.data
        records = [] if d.shards else withhold_captions(read_manifest(d.manifest), d.withhold_captions, self.cfg.train.seed)
        records = repeat_captioned(records, d.captioned_repeat)
        fps_range = tuple(d.fps_range) if d.fps_range and self.frames_per_sample > 1 else None
        clips = VideoClipDataset(records, self.frames_per_sample, d.size, fps_range=fps_range, stride=d.stride,
                                 short_clip=d.short_clip, seed=self.cfg.train.seed, latent_cache=self.latent_cache,
                                 low_res_cache=self.low_res_cache,
                                 time_reverse=(dict(d.time_reverse) or None) if self.reverses_in_data else None)
        if d.shards:
            from ..shard_loader import shard_dataset

            return shard_dataset(clips, d.shards, d.shuffle_buffer, d.withhold_captions)
        return clips

    def use_latent_cache(self, folder: str, progress: bool = True) -> None:
        raise VidgenError(f"the {self.cfg.stage} stage reads frames, not latents: leave data.latent_cache empty")

    def preview(self, model: nn.Module, folder: Path, prompts: list[str]) -> None:
        """Write preview clips of the model as it is now (stages that make video override this)."""

    def export(self, model: nn.Module, folder: Path) -> None:
        raise NotImplementedError

    log_fields: tuple[str, ...] = ()  # the columns `log_values` fills in the run's log.csv

    def log_values(self) -> dict[str, float]:
        """Figures of the steps since the last log line, beside the loss (stages that have any override this)."""
        return {}


class DiffusionStage(Stage):
    """Frozen VAE and text encoder; text embeddings cached per caption (corpora repeat captions)."""

    def __init__(self, cfg, device, vae: AutoencoderKL, text_encoder: TextEncoder):
        super().__init__(cfg, device)
        self.vae = vae.to(device).requires_grad_(False).eval()
        self.text_encoder = text_encoder.to(device).requires_grad_(False).eval()
        if hasattr(text_encoder, "image_size"):  # SDXL's size ids (vidgen.interop.sdxl): the training frames' size
            text_encoder.image_size = (cfg.data.size, cfg.data.size)
        self.noise_schedule = DDPMScheduler(**NOISE_SCHEDULE, prediction_type=cfg.model.prediction_type)
        self._embeddings: dict[str, torch.Tensor] = {}

    def embed(self, captions: list[str]) -> torch.Tensor:
        """(b, n, d) text embeddings, each caption encoded once per run."""
        new = sorted({c for c in captions if c not in self._embeddings})
        if new:
            with torch.no_grad():
                for caption, emb in zip(new, self.text_encoder.encode(new)):
                    self._embeddings[caption] = emb
        return torch.stack([self._embeddings[c] for c in captions])  # (b n d)

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


class CascadeStage(DiffusionStage):
    """A stage of a vidgen video model folder: it loads the folder (model.pretrained), trains one
    of its video U-Nets and exports the folder with that stage in place."""

    stage_name = "base"

    def __init__(self, cfg, device):
        if not cfg.model.pretrained:
            raise VidgenError(f"the {cfg.stage} stage starts from a vidgen video model: set model.pretrained to a folder "
                              "made by `vidgen inflate` or exported by an earlier stage's run (its model/)")
        self.video_model = VideoModel.from_pretrained(cfg.model.pretrained)  # what export() writes back
        super().__init__(cfg, device, self.video_model.vae, self.video_model.text_encoder)
        self.frames_per_sample = cfg.data.num_frames
        unet = self.build_unet(self.video_model.stages["base"])
        unet.freeze_spatial(cfg.model.freeze_spatial)
        if cfg.train.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.model = unet.to(device).train()

    def build_unet(self, base):
        return base

    def export(self, model, folder):
        self.video_model.set_stage(self.stage_name, model)
        self.record_settings(self.video_model.index)
        self.video_model.save_pretrained(folder)

    def record_settings(self, index) -> None:
        """Write what sampling this stage needs to know into the model index (vidgen.json)."""

    def preview(self, model, folder, prompts):
        was_training = model.training
        self.video_model.set_stage(self.stage_name, model.eval())
        try:
            out = VideoPipeline(self.video_model)(prompts, num_inference_steps=self.cfg.train.preview_steps, seed=0,
                                                  progress=False)
            for i, (prompt, clip) in enumerate(zip(prompts, out.frames)):  # (f h w 3) each
                save_video(clip, folder / f"{i:02d}.mp4", fps=out.fps, metadata={"prompt": prompt, "seed": 0})
        finally:
            model.train(was_training)
