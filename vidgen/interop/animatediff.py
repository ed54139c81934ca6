"""AnimateDiff (Guo et al. 2023): a Stable Diffusion image model with a pretrained motion module
becomes a vidgen video model, through diffusers' own `UNetMotionModel`.

This is Make-A-Video's inflation (section 3.2) with someone else's temporal layers: the image
U-Net keeps its weights, and the motion module, trained on video against a frozen SD 1.x U-Net,
supplies the temporal attention. The module comes as

- a diffusers `MotionAdapter` folder (config.json + diffusion_pytorch_model.safetensors), or
- the original single-file motion module (mm_sd_v14 / v15 / v15_v2 / v3 style) saved as
  `.safetensors`: its key names are the original code's, translated here to the MotionAdapter's
  (`original_to_adapter_keys`), and the adapter's layout is read off the tensors.

Pickled `.ckpt` / `.pth` modules are refused: convert them to safetensors where you trust them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

from .. import weights
from ..errors import VidgenError
from .diffusers_video import DiffusersVideoUNet

MOTION_HEADS = 8  # AnimateDiff's motion modules all use 8 heads; the tensors do not say
# original name piece -> the MotionAdapter's (BasicTransformerBlock's) name for it
ORIGINAL_NAMES = ((".temporal_transformer.", "."), (".attention_blocks.0.", ".attn1."),
                  (".attention_blocks.1.", ".attn2."), (".norms.0.", ".norm1."), (".norms.1.", ".norm2."),
                  (".ff_norm.", ".norm3."))
# The original code gives each of a block's two attentions a position table; diffusers has one per block.
ORIGINAL_POSITIONS = re.compile(r"\.attention_blocks\.(\d+)\.pos_encoder\.pe$")


def original_to_adapter_keys(tensors: dict[str, torch.Tensor], source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The original motion module's tensors under the MotionAdapter's key names.

    The first attention's sinusoid table becomes the block's `pos_embed.pe`; the second's is the
    same table (a fixed sinusoid in the original code) and is checked, then dropped."""
    converted = {}
    for key, value in tensors.items():
        if "motion_modules." not in key:
            raise weights.CheckpointError(f"{source}: {key} is not a motion module key (expected keys such as "
                                          f"down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight)")
        match = ORIGINAL_POSITIONS.search(key)
        if match:
            block = key[:match.start()].replace(".temporal_transformer.", ".")
            first = tensors.get(key[:match.start()] + ".attention_blocks.0.pos_encoder.pe")
            if first is None or first.shape != value.shape or not torch.allclose(first, value):
                raise weights.CheckpointError(f"{source}: {key} differs from its block's first position table; "
                                              f"diffusers' motion blocks share one")
            if match.group(1) == "0":
                converted[block + ".pos_embed.pe"] = value
            continue
        new = key
        for old, replacement in ORIGINAL_NAMES:
            new = new.replace(old, replacement)
        converted[new] = value
    return converted


def adapter_config(tensors: dict[str, torch.Tensor], norm_groups: int, source: str | os.PathLike) -> dict:
    """The MotionAdapter config that holds these (adapter-named) tensors: widths, modules per
    block, transformer layers, mid block and frame table from the tensors; heads are AnimateDiff's
    8 and the norm groups the image U-Net's."""
    def indices(prefix: str, part: str) -> list[int]:
        pattern = re.compile(re.escape(prefix) + re.escape(part) + r"\.(\d+)\.")
        return sorted({int(m.group(1)) for key in tensors for m in [pattern.match(key)] if m})

    down = indices("", "down_blocks")
    if not down:
        raise weights.CheckpointError(f"{source} holds no down_blocks.N.motion_modules: not a motion module")
    widths, layers, transformer_layers = [], [], []
    for i in down:
        modules = indices(f"down_blocks.{i}.", "motion_modules")
        widths.append(int(tensors[f"down_blocks.{i}.motion_modules.0.norm.weight"].shape[0]))
        layers.append(len(modules))
        transformer_layers.append(len(indices(f"down_blocks.{i}.motion_modules.0.", "transformer_blocks")))
    mid = indices("mid_block.motion_modules.0.", "transformer_blocks")
    tables = [v.shape[1] for k, v in tensors.items() if k.endswith(".pos_embed.pe")]
    return dict(block_out_channels=tuple(widths), motion_layers_per_block=tuple(layers),
                motion_transformer_layers_per_block=tuple(transformer_layers),
                motion_transformer_layers_per_mid_block=max(1, len(mid)), use_motion_mid_block=bool(mid),
                motion_num_attention_heads=MOTION_HEADS, motion_norm_num_groups=norm_groups,
                motion_max_seq_length=int(max(tables)) if tables else 32)


