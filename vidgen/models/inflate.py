"""Inflation: a diffusers `UNet2DConditionModel` becomes a video U-Net (Make-A-Video, section 3.2).

The image U-Net is kept whole and untouched as `VideoUNet.unet` (its state-dict keys are the
image model's keys under `unet.`); nothing of diffusers is forked. The temporal layers live in
their own containers and are attached with forward hooks:

- after every `ResnetBlock2D`: a `TemporalConv` (pseudo-3D convolution, eq. 2);
- after every `Transformer2DModel`: a `TemporalAttention` (pseudo-3D attention, eq. 3);
- after `unet.time_embedding`: the `FpsEmbedding` (frame-rate conditioning) is added.

The 2-D network sees video as a batch of frames, `(b f) c h w`. Each hook reshapes its module's
output into the layer's sequence over frames, applies the layer and reshapes back; it learns
the frame count from a small context that `VideoUNet.forward` sets for the length of the call.
Outside that call, or with one frame, or with `enable_time=False`, the hooks pass outputs
through, so the same network trains on images and the image U-Net stays usable on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import checkpoint as ckpt
from ..errors import VidgenError
from .temporal import FpsEmbedding, TemporalAttention, TemporalConv, check_num_frames

CONFIG_NAME = "config.json"  # the image U-Net's diffusers config
TEMPORAL_CONFIG_NAME = "temporal.json"  # the inflation options
WEIGHTS_NAME = "model.safetensors"
TEMPORAL_PREFIXES = ("temporal_convs.", "temporal_attns.", "fps_embedding.")


@dataclass(frozen=True)
class InflationOptions:
    """How the temporal layers are built; saved beside the weights as temporal.json."""

    max_frames: int = 64  # rows of the frame position table: the most frames a clip may have
    attention_head_dim: int = 64  # channels per temporal attention head


@dataclass
class _FrameContext:
    """What the hooks need to know during one VideoUNet forward call."""

    num_frames: int = 1  # 1: hooks pass outputs through
    fps: torch.Tensor | None = None  # (b,), or None for no fps conditioning

    @contextlib.contextmanager
    def use(self, num_frames: int, fps: torch.Tensor | None) -> Iterator[None]:
        saved = (self.num_frames, self.fps)
        self.num_frames, self.fps = num_frames, fps
        try:
            yield
        finally:
            self.num_frames, self.fps = saved


def _module_key(name: str) -> str:
    """`down_blocks.0.resnets.1` -> `down_blocks_0_resnets_1` (ModuleDict keys cannot hold dots)."""
    return name.replace(".", "_")


class _TemporalHook:
    """Forward hook on a spatial module: run `layer` over frames on the module's output.

    The output may be a tensor, a tuple whose first item is the hidden states (what the U-Net's
    blocks get from `Transformer2DModel(..., return_dict=False)`), or an output object with `.sample`.
    """

    def __init__(self, layer: TemporalConv | TemporalAttention, context: _FrameContext):
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


class _FpsHook:
    """Forward hook on `unet.time_embedding`: add the fps embedding, repeated for every frame."""

    def __init__(self, embedding: FpsEmbedding, context: _FrameContext):
        self.embedding, self.context = embedding, context

    def __call__(self, module, args, output):
        if self.context.num_frames == 1 or self.context.fps is None:
            return None
        fps = repeat(self.embedding(self.context.fps), "b d -> (b f) d", f=self.context.num_frames)
        return output + fps.to(output.dtype)


class VideoUNet(nn.Module):
    """An image U-Net with temporal layers: (b, c, f, h, w) in, (b, c, f, h, w) out.

    Build one with `inflate_unet(unet2d)`. At initialisation it equals `unet2d` applied to each
    frame separately. The image U-Net is `self.unet`, reused (not copied): its weights are the
    "spatial" parameters; the rest are "temporal".
    """

    def __init__(self, unet: UNet2DConditionModel, options: InflationOptions = InflationOptions()):
        super().__init__()
        self.unet = unet
        self.options = options
        self._context = _FrameContext()
        self.temporal_convs = nn.ModuleDict()
        self.temporal_attns = nn.ModuleDict()
        for name, module in unet.named_modules():
            if any(isinstance(h, (_TemporalHook, _FpsHook)) for h in module._forward_hooks.values()):
                raise VidgenError("this U-Net is already inside a VideoUNet: inflate a fresh UNet2DConditionModel")
            if isinstance(module, ResnetBlock2D):
                layer = self.temporal_convs[_module_key(name)] = TemporalConv(module.out_channels)
            elif isinstance(module, Transformer2DModel):
                layer = self.temporal_attns[_module_key(name)] = TemporalAttention(
                    module.out_channels, options.max_frames, options.attention_head_dim)
            else:
                continue
            module.register_forward_hook(_TemporalHook(layer, self._context))
        self.fps_embedding = FpsEmbedding(unet.time_embedding.linear_2.out_features)
        unet.time_embedding.register_forward_hook(_FpsHook(self.fps_embedding, self._context))

    # --- running -----------------------------------------------------------------------------

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                fps: float | torch.Tensor | None = None, enable_time: bool = True) -> torch.Tensor:
        """Predict the noise (or v) for a batch of clips.

        sample: (b, c, f, h, w) latents. timestep: a number, a 0-d tensor or one per clip (b,).
        encoder_hidden_states: (b, n, d) text conditioning, shared by all frames of a clip.
        fps: frames per second of the clip (a number or (b,)); None leaves fps unconditioned.
        enable_time=False (or f == 1) runs the image U-Net on every frame, temporal layers off.
        """
        b, _, f, _, _ = sample.shape
        temporal = enable_time and f > 1
        if temporal:
            check_num_frames(f, self.options.max_frames)
        if torch.is_tensor(timestep) and timestep.ndim == 1:
            timestep = repeat(timestep, "b -> (b f)", f=f)
        if fps is not None:
            fps = torch.as_tensor(fps, dtype=torch.float32, device=sample.device).expand(b)
        x = rearrange(sample, "b c f h w -> (b f) c h w")  # frames as a batch of images
        cond = repeat(encoder_hidden_states, "b n d -> (b f) n d", f=f)
        with self._context.use(f if temporal else 1, fps):
            out = self.unet(x, timestep, cond, return_dict=False)[0]  # ((b f) c h w)
        return rearrange(out, "(b f) c h w -> b c f h w", b=b)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the image U-Net's blocks in the backward pass to save memory.

        The recomputation runs after `forward` has returned, so each checkpointed call carries the
        frame context it was made under.
        """
        def checkpointed(module, *args):
            context = (self._context.num_frames, self._context.fps)

            def run(*inputs):
                with self._context.use(*context):
                    return module(*inputs)

            return checkpoint(run, *args, use_reentrant=False)

        self.unet.enable_gradient_checkpointing(checkpointed)

    # --- parameter groups ----------------------------------------------------------------------

    def temporal_parameters(self) -> Iterator[nn.Parameter]:
        """The new parameters: temporal convolutions, temporal attention, fps embedding."""
        for container in (self.temporal_convs, self.temporal_attns, self.fps_embedding):
            yield from container.parameters()

    def spatial_parameters(self) -> Iterator[nn.Parameter]:
        """The image U-Net's parameters."""
        return self.unet.parameters()

    def freeze_spatial(self, frozen: bool = True) -> "VideoUNet":
        """Train only the temporal layers; the spatial ones keep what the image model learned
        (Make-A-Video section 3.4: temporal layers are fitted to unlabeled video after the image model)."""
        self.unet.requires_grad_(not frozen)
        return self

    def temporal_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(TEMPORAL_PREFIXES)}

    # --- saving and loading --------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write `folder/` with config.json (the image U-Net's), temporal.json and model.safetensors."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.unet.save_config(folder)
        ckpt.write_json(folder / TEMPORAL_CONFIG_NAME, dataclasses.asdict(self.options))
        ckpt.save_tensors(self.state_dict(), folder / WEIGHTS_NAME)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> "VideoUNet":
        """Load a folder written by `save_pretrained`; the weights must match the configs exactly."""
        folder = Path(folder)
        for name in (CONFIG_NAME, TEMPORAL_CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise ckpt.CheckpointError(f"{folder} is not a video U-Net folder: {name} is missing "
                                           f"(write one with VideoUNet.save_pretrained or `vidgen inflate`)")
        options = _options(folder / TEMPORAL_CONFIG_NAME, **ckpt.read_json(folder / TEMPORAL_CONFIG_NAME))
        with init_empty_weights():  # parameters on the meta device until the file fills them
            model = cls(UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder)), options)
        ckpt.load_strict(model, ckpt.load_tensors(folder / WEIGHTS_NAME)[0], source=folder / WEIGHTS_NAME,
                         assign=True)
        return model.to(dtype=dtype).eval()

    def save_motion_module(self, path: str | os.PathLike) -> Path:
        """Write the temporal weights alone (a "motion module") with the inflation options."""
        metadata = {"format": "vidgen-motion-module", "options": json.dumps(dataclasses.asdict(self.options))}
        return ckpt.save_tensors(self.temporal_state_dict(), path, metadata)

    @classmethod
    def from_motion_module(cls, unet: UNet2DConditionModel, path: str | os.PathLike) -> "VideoUNet":
        """Inflate `unet` and load a motion module's temporal weights into it.

        `unet` must have the layout the module was trained on (same blocks and widths); its own
        weights may differ, e.g. a fine-tuned image model.
        """
        tensors, metadata = ckpt.load_tensors(path)
        if metadata.get("format") != "vidgen-motion-module":
            raise ckpt.CheckpointError(f"{path} is not a vidgen motion module "
                                       f"(write one with VideoUNet.save_motion_module)")
        model = inflate_unet(unet, **json.loads(metadata["options"]))
        ckpt.load_strict(model, tensors, source=path, only=model.temporal_state_dict().keys())
        return model


def inflate_unet(unet2d: UNet2DConditionModel, **options) -> VideoUNet:
    """Turn an image U-Net into a video U-Net whose temporal layers start as the identity.

    options: fields of `InflationOptions` (max_frames, attention_head_dim). The image U-Net is
    reused, not copied: its modules become the video U-Net's spatial layers.
    """
    if not isinstance(unet2d, UNet2DConditionModel):
        raise TypeError(f"inflate_unet takes a diffusers UNet2DConditionModel, got {type(unet2d).__name__}")
    param = next(unet2d.parameters())
    return VideoUNet(unet2d, _options("inflate_unet", **options)).to(device=param.device, dtype=param.dtype)


def _options(source, **options) -> InflationOptions:
    known = [f.name for f in dataclasses.fields(InflationOptions)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise VidgenError(f"{source}: unknown inflation options {unknown}: the options are {', '.join(known)}")
    return InflationOptions(**options)
