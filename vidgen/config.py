"""Typed configs: a dataclass schema, a YAML file on top of it, then `key=value` overrides.

    cfg = load_config(ShapesConfig, "configs/shapes.yaml", ["videos=200", "size=128"])

OmegaConf.structured checks every key and type; its errors are re-raised as `ConfigError`
naming the key and where it came from (the file, or the command line).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError

T = TypeVar("T")


def _first_line(exc: OmegaConfBaseException) -> str:
    msg = getattr(exc, "msg", None) or str(exc)
    return msg.strip().splitlines()[0]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300]


def _merge(base, layer, source: str):
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{source}: bad config key '{key}': {_first_line(exc)}") from None


def parse_overrides(overrides: Sequence[str]) -> Any:
    """`["train.lr=1e-4", "data.num_frames=8"]` -> an OmegaConf node; malformed items are named."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"command line: override '{item}' is not of the form key=value (e.g. train.lr=1e-4)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except Exception as exc:  # OmegaConf's errors, and yaml's for a value it cannot parse
        text = getattr(exc, "msg", None) or str(exc)
        raise ConfigError(f"command line: cannot parse overrides {list(overrides)}: {text.strip().splitlines()[0]} "
                          "(YAML values need a space after ':' inside braces)") from None


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Build a `schema` instance from its defaults, an optional YAML file and `key=value` overrides."""
    cfg = OmegaConf.structured(schema)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            layer = OmegaConf.load(path)
        except Exception as exc:  # yaml.YAMLError, UnicodeDecodeError and friends
            raise ConfigError(f"{path}: not valid YAML: {_one_line(exc)}") from None
        if not isinstance(layer, DictConfig):
            raise ConfigError(f"{path} must hold a mapping of keys to values, got a {type(layer).__name__.removesuffix('Config').lower() or 'value'}: "
                              f"see the files in configs/ for the layout")
        cfg = _merge(cfg, layer, str(path))
    if overrides:
        cfg = _merge(cfg, parse_overrides(overrides), "command line")
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:  # e.g. a required (MISSING) value left unset
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"config key '{key}' has no value: {_first_line(exc)}") from None


def apply_overrides(cfg: T, overrides: Sequence[str], source: str = "command line") -> T:
    """A copy of the dataclass instance `cfg` with `key=value` overrides, typed and named like `load_config`'s."""
    if not overrides:
        return cfg
    merged = _merge(OmegaConf.structured(cfg), parse_overrides(overrides), source)
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {_first_line(exc)}") from None


def to_yaml(cfg: Any) -> str:
    """The YAML text of a config dataclass (round-trips through `load_config`)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    from .fs import write_text_atomic

    return write_text_atomic(path, to_yaml(cfg))


def as_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