def load_motion_module_file(path: str | os.PathLike, norm_groups: int) -> MotionAdapter:
    """An original single-file motion module (.safetensors) as a diffusers MotionAdapter, strictly."""
    tensors = original_to_adapter_keys(weights.load_tensors(path)[0], path)
    config = adapter_config(tensors, norm_groups, path)
    with init_empty_weights():  # parameters on the meta device until the file fills them; buffers (pe) real
        adapter = MotionAdapter(**config)
    for key, value in adapter.state_dict().items():  # a file without position tables: the sinusoids diffusers makes
        if key.endswith(".pos_embed.pe") and key not in tensors:
            tensors[key] = value
    weights.load_strict(adapter, tensors, source=path, assign=True)
    return adapter.eval()


def load_motion_adapter(path: str | os.PathLike, norm_groups: int = 32) -> MotionAdapter:
    """A MotionAdapter folder, or an original motion module in a .safetensors file."""
    path = Path(path)
    if path.is_dir():
        return weights.load_diffusers(MotionAdapter, path)
    if path.suffix in weights.PICKLE_SUFFIXES:
        raise weights.CheckpointError(f"{path} is a pickle, which vidgen never loads (unpickling runs code from the "
                                      f"file): convert it to .safetensors where you trust it")
    if path.suffix != ".safetensors":
        raise weights.CheckpointError(f"--motion-adapter {path} is neither a MotionAdapter folder nor a .safetensors "
                                      f"motion module")
    return load_motion_module_file(path, norm_groups)


def animate(image_unet: UNet2DConditionModel, adapter: MotionAdapter) -> DiffusersVideoUNet:
    """The image U-Net with the adapter's motion modules, as diffusers' AnimateDiffPipeline builds
    it (`UNetMotionModel.from_unet2d`), wrapped as a vidgen stage."""
    try:
        unet = UNetMotionModel.from_unet2d(image_unet, adapter)
    except (ValueError, RuntimeError) as exc:  # block count or widths differ
        raise VidgenError(f"the motion adapter does not fit this image U-Net ({str(exc).splitlines()[0]}): "
                          f"use a motion module trained for this Stable Diffusion version") from None
    return DiffusersVideoUNet(unet.eval())


def animatediff_model(image_model: str | os.PathLike, motion_adapter: str | os.PathLike,
                      dtype: torch.dtype = torch.float32):
    """A vidgen VideoModel: the Stable Diffusion folder `image_model` with the motion module
    `motion_adapter` (folder or .safetensors file); its other parts are the image model's."""
    from ..model_folder import IMAGE_MODEL_FOLDERS, VideoModel
    from ..model_index import GenerationDefaults, ModelIndex
    from ..models.vae import latent_factor
    from ..diffusion.schedulers import DEFAULT, load_scheduler
    from ..text import TextEncoder
    from diffusers import AutoencoderKL

    folder = Path(image_model)
    missing = [sub for sub in IMAGE_MODEL_FOLDERS if not (folder / sub).is_dir()]
    if missing:
        raise weights.CheckpointError(f"{folder} is not a diffusers text-to-image folder: it lacks "
                                      f"{', '.join(missing)}/")
    image_unet = weights.load_diffusers(UNet2DConditionModel, folder / "unet", dtype)
    adapter = load_motion_adapter(motion_adapter, image_unet.config.norm_num_groups or 32)
    base = animate(image_unet, adapter if adapter.dtype == dtype else adapter.to(dtype))
    vae = weights.load_diffusers(AutoencoderKL, folder / "vae", dtype)
    size = image_unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    k = latent_factor(vae)
    defaults = GenerationDefaults(num_frames=min(16, base.options.max_frames), height=height * k, width=width * k)
    return VideoModel({"base": base}, vae, TextEncoder.from_pretrained(folder, dtype),
                      load_scheduler(DEFAULT, folder / "scheduler"), ModelIndex(defaults=defaults))
