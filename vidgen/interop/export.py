"""A vidgen model whose base stage is a diffusers video U-Net, written back as a folder that
diffusers' own pipeline loads: `TextToVideoSDPipeline` for a `UNet3DConditionModel` base
(ModelScope, zeroscope), `AnimateDiffPipeline` (unet/ + motion_adapter/) for a `UNetMotionModel`.

What diffusers cannot hold is refused before anything loads (`check_exportable`): vidgen's own
inflated U-Net (its temporal layers hang on hooks of a UNet2DConditionModel, with an fps
embedding, a layout no diffusers class has), and a base stage with vidgen's additions (an
anchor-frame input). The interpolation and super-resolution stages have no place in the
diffusers pipelines; the export holds the base stage and says that it left them out.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import VidgenError
from ..weights import read_json, write_json
from .folders import unet_class

MARKER = "vidgen_export.json"  # an exported folder's note of its source: `--overwrite` replaces only these
PIPELINE_OF = {"UNet3DConditionModel": "TextToVideoSDPipeline", "UNetMotionModel": "AnimateDiffPipeline"}


def check_exportable(model_folder: str | os.PathLike) -> tuple[str, list[str]]:
    """(the diffusers pipeline the export will be, the stages left out), from the folder's JSON
    files; a VidgenError where diffusers has no class for the base stage."""
    from ..model_index import read_model_index

    folder = Path(model_folder)
    index = read_model_index(folder)
    base = folder / index.stages["base"]
    kind = unet_class(base)
    if kind is None:
        raise VidgenError(f"{folder}'s base stage is vidgen's own inflated U-Net (temporal layers and an fps embedding "
                          f"hooked onto an image U-Net), which no diffusers pipeline holds: only models built on a "
                          f"diffusers video U-Net (zeroscope, AnimateDiff) export; share this one as a vidgen folder")
    if (base / "temporal.json").is_file():
        options = read_json(base / "temporal.json")
        if options.get("extra_in_channels") or options.get("extra_conditions"):
            raise VidgenError(f"{base} has vidgen's extra inputs or conditions (an anchor frame), which diffusers' "
                              f"{PIPELINE_OF[kind]} has no place for: export a base stage trained without them")
    return PIPELINE_OF[kind], [name for name in index.stages if name != "base"]


def motion_adapter_of(unet):
    """The MotionAdapter holding a UNetMotionModel's motion modules (what AnimateDiffPipeline saves
    beside its U-Net), with every layout field of the U-Net's config."""
    from diffusers import MotionAdapter

    from ..weights import load_strict

    c = unet.config
    adapter = MotionAdapter(block_out_channels=c.block_out_channels, motion_layers_per_block=c.layers_per_block,
                            motion_transformer_layers_per_block=c.temporal_transformer_layers_per_block,
                            motion_transformer_layers_per_mid_block=c.temporal_transformer_layers_per_mid_block,
                            motion_num_attention_heads=c.motion_num_attention_heads,
                            motion_norm_num_groups=c.norm_num_groups, motion_max_seq_length=c.motion_max_seq_length,
                            use_motion_mid_block=c.use_motion_mid_block)
    state = {k: v for k, v in unet.state_dict().items() if "motion_modules" in k}
    load_strict(adapter, state, source="the U-Net's motion modules")
    return adapter.to(device=unet.device, dtype=unet.dtype).eval()


def export_diffusers(model, out: str | os.PathLike, source: str = "") -> Path:
    """Write `model` (a VideoModel with a DiffusersVideoUNet base) as a diffusers pipeline folder,
    atomically; returns its path."""
    from diffusers import AnimateDiffPipeline, TextToVideoSDPipeline

    from ..fs import atomic_dir
    from .diffusers_video import DiffusersVideoUNet

    base = model.stages["base"]
    if not isinstance(base, DiffusersVideoUNet) or base.extension_state_dict():
        raise VidgenError("only a base stage that is a diffusers video U-Net, without vidgen's extra inputs, exports")
    parts = dict(vae=model.vae, text_encoder=model.text_encoder.model, tokenizer=model.text_encoder.tokenizer,
                 unet=base.unet, scheduler=model.scheduler)
    if base.kind == "UNetMotionModel":
        pipe = AnimateDiffPipeline(**parts, motion_adapter=motion_adapter_of(base.unet))
    else:
        pipe = TextToVideoSDPipeline(**parts)
    with atomic_dir(out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        write_json(tmp / MARKER, {"source": str(source), "pipeline": type(pipe).__name__})
    return Path(out)
