"""Shipping a trained model: its folder rewritten to travel light (how vidgen/default_model/ was made).

`package_model` writes every weight in half precision and names the text encoder (the packaged
all-MiniLM-L6-v2, checked by hash when loaded; vidgen.packaged) instead of copying it; it can
put in a base stage or an arrow critic from other runs and set sampling settings, each checked.
tools/package_default_model.py is its command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .data.latent_cache import vae_fingerprint
from .errors import VidgenError
from .fs import write_text_atomic
from .model_folder import VideoModel
from .packaged import MINILM_NAME


def package_model(source: str | Path, destination: str | Path, text_encoder: str = MINILM_NAME,
                  settings: dict[str, dict] | None = None, base: str | Path | None = None,
                  critic: str | Path | None = None, image_base: str | Path | None = None) -> Path:
    """Write `source` (a trained vidgen model folder) to `destination` for shipping: every weight in
    half precision, and the text encoder named (`text_encoder`, e.g. the packaged MiniLM, checked by
    hash when loaded) instead of copied. Loading converts back to the dtype asked for.
    `settings` overrides sampling settings of the model index by section, e.g.
    {"defaults": {"num_inference_steps": 25}, "interp": {"num_inference_steps": 10}}.
    `base`, a vidgen video model folder (a later run of the video stage), replaces `source`'s base
    stage, with the anchor image model it has (or none); both must sample the same frame-noise prior.
    `critic`, a vidgen model folder with an arrow critic (a critic-stage run), adds that critic.
    `image_base`, a vidgen video model folder whose base stage was trained around each clip's first
    frame (model.image_conditioning=true model.anchor_position=0), adds that base stage for
    image-to-video; its anchor image model is left behind (the user's picture takes its place)."""
    model = VideoModel.from_pretrained(source, dtype=torch.float16)
    if base is not None:
        base_model = VideoModel.from_pretrained(base, dtype=torch.float16)
        if base_model.index.frame_noise_correlation != model.index.frame_noise_correlation:
            raise VidgenError(f"the base model {base} was trained with frame_noise_correlation "
                              f"{base_model.index.frame_noise_correlation}, the cascade {source} with "
                              f"{model.index.frame_noise_correlation}: the stages must share one frame-noise prior")
        model.set_stage("base", base_model.stages["base"])
        model.set_anchor(base_model.image_unet, base_model.index.anchor.position)  # the base's anchor model, or none
    if critic is not None:
        critic_model = VideoModel.from_pretrained(critic, dtype=torch.float16)
        if critic_model.critic is None:
            raise VidgenError(f"{critic} has no arrow critic: give the model folder a critic-stage run exported")
        if vae_fingerprint(critic_model.vae, 0) != vae_fingerprint(model.vae, 0) or \
                critic_model.text_encoder.max_length != model.text_encoder.max_length:
            raise VidgenError(f"the critic in {critic} was trained on another VAE or prompt length than {source} has: "
                              f"train the critic stage from this model (model.pretrained={source})")
        model.set_critic(critic_model.critic)
    if image_base is not None:
        add_image_base(model, VideoModel.from_pretrained(image_base, dtype=torch.float16), image_base)
    for section, values in (settings or {}).items():
        target = getattr(model.index, section, None)
        if section not in ("defaults", "interp", "sr") or target is None:
            raise VidgenError(f"no settings section {section!r} in a model index: use defaults, interp or sr")
        for key, value in values.items():
            if not hasattr(target, key):
                raise VidgenError(f"{section}.{key} is not a setting; {section} has {', '.join(vars(target))}")
            kind = type(getattr(target, key))
            if kind is bool or kind is str:
                fits, wanted = type(value) is kind, "true or false" if kind is bool else "a word"
            else:
                fits, wanted = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
            if not fits:
                raise VidgenError(f"{section}.{key} takes {wanted}, got {value!r}")
            setattr(target, key, kind(value))
    if model.index.defaults.motion_guidance and model.critic is None:
        raise VidgenError(f"defaults.motion_guidance={model.index.defaults.motion_guidance} needs an arrow critic, and "
                          f"{source} has none: add one with critic=/--critic, or leave motion_guidance at 0")
    if model.index.defaults.candidates < 1:
        raise VidgenError(f"defaults.candidates must be at least 1, got {model.index.defaults.candidates}")
    if model.index.defaults.candidates > 1 and model.critic is None:
        raise VidgenError(f"defaults.candidates={model.index.defaults.candidates} needs an arrow critic to choose "
                          f"among them, and {source} has none: add one with critic=/--critic, or leave it at 1")
    if model.index.defaults.arrow_check and model.critic is None:
        raise VidgenError(f"defaults.arrow_check needs an arrow critic, and {source} has none: add one with "
                          f"critic=/--critic, or leave arrow_check off")
    model.index.text_encoder = text_encoder
    model.index.text_max_length = model.text_encoder.max_length
    folder = model.save_pretrained(destination)
    for config in folder.rglob("config.json"):  # diffusers records where each part was loaded from:
        entries = json.loads(config.read_text())  # a path on the training machine, meaningless elsewhere
        if entries.pop("_name_or_path", None) is not None:
            write_text_atomic(config, json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return folder


def add_image_base(model: VideoModel, source: VideoModel, name: str | Path) -> None:
    """Give `model` the base stage of `source` (an anchored video-stage run, anchor at the first
    frame) as its image-to-video base stage, refused where the two cannot work together."""
    if source.image_unet is None or source.index.anchor.position != 0.0:
        raise VidgenError(f"{name} has no base stage made around its first frame (anchor.position "
                          f"{source.index.anchor.position}, anchor image model {source.index.anchor.image_model or 'none'}): "
                          f"train one with model.image_conditioning=true model.anchor_position=0")
    if source.index.frame_noise_correlation != model.index.frame_noise_correlation or \
            vae_fingerprint(source.vae, 0) != vae_fingerprint(model.vae, 0):
        raise VidgenError(f"the image-to-video base stage in {name} was trained on another VAE or frame-noise prior "
                          f"than the model has: train it from this model (model.pretrained=...)")
    model.set_image_base(source.stages["base"])
    # a run on moving noise (model.flow_noise) measured motion words and turned motion noise on
    model.index.image_base_motion_noise = bool(source.index.motion_words) and source.index.defaults.motion_noise
