"""Flags that change the loaded model rather than the sampling settings, shared by `generate` and
`eval`: LoRA adapters (vidgen.interop.lora) and the memory options (vidgen.memory).

`check_model_options` runs before any weights load (a LoRA file must exist and hold LoRA keys);
`apply_model_options` runs on the loaded pipeline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import arguments as types


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("adapters and memory")
    group.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                       help="LoRA weights (.safetensors, diffusers/PEFT key names) on the base stage's U-Net, spatial "
                       "or temporal layers, at SCALE (default 1; 0 leaves the model as it was); repeatable")
    group.add_argument("--offload", action="store_true",
                       help="keep the model in CPU memory and move each part (text encoder, U-Nets, VAE) to --device "
                       "only while it runs (accelerate's model CPU offload)")
    group.add_argument("--attention-chunk", type=types.positive_int, metavar="N",
                       help="temporal attention over N sequences at a time and feed-forwards one frame at a time: "
                       "smaller peak memory, same frames up to float rounding")
    group.add_argument("--decode-chunk", type=types.positive_int, metavar="N",
                       help="frames the VAE decodes per call (default: the model's, 8): smaller is less memory, same "
                       "frames")


def lora_specs(args: argparse.Namespace) -> list[tuple[Path, float]]:
    from ..interop.lora import parse_spec

    return [parse_spec(spec) for spec in getattr(args, "lora", [])]


def check_model_options(args: argparse.Namespace) -> None:
    """Refuse a missing or non-LoRA --lora file before the model loads."""
    from ..interop.lora import check_file

    for path, _ in lora_specs(args):
        check_file(path)


def load_device(args: argparse.Namespace) -> str:
    """Where the weights load: the CPU with --offload (parts move to --device as they run)."""
    return "cpu" if getattr(args, "offload", False) else args.device


def apply_model_options(pipe, args: argparse.Namespace) -> None:
    from .. import memory
    from ..interop import lora

    model = pipe.model
    for path, scale in lora_specs(args):
        lora.load(model.stages["base"], path, scale)
    if getattr(args, "attention_chunk", None):
        memory.set_attention_chunk(model, args.attention_chunk)
    if getattr(args, "decode_chunk", None):
        memory.set_decode_chunk(model, args.decode_chunk)
    if getattr(args, "offload", False):
        memory.enable_model_offload(model, args.device)
