"""The precision of sampling: float32 weights whose matrix products run in bfloat16 or float16.

`GenerationDefaults.autocast` ("off", "bfloat16", "float16" or "auto") says what a model's U-Nets
run in while sampling; "auto" is bfloat16 where the device computes it natively (a CUDA GPU that
supports it, a CPU with AVX512-BF16 or AMX) and float32 elsewhere. Weights, norms and softmax
statistics stay float32 (torch.autocast), so a model samples in either precision from one folder.
"""

from __future__ import annotations

import contextlib

import torch

from .errors import VidgenError
from .model_index import check_autocast


def autocast(device: str | torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """A context that runs a float32 model's matrix products in `dtype` (torch.autocast), for
    sampling in bfloat16 or float16 with float32 weights; float32 or None: no change. On a GPU,
    and on a CPU with native bfloat16 (`cpu_computes_bfloat16`), bfloat16 is the faster one.

    `with autocast(latents.device, torch.bfloat16): prediction = unet(latents, t, text)`.
    Loading the model in bfloat16 (`from_pretrained(dtype=...)`) is the other way, with half the
    weight memory; autocast keeps float32 weights and float32 norms and softmax statistics.
    """
    device = torch.device(device)
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    if dtype not in (torch.bfloat16, torch.float16):
        raise VidgenError(f"autocast runs in bfloat16 or float16, not {dtype}")
    return torch.autocast(device.type, dtype=dtype)


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU has bfloat16 arithmetic of its own (AVX512-BF16 or AMX, as Linux reports
    them), where oneDNN runs bfloat16 convolutions and matrix products faster than float32 ones
    (1.7x on the default model's base stage, 2-core AMD EPYC with AVX512-BF16). Elsewhere it
    would emulate them, and slower: False there, and on systems that do not say."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.partition(":")[2].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def autocast_dtype(setting: str, device: str | torch.device) -> torch.dtype | None:
    """The dtype `autocast` is to run in for a sampling setting (GenerationDefaults.autocast) on
    `device`: None for "off"; "auto" is bfloat16 where the device computes it natively and None
    (float32) elsewhere."""
    check_autocast(setting, "autocast")
    device = torch.device(device)
    if setting == "auto":
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        else:
            native = device.type == "cpu" and cpu_computes_bfloat16()
        return torch.bfloat16 if native else None
    return {"off": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[setting]


def autocast_name(dtype: torch.dtype | None) -> str:
    """What the matrix products run in under `autocast(dtype)`: bfloat16, float16 or float32."""
    return str(dtype or torch.float32).removeprefix("torch.")
