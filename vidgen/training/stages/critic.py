"""The critic stage: the arrow critic that guides, checks and chooses the base stage's clips at
sampling (vidgen.models.critic), learned from the captioned clips alone."""

from __future__ import annotations

import copy

import torch

from ...data.manifest import read_manifest
from ...diffusion.losses import add_noise
from ...errors import VidgenError
from ...model_folder import VideoModel
from ...models.critic import ArrowCritic, CriticConfig, motion_loss
from .base import DiffusionStage


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
        if not cfg.model.pretrained:
            raise VidgenError("the critic stage learns the arrow critic of a vidgen video model: set model.pretrained to "
                              "the model's folder (made by `vidgen inflate` or exported by a video stage run)")
        self.video_model = VideoModel.from_pretrained(cfg.model.pretrained)  # what export() writes back
        super().__init__(cfg, device, self.video_model.vae, self.video_model.text_encoder)
        self.frames_per_sample = cfg.data.num_frames
        critic = self.video_model.critic
        if critic is None:
            try:
                config = CriticConfig(**{**cfg.model.critic,
                                         "latent_channels": self.video_model.stages["base"].unet.config.in_channels,
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
                              correlation=self.video_model.index.frame_noise_correlation)
        return motion_loss(model, x_t, t, tokens, batch["caption"], self.embed, self.cfg.model.critic_swap_weight)

    def export(self, model, folder):
        self.video_model.set_critic(copy.deepcopy(model).cpu())
        self.video_model.save_pretrained(folder)
