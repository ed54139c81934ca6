"""What the training loop does differently when accelerate shards the model (FSDP, DeepSpeed).

Under DDP every process holds whole weights and the loop's EMA, checks and export read them
directly. Under FSDP 2 (configs/accelerate/fsdp.yaml) each process holds a shard of every trained
parameter (a DTensor): the EMA is kept shard by shard (an elementwise update needs no more), and
everything that must see whole tensors gathers them, on every process at once (a collective):
the EMA's checkpoint file, the finiteness check and the exported model folder. DeepSpeed ZeRO-2
keeps weights whole (only optimizer states and gradients are sharded); ZeRO-3 partitions them
inside DeepSpeed, where vidgen's EMA cannot follow, so a ZeRO-3 run must turn the EMA off.

accelerate 1.16 shards only on accelerators: on CPU processes (ACCELERATE_USE_CPU=true) it runs
an FSDP or DeepSpeed launch as plain DDP (MULTI_CPU), silently; `check_engine` refuses that
instead, so a run never trains under another engine than its launch asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from accelerate.utils import DistributedType

from ..errors import VidgenError

_ASKED = {"ACCELERATE_USE_FSDP": DistributedType.FSDP, "ACCELERATE_USE_DEEPSPEED": DistributedType.DEEPSPEED}


def check_engine(accelerator, ema_decay: float, preview_every: int = 0) -> None:
    """Refuse an engine the launch asked for that accelerate did not start, and ZeRO-3 with an EMA;
    say that previews are off under sharded weights."""
    for variable, engine in _ASKED.items():
        if os.environ.get(variable, "false").lower() == "true" and accelerator.distributed_type != engine:
            raise VidgenError(f"the launch asked for {engine.value} but accelerate runs {accelerator.distributed_type.value}"
                              f": accelerate shards only on GPUs (on CPU processes it would train plain data-parallel); "
                              f"use --multi_gpu (DDP) here, or run on GPUs (docs/cluster.md)")
    if partitioned(accelerator) and preview_every:
        print("train.preview_every: no previews while the weights are sharded (the exported model previews as usual)")
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None and plugin.zero_stage == 3 and ema_decay > 0:
        raise VidgenError("DeepSpeed ZeRO-3 partitions the weights where vidgen's EMA cannot follow them: set "
                          "train.ema_decay=0, or use ZeRO-2 or FSDP (configs/accelerate/)")


def sharded(accelerator) -> bool:
    """Whether the trained weights are sharded across processes (FSDP)."""
    return accelerator.distributed_type == DistributedType.FSDP


def partitioned(accelerator) -> bool:
    """Whether no process holds whole weights (FSDP, DeepSpeed ZeRO-3): exports gather them."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return sharded(accelerator) or (plugin is not None and plugin.zero_stage == 3)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The full tensor of a shard (a collective: every process calls it), or the tensor itself."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` cut as `like` (a parameter) is sharded: this process's shard, or `full` itself."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(like, DTensor):
        return full
    return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements)


def all_finite(accelerator, params: list[torch.Tensor]) -> bool:
    """Every process's weights finite (the same answer on every process)."""
    local = all(torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all() for p in params)
    if accelerator.num_processes == 1:
        return bool(local)
    return bool(accelerator.gather(torch.tensor([float(local)], device=accelerator.device)).min() > 0)


def full_state_dict(accelerator, model) -> dict[str, torch.Tensor]:
    """The whole model's weights on the main process (every process calls it under FSDP)."""
    return accelerator.get_state_dict(model)


def export_model(accelerator, stage, model, params, ema, folder: Path, use_ema: bool,
                 rebuild: Callable[[], object]) -> Path:
    """Write the stage's model folder (with the EMA weights where kept) on the main process. Under
    FSDP or ZeRO-3 every process gathers the weights, and the main process exports them through a fresh,
    whole copy of the stage (`rebuild()`, on the CPU): a sharded model cannot be saved as it is."""
    accelerator.wait_for_everyone()
    swap = ema is not None and use_ema
    if swap:
        ema.store(params)
        ema.copy_to(params)
    try:
        state = full_state_dict(accelerator, model) if partitioned(accelerator) else None
        if accelerator.is_main_process:
            if state is None:
                stage.export(accelerator.unwrap_model(model), folder)
            else:
                whole_stage = rebuild()
                whole_stage.model.load_state_dict(state)
                whole_stage.export(whole_stage.model, folder)
    finally:
        if swap:
            ema.restore(params)
    accelerator.wait_for_everyone()
    return folder
