"""The forward hooks that run an inflated U-Net's temporal layers inside diffusers' image U-Net
(vidgen.models.inflate), without forking it.

The 2-D network sees video as a batch of frames, `(b f) c h w`. Each hook reshapes its module's
output into the layer's sequence over frames (the layer's `LAYOUT`), applies the layer and
reshapes back; it learns the frame count from a small context (`FrameContext`) that
`VideoUNet.forward` sets for the length of the call. Outside that call, or with one frame, or
with `enable_time=False`, the hooks pass outputs through, so the same network trains on images
and the image U-Net stays usable on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Iterator

import torch
from einops import rearrange, repeat
from torch import nn

from .temporal import FpsEmbedding, TemporalAttention, TemporalConv, TextEmbedding


@dataclass
class FrameContext:
    """What the hooks need to know during one VideoUNet forward call."""

    num_frames: int = 1  # 1: temporal hooks pass outputs through
    fps: torch.Tensor | None = None  # (b,), or None for no fps conditioning
    conditions: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # extra scalar conditions, (b,) each
    extra_input: torch.Tensor | None = None  # ((b f) e h w): the channels past the latents
    text: torch.Tensor | None = None  # (b n d): the prompt's tokens, for the text embedding

    def values(self) -> tuple:
        return self.num_frames, self.fps, self.conditions, self.extra_input, self.text

    @contextlib.contextmanager
    def use(self, num_frames: int, fps=None, conditions=None, extra_input=None, text=None) -> Iterator[None]:
        saved = self.values()
        self.num_frames, self.fps, self.conditions, self.extra_input, self.text = (num_frames, fps, conditions or {},
                                                                                  extra_input, text)
        try:
            yield
        finally:
            self.num_frames, self.fps, self.conditions, self.extra_input, self.text = saved


def module_key(name: str) -> str:
    """`down_blocks.0.resnets.1` -> `down_blocks_0_resnets_1` (ModuleDict keys cannot hold dots)."""
    return name.replace(".", "_")


class TemporalHook:
    """Forward hook on a spatial module: run `layer` over frames on the module's output.

    The output may be a tensor, a tuple whose first item is the hidden states (what the U-Net's
    blocks get from `Transformer2DModel(..., return_dict=False)`), or an output object with `.sample`.
    """

    def __init__(self, layer: TemporalConv | TemporalAttention, context: FrameContext):
        self.layer, self.context = layer, context

    def __call__(self, module, args, output):
        frames = self.context.num_frames
        if frames == 1:
            return None  # output unchanged
        if isinstance(output, tuple):
            return (self._apply(output[0], frames), *output[1:])
        if isinstance(output, torch.Tensor):
            return self._apply(output, frames)
        return dataclasses.replace(output, sample=self._apply(output.sample, frames))

    def _apply(self, hidden: torch.Tensor, frames: int) -> torch.Tensor:
        h, w = hidden.shape[-2:]
        layout = self.layer.LAYOUT
        x = rearrange(hidden, f"(b f) c h w -> {layout}", f=frames)  # sequences over frames
        x = self.layer(x)
        return rearrange(x, f"{layout} -> (b f) c h w", h=h, w=w)  # ((b f) c h w)


class FpsHook:
    """Forward hook on `unet.time_embedding`: add the fps and text embeddings (video only) and the
    extra conditions' embeddings, each repeated for every frame."""

    def __init__(self, embedding: FpsEmbedding, extra: nn.ModuleDict, context: FrameContext,
                 text_embedding: TextEmbedding | None = None):
        self.embedding, self.extra, self.context = embedding, extra, context
        self.text_embedding = text_embedding

    def __call__(self, module, args, output):
        c = self.context
        added = [self.extra[name](value) for name, value in c.conditions.items()]  # (b d) each
        if c.num_frames > 1 and c.fps is not None:
            added.append(self.embedding(c.fps))
        if c.num_frames > 1 and self.text_embedding is not None:
            added.append(self.text_embedding(c.text))
        if not added:
            return None
        frames = output.shape[0] // added[0].shape[0]
        return output + repeat(sum(added), "b d -> (b f) d", f=frames).to(output.dtype)


def extra_input_conv(conv_in: nn.Conv2d, channels: int) -> nn.Conv2d:
    """A convolution of `channels` extra input channels shaped like `conv_in`, zero-initialised, so
    that the network with it starts as the network without it (ExtraInputHook adds it)."""
    conv = nn.Conv2d(channels, conv_in.out_channels, conv_in.kernel_size, padding=conv_in.padding)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ExtraInputHook:
    """Forward hook on `unet.conv_in`: add the convolution of the extra input channels.

    The image U-Net's own `conv_in` still sees only the latents; the extra channels get a
    convolution of their own, zero-initialised, so the network starts as it was.
    """

    def __init__(self, conv: nn.Conv2d, context: FrameContext):
        self.conv, self.context = conv, context

    def __call__(self, module, args, output):
        extra = self.context.extra_input
        return None if extra is None else output + self.conv(extra.to(output.dtype))
