"""Weights on disk: safetensors written atomically and loaded strictly, JSON beside them.

Nothing here unpickles: weights are safetensors only, and a diffusers or transformers folder is
loaded from its safetensors files or refused. Loading is strict: a file that does not match its
model is refused with the keys that differ and why (never `load_state_dict(strict=False)` that
only prints what is missing). vidgen.model_folder puts these files together into a model folder.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import VidgenError
from .fs import atomic_path, write_text_atomic

SHOWN_KEYS = 5  # keys listed per kind of mismatch


class CheckpointError(VidgenError):
    """A model folder or weights file is missing, unreadable or does not match its model."""


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write tensors to a safetensors file, atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=dict(metadata or {}))
    return Path(path)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); "
                              f"vidgen loads safetensors only") from None


def _shown(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def load_strict(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str | os.PathLike,
                only: Iterable[str] | None = None, assign: bool = False) -> None:
    """Load `tensors` into `module`, refusing any mismatch with the keys that differ.

    only: load just these keys of the module's state dict (and require exactly them in `tensors`).
    assign: take the tensors as the parameters (for a module built on the meta device).
    """
    expected = {k: v.shape for k, v in module.state_dict().items()}
    if only is not None:
        expected = {k: expected[k] for k in only}
    missing = expected.keys() - tensors.keys()
    unexpected = tensors.keys() - expected.keys()
    mismatched = [f"{k} (file {tuple(tensors[k].shape)}, model {tuple(expected[k])})"
                  for k in sorted(expected.keys() & tensors.keys()) if tensors[k].shape != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} keys the model has but the file lacks: {_shown(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} keys in the file the model does not have: {_shown(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} keys with a different shape: {_shown(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit the model: " + "; ".join(problems) + ". The weights were saved from a model "
            "with another configuration (other block widths, layers, max_frames or input channels): load them "
            "with the config files saved beside them, or inflate a matching image U-Net")
    module.load_state_dict(dict(tensors), strict=only is None, assign=assign)


PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def refuse_pickles(folder: str | os.PathLike) -> None:
    """Refuse a model folder whose weights are pickles only (.bin, .ckpt, ...), naming the file:
    unpickling runs code the file chooses. A folder with safetensors beside them is fine."""
    folder = Path(folder)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"{pickles[0]} is a pickle, which vidgen never loads (unpickling runs code from the "
                              f"file): convert it to safetensors where you trust it, or get the safetensors version")


# diffusers' words for a tensor of another shape: "because KEY expected shape torch.Size([..]), but got ..."
MISMATCH = re.compile(r"because (\S+) expected shape torch\.Size\((\[[^\]]*\])\), but got torch\.Size\((\[[^\]]*\])\)")


def load_diffusers(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None):
    """A diffusers model (`cls`: UNet2DConditionModel, AutoencoderKL, ...) from a folder in diffusers'
    layout, from safetensors weights only (never a pickled .bin), loaded strictly: a key the model
    has and the file lacks, or the file has and the model lacks, or of another shape, is refused
    naming the key and the file (diffusers itself would leave a missing one on the meta device or
    randomly initialised). Anything else that fails is a CheckpointError that names the folder."""
    from diffusers.utils import logging as diffusers_logging

    refuse_pickles(folder)
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its "newly initialized" warning: refused below instead
    try:
        model, info = cls.from_pretrained(folder, use_safetensors=True, torch_dtype=dtype, output_loading_info=True)
    except (OSError, ValueError) as exc:
        shape = MISMATCH.search(str(exc))
        if shape:
            raise CheckpointError(f"{_weights_file(folder)} does not fit the {cls.__name__} its config.json describes: "
                                  f"it has {shape.group(1)} of shape {shape.group(3)}, the model {shape.group(2)}. "
                                  f"Use the weights saved with this config") from None
        raise CheckpointError(f"cannot load {cls.__name__} from {folder}: {exc} "
                              f"(vidgen needs diffusers folders with safetensors weights)") from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
    problems = [(kind, info.get(key) or []) for kind, key in (("lacks", "missing_keys"), ("has keys the model does "
                "not", "unexpected_keys"), ("has keys of another shape", "mismatched_keys"))]
    problems = [f"{kind}: {_shown(str(k) for k in keys)}" for kind, keys in problems if keys]
    if problems:
        raise CheckpointError(f"{_weights_file(folder)} does not fit the {cls.__name__} its config.json describes: "
                              f"the file " + "; ".join(problems) + ". Use the weights saved with this config")
    return model


def _weights_file(folder: str | os.PathLike) -> Path:
    """The safetensors file of a diffusers model folder (the first, where weights are sharded)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    return files[0] if files else Path(folder)
