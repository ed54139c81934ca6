"""LoRA adapters (Hu et al. 2021) on a video U-Net: loaded from files, scaled, and trained.

A LoRA adds a low-rank update B A (rank r, scaled by alpha / r) to chosen linear or convolution
layers and leaves their weights as they are. peft builds and runs the adapter layers
(`inject_adapter_in_model`, `set_peft_model_state_dict`, `get_peft_model_state_dict`); this
module reads and writes the files and maps their keys onto a `VideoUNet`'s modules.

Files are safetensors in the diffusers / PEFT naming, `<module path>.lora_A.weight` (r, in)
and `<module path>.lora_B.weight` (out, r), module paths as the VideoUNet names them:

- `unet.<path>`: the image U-Net's layers, as diffusers writes LoRAs of Stable Diffusion
  (a file saved from a bare UNet2DConditionModel, without the `unet.` prefix, or by
  `PeftModel.save_pretrained`, under `base_model.model.`, works too);
- `temporal_attns.<layer>.to_qkv` / `.to_out`: the temporal attention's projections, the
  layers a motion LoRA targets (AnimateDiff trains its motion LoRAs on the motion modules'
  attention projections); `vidgen train` with model.lora_rank writes such files;
- on a diffusers video base stage (vidgen.interop.diffusers_video: AnimateDiff's UNetMotionModel,
  zeroscope's UNet3DConditionModel) the paths are diffusers' own, `unet.<path>`, for its spatial
  layers and its temporal ones alike: AnimateDiff's motion LoRAs as AnimateDiffPipeline's
  `load_lora_weights` reads them (`unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q`),
  under diffusers' older attention-processor names (`attn1.processor.to_q_lora.down.weight`) or the
  original AnimateDiff code's (`temporal_transformer.` ... `attention_blocks.0.`) too. model.lora_rank
  on such a base writes this naming, with diffusers' `lora_adapter_metadata`, so diffusers loads it;
- kohya's `lora_unet_<path with _ for .>.lora_down.weight` / `.lora_up.weight` / `.alpha`, where
  the path is a diffusers one (kohya's SD 1.x/2.x files; its SDXL files use the original
  Stability block names, which are not mapped).

alpha is read from the file's metadata (vidgen's `lora_alpha`, or diffusers' `lora_adapter_metadata`)
or per-module `.alpha` keys, else taken to be r (scale 1). Text-encoder keys are skipped with a
warning: vidgen applies the U-Net's part of a LoRA only. Any other key that matches no module
is refused, naming it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from torch import nn

from .. import weights
from ..errors import VidgenError
from .animatediff import ORIGINAL_NAMES
from .diffusers_video import DiffusersVideoUNet

logger = logging.getLogger(__name__)

FORMAT = "vidgen-lora"
# <module>.lora_A.weight, <module>.lora_A.<adapter>.weight (a peft model's own state dict), the older
# diffusers <module>.lora.down.weight / .lora.up.weight, and kohya's <module>.lora_down.weight / .lora_up.weight.
_KEY = re.compile(r"^(?P<module>.+?)\.(?:(?P<ab>lora_[AB])(?:\.[^.]+)?|lora[._](?P<updown>down|up))\.weight$")
_ALPHA = re.compile(r"^(?P<module>.+)\.alpha$")
TEXT_ENCODER_PREFIXES = ("text_encoder", "te_", "te1_", "te2_", "lora_te")
PEFT_MODEL_PREFIX = "base_model.model."  # PeftModel.save_pretrained's adapter files
KOHYA_UNET_PREFIX = "lora_unet_"  # kohya's names: the diffusers module path with "_" for "." (SD 1.x/2.x U-Nets)
TEMPORAL_TARGETS = ("to_qkv", "to_out")  # TemporalAttention's projections (vidgen.models.temporal)
# diffusers' older attention-processor LoRA names, `<attention>.processor.to_q_lora.down.weight`
_PROCESSOR_KEY = re.compile(r"(?:\.processor)?\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<updown>down|up)\.weight$")


def diffusers_key(key: str) -> str:
    """A LoRA key under diffusers' current module names: the attention-processor names
    (`to_out_lora` is `to_out.0`) and the original AnimateDiff motion-module names mapped."""
    key = _PROCESSOR_KEY.sub(lambda m: f".{'to_out.0' if m['proj'] == 'to_out' else m['proj']}.lora.{m['updown']}"
                             f".weight", key)
    if ".motion_modules." in key:
        for original, name in ORIGINAL_NAMES:
            key = key.replace(original, name)
    return key


@dataclass
class LoraFile:
    """One adapter read from disk: module path -> (A (r in), B (out r)), and its alpha."""

    path: Path
    pairs: dict[str, dict[str, torch.Tensor]]
    alpha: float | None

    @property
    def rank(self) -> int:
        return next(iter(self.pairs.values()))["lora_A"].shape[0]


def parse_spec(spec: str) -> tuple[Path, float]:
    """`FILE[:SCALE]` -> (path, scale); the scale defaults to 1."""
    path, scale = spec, 1.0
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            path, scale = head, float(tail)
        except ValueError:
            path = spec  # a colon in the file name
    return Path(path), scale


def check_file(path: Path, flag: str = "--lora") -> None:
    """Refuse, before any model loads, a path that is not a safetensors file of LoRA keys."""
    if path.suffix == ".safetensors" and not path.is_file():
        raise VidgenError(f"{flag} {path} does not exist: give the path of a LoRA .safetensors file")
    if path.suffix != ".safetensors":
        raise VidgenError(f"{flag} {path}: not a .safetensors file (LoRA weights in the diffusers/PEFT format; "
                          f"pickled .bin/.ckpt files are not read)")
    try:
        with safe_open(path, "pt") as f:
            keys = list(f.keys())
    except Exception as exc:  # safetensors raises its own SafetensorError for a damaged header
        raise VidgenError(f"{flag} {path}: not a readable safetensors file ({str(exc).splitlines()[0]}): give the "
                          f"LoRA's .safetensors file as it was saved") from None
    odd = next((k for k in keys if not (_KEY.match(diffusers_key(k)) or _ALPHA.match(k))), None)
    if odd is not None or not keys:
        raise VidgenError(f"{flag} {path}: {'key ' + repr(odd) + ' is' if odd else 'no keys are'} not LoRA weights: "
                          f"expected '<module>.lora_A.weight' and '<module>.lora_B.weight' keys")


def read(path: str | os.PathLike) -> LoraFile:
    path = Path(path)
    tensors, metadata = weights.load_tensors(path)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    for key, tensor in tensors.items():
        key = diffusers_key(key)
        if match := _ALPHA.match(key):
            alphas[match["module"]] = float(tensor)
        elif match := _KEY.match(key):
            half = match["ab"] or {"down": "lora_A", "up": "lora_B"}[match["updown"]]
            pairs.setdefault(match["module"], {})[half] = tensor
        else:
            raise VidgenError(f"{path}: key {key!r} is not LoRA weights (expected <module>.lora_A.weight / "
                              f".lora_B.weight)")
    for module, pair in pairs.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise VidgenError(f"{path}: {module} has {', '.join(pair)} but not both lora_A and lora_B")
    return LoraFile(path, pairs, _alpha(metadata, alphas, path))


def _alpha(metadata: dict[str, str], per_module: dict[str, float], path: Path) -> float | None:
    if "lora_alpha" in metadata:
        return float(metadata["lora_alpha"])
    if "lora_adapter_metadata" in metadata:  # diffusers: the LoraConfig as JSON
        config = json.loads(metadata["lora_adapter_metadata"])
        config = config.get("unet", config) if isinstance(config.get("unet"), dict) else config
        for key in ("lora_alpha", "unet.lora_alpha"):  # save_lora_weights writes the U-Net's under `unet.`
            if key in config:
                return float(config[key])
    if per_module:
        values = set(per_module.values())
        if len(values) > 1:
            raise VidgenError(f"{path}: its modules have different alphas {sorted(values)}; vidgen takes one per file")
        return values.pop()
    return None


def _resolve(model: nn.Module, lora: LoraFile) -> dict[str, str]:
    """File module path -> the model's module path; text-encoder modules dropped (with a warning);
    any other unmatched module, or one whose shape differs, refused."""
    modules = dict(model.named_modules())
    kohya = {KOHYA_UNET_PREFIX + n.removeprefix("unet.").replace(".", "_"): n for n in modules if n.startswith("unet.")}
    resolved, skipped = {}, 0
    for name, pair in lora.pairs.items():
        bare = name.removeprefix(PEFT_MODEL_PREFIX)
        target = bare if bare in modules else f"unet.{bare}" if f"unet.{bare}" in modules else kohya.get(name)
        if target is None:
            if name.startswith(TEXT_ENCODER_PREFIXES):
                skipped += 1
                continue
            raise VidgenError(f"{lora.path}: LoRA key '{name}.lora_A.weight' matches no module of this model's U-Net "
                              f"(expected 'unet.<diffusers module path>', motion modules included, or "
                              f"'temporal_attns.<layer>.to_qkv'): it was "
                              f"made for another model")
        module = modules[target]
        if isinstance(module, LoraLayer):
            module = module.get_base_layer()
        shape_in, shape_out = _features(module)
        a, b = pair["lora_A"], pair["lora_B"]
        if shape_in is None or a.shape[1] != shape_in or b.shape[0] != shape_out or b.shape[1] != a.shape[0]:
            raise VidgenError(f"{lora.path}: LoRA key '{name}.lora_A.weight' has shape {tuple(a.shape)} / "
                              f"{tuple(b.shape)}, which does not fit {target} ({type(module).__name__}): it was made "
                              f"for another model")
        resolved[name] = target
    if skipped:
        logger.warning("%s: %d text-encoder LoRA modules skipped (vidgen applies the U-Net's part only)",
                       lora.path, skipped)
    if not resolved:
        raise VidgenError(f"{lora.path}: no LoRA key targets this model's U-Net")
    return resolved


def _features(module: nn.Module) -> tuple[int | None, int | None]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.Conv2d):
        return module.in_channels, module.out_channels
    return None, None


def load(model: nn.Module, path: str | os.PathLike, scale: float = 1.0, adapter_name: str | None = None) -> str:
    """Add the LoRA in `path` to `model` (a VideoUNet) at `scale`, beside any loaded before; returns
    its adapter name. Every loaded adapter stays active, each at its own scale."""
    lora = read(path)
    targets = _resolve(model, lora)
    ranks = {pair["lora_A"].shape[0] for name, pair in lora.pairs.items() if name in targets}
    if len(ranks) > 1:
        raise VidgenError(f"{lora.path}: its modules have different ranks {sorted(ranks)}; vidgen takes one per file")
    rank = ranks.pop()
    existing = {n for m in model.modules() if isinstance(m, LoraLayer) for n in m.lora_A}
    name = adapter_name or f"lora{len(existing)}"
    config = LoraConfig(r=rank, lora_alpha=lora.alpha if lora.alpha is not None else rank,
                        target_modules=sorted(set(targets.values())))
    with warnings.catch_warnings():  # a second file is a second adapter beside the first, as meant
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, model, adapter_name=name)
    state = {}
    for file_name, target in targets.items():
        for half in ("lora_A", "lora_B"):
            state[f"{target}.{half}.weight"] = lora.pairs[file_name][half]
    result = set_peft_model_state_dict(model, state, adapter_name=name)
    if result.unexpected_keys:
        raise VidgenError(f"{lora.path}: LoRA key {result.unexpected_keys[0]!r} matches no adapter layer")
    activate_all(model)
    set_scale(model, name, scale)
    model.requires_grad_(False)
    return name


def activate_all(model: nn.Module) -> None:
    """Make every adapter loaded into `model` active in every layer that has it."""
    names = sorted({n for m in model.modules() if isinstance(m, LoraLayer) for n in m.lora_A})
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.set_adapter(names)


def set_scale(model: nn.Module, adapter_name: str, scale: float) -> None:
    """The adapter's update, scaled by `scale` times alpha / r (peft's LoraLayer.set_scale); 0 turns it off."""
    for module in model.modules():
        if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
            module.set_scale(adapter_name, scale)


# --- training --------------------------------------------------------------------------------

def add_temporal_adapter(model: nn.Module, rank: int, alpha: float | None = None,
                         adapter_name: str = "default") -> nn.Module:
    """Freeze `model` (a VideoUNet or DiffusersVideoUNet) and add a trainable LoRA of `rank` on its
    temporal attention's projections (a diffusers model's: its motion modules' or temporal
    transformers' to_q, to_k, to_v, to_out.0): the only parameters left to train."""
    if isinstance(model, DiffusersVideoUNet):
        targets = model.temporal_attention_projections()
    else:
        targets = [name for name, _ in model.named_modules()
                   if name.startswith("temporal_attns.") and name.rsplit(".", 1)[-1] in TEMPORAL_TARGETS]
    if not targets:
        raise VidgenError("this U-Net has no temporal attention layers to put a LoRA on")
    model.requires_grad_(False)
    # B starts at zero (peft's default init): the adapted model starts as the base.
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=targets), model,
                            adapter_name=adapter_name)
    return model


def save(model: nn.Module, path: str | os.PathLike, adapter_name: str = "default",
         extra_metadata: dict[str, str] | None = None) -> Path:
    """Write the adapter's weights (`<module path>.lora_A.weight` ...) with its alpha and rank; on a
    diffusers video U-Net the paths are `unet.<diffusers path>` and diffusers' own metadata is added
    (its LoraConfig under `unet.`), so AnimateDiffPipeline.load_lora_weights takes the file as well."""
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    config = model.peft_config[adapter_name]
    metadata = {"format": FORMAT, "lora_alpha": str(config.lora_alpha), "rank": str(config.r), **(extra_metadata or {})}
    if isinstance(model, DiffusersVideoUNet):
        targets = sorted(name.removeprefix("unet.") for name in config.target_modules)
        metadata["lora_adapter_metadata"] = json.dumps({"unet.r": config.r, "unet.lora_alpha": config.lora_alpha,
                                                        "unet.target_modules": targets})
    return weights.save_tensors({k: v.detach().cpu() for k, v in state.items()}, path, metadata)
