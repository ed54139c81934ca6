"""Running a Stable-Diffusion-size video model on one machine: what bounds the memory of a call.

- Model CPU offload (`enable_model_offload`): every component stays in CPU memory and is moved
  to the execution device only while it runs, through accelerate's `cpu_offload_with_hook`
  chained in the order the cascade runs them (text encoder, anchor U-Net, stage U-Nets, VAE):
  when one starts, the one before goes back to the CPU. At most one component is on the GPU at
  a time. On a CPU-only machine the execution device is the CPU and nothing moves; the hooks are
  the same.
- Attention chunking (`set_attention_chunk`): the temporal attention runs over n of its
  (b h w) sequences at a time and the spatial transformers' feed-forwards (the widest activation
  of a step) one image at a time (VideoUNet.set_chunk_size).
- Frame-chunked decoding (`set_decode_chunk`): the VAE decodes n frames per call
  (vidgen.models.vae.decode_latents), so its activations are bounded by n frames, not the clip.

Chunked attention and decoding give the same numbers as the whole computation up to float
rounding; the decode is exactly the same (each frame is decoded on its own either way).
"""

from __future__ import annotations

import torch
from accelerate import cpu_offload_with_hook

from .errors import VidgenError


def offload_order(model) -> list[torch.nn.Module]:
    """The model's components in the order a generation call runs them."""
    text = model.text_encoder
    encoders = [text.model, *([text.model_2] if hasattr(text, "model_2") else [])]
    anchor = [model.image_unet] if model.image_unet is not None else []
    image_base = [model.image_base] if model.image_base is not None else []  # image-to-video's base stage
    return [*encoders, *anchor, *image_base, *model.stages.values(), model.vae]


def enable_model_offload(model, execution_device: str | torch.device = "cpu") -> list:
    """Keep `model`'s (a VideoModel) components on the CPU, each moved to `execution_device` only
    while it runs; returns the hooks (`hook.offload()` sends a component back by hand).

    The arrow critic, where the model has one, is small and called outside `forward`: it stays on
    the execution device.
    """
    device = torch.device(execution_device)
    hooks, previous = [], None
    for module in offload_order(model):
        _, previous = cpu_offload_with_hook(module, device, prev_module_hook=previous)
        hooks.append(previous)
    if model.critic is not None:
        model.critic.to(device)
    model.execution_device = device
    return hooks


def set_attention_chunk(model, sequences: int) -> None:
    """Every stage's temporal attention over `sequences` sequences at a time, feed-forwards per image."""
    if sequences < 1:
        raise VidgenError(f"--attention-chunk must be a positive number, got {sequences}")
    for unet in [*model.stages.values(), *([model.image_base] if model.image_base is not None else [])]:
        unet.set_chunk_size(temporal=sequences, feed_forward=1)


def set_decode_chunk(model, frames: int) -> None:
    """The VAE decodes `frames` frames per call."""
    if frames < 1:
        raise VidgenError(f"--decode-chunk must be a positive number, got {frames}")
    model.index.vae_chunk_size = frames
