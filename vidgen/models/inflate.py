"""Inflation: a diffusers `UNet2DConditionModel` becomes a video U-Net (Make-A-Video, section 3.2).

The image U-Net is kept whole and untouched as `VideoUNet.unet` (its state-dict keys are the
image model's keys under `unet.`); nothing of diffusers is forked. The temporal layers live in
their own containers and are attached with forward hooks:

- after every `ResnetBlock2D`: a `TemporalConv` (pseudo-3D convolution, eq. 2);
- after every `Transformer2DModel`: a `TemporalAttention` (pseudo-3D attention, eq. 3);
- after `unet.time_embedding`: the `FpsEmbedding` (frame-rate conditioning) is added, and
  the `TextEmbedding` of the prompt where `InflationOptions.text_embedding` is set;
- after `unet.conv_in`: a convolution of the extra input channels, where the model has them.

The 2-D network sees video as a batch of frames, `(b f) c h w`; the hooks (vidgen.models.hooks)
reshape it into each layer's sequences over frames and back, and pass outputs through outside
`VideoUNet.forward`, with one frame or with `enable_time=False`, so the same network trains on
images and the image U-Net stays usable on its own.

Fast paths (tests/test_fast_paths.py holds each to the plain path; tools/bench.py times them):
spatial and temporal attention run through `F.scaled_dot_product_attention`; each hook makes
exactly two copies, into the layer's layout and back; `set_chunk_size` bounds the temporal
attention's and the feed-forwards' temporaries; `vidgen.precision.autocast` runs float32
weights in bfloat16 or float16; `torch.compile(video_unet)` traces through the hooks (a frame
count is a guard) and `video_unet.to(memory_format=torch.channels_last)` converts the 2-D
convolutions' weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import weights
from ..interop import sdxl
from ..errors import VidgenError
from .hooks import ExtraInputHook, FpsHook, FrameContext, TemporalHook, extra_input_conv, module_key
from .temporal import FpsEmbedding, TemporalAttention, TemporalConv, TextEmbedding, check_num_frames

CONFIG_NAME = "config.json"  # the image U-Net's diffusers config
TEMPORAL_CONFIG_NAME = "temporal.json"  # the inflation options
WEIGHTS_NAME = "model.safetensors"
# Keys of the layers inflation adds: the temporal layers and the new conditioning inputs.
TEMPORAL_PREFIXES = ("temporal_convs.", "temporal_attns.", "fps_embedding.", "condition_embeddings.",
                     "input_extension.", "text_embedding.")


@dataclass(frozen=True)
class InflationOptions:
    """How the temporal layers are built; saved beside the weights as temporal.json."""

    max_frames: int = 64  # rows of the frame position table: the most frames a clip may have
    attention_head_dim: int = 64  # channels per temporal attention head
    # Inputs beyond the latents, concatenated to them on the channel axis: the known frames and
    # mask of frame interpolation, the low-resolution latents of super-resolution (vidgen.models.cascade).
    extra_in_channels: int = 0
    # Scalar conditions beyond fps, each embedded and added to the time embedding like fps:
    # the frame skip of interpolation, the noise-augmentation level of super-resolution.
    extra_conditions: tuple[str, ...] = ()
    # The prompt pooled over its tokens and added to the time embedding of clips (TextEmbedding),
    # so that motion words reach the temporal layers. The video stage adds it (model.text_embedding).
    text_embedding: bool = False

    def __post_init__(self):
        object.__setattr__(self, "extra_conditions", tuple(self.extra_conditions))  # JSON gives a list


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
        self._context = FrameContext()
        self.temporal_convs = nn.ModuleDict()
        self.temporal_attns = nn.ModuleDict()
        for name, module in unet.named_modules():
            if any(isinstance(h, (TemporalHook, FpsHook, ExtraInputHook)) for h in module._forward_hooks.values()):
                raise VidgenError("this U-Net is already inside a VideoUNet: inflate a fresh UNet2DConditionModel")
            key = module_key(name)
            if isinstance(module, ResnetBlock2D):
                layer = self.temporal_convs[key] = TemporalConv(module.out_channels)
            elif isinstance(module, Transformer2DModel):
                layer = self.temporal_attns[key] = TemporalAttention(module.out_channels, options.max_frames,
                                                                     options.attention_head_dim)
            else:
                continue
            module.register_forward_hook(TemporalHook(layer, self._context))
        time_dim = unet.time_embedding.linear_2.out_features
        self.fps_embedding = FpsEmbedding(time_dim)
        self.condition_embeddings = nn.ModuleDict({name: FpsEmbedding(time_dim) for name in options.extra_conditions})
        self.text_embedding = (TextEmbedding(unet.config.cross_attention_dim, time_dim)
                               if options.text_embedding else None)
        unet.time_embedding.register_forward_hook(FpsHook(self.fps_embedding, self.condition_embeddings, self._context,
                                                          self.text_embedding))
        self.input_extension = None
        if options.extra_in_channels:
            self.input_extension = extra_input_conv(unet.conv_in, options.extra_in_channels)
            unet.conv_in.register_forward_hook(ExtraInputHook(self.input_extension, self._context))

    # --- running -----------------------------------------------------------------------------

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                fps: float | torch.Tensor | None = None, conditions: dict[str, float | torch.Tensor] | None = None,
                enable_time: bool = True) -> torch.Tensor:
        """Predict the noise (or v) for a batch of clips.

        sample: (b, c + e, f, h, w): latents, then the `extra_in_channels` e where the model has them.
        timestep: a number, a 0-d tensor or one per clip (b,).
        encoder_hidden_states: (b, n, d) text conditioning, shared by all frames of a clip (for an
        SDXL U-Net, with the pooled embedding and time ids packed after the tokens: vidgen.interop.sdxl).
        fps: frames per second of the clip (a number or (b,)); None leaves fps unconditioned.
        conditions: the model's `extra_conditions`, name -> a number or (b,); all of them or none.
        enable_time=False (or f == 1) runs the image U-Net on every frame, temporal layers off.
        Returns (b, c, f, h, w).
        """
        b, channels, f, _, _ = sample.shape
        latent_channels, extra_channels = self.unet.config.in_channels, self.options.extra_in_channels
        if channels != latent_channels + extra_channels:
            raise VidgenError(f"this U-Net takes {latent_channels} latent + {extra_channels} extra input channels, "
                              f"got {channels}")
        temporal = enable_time and f > 1
        if temporal:
            check_num_frames(f, self.options.max_frames)
        if torch.is_tensor(timestep) and timestep.ndim == 1:
            timestep = repeat(timestep, "b -> (b f)", f=f)
        x = rearrange(sample, "b c f h w -> (b f) c h w")  # frames as a batch of images
        x, extra = x[:, :latent_channels], (x[:, latent_channels:] if extra_channels else None)
        added = None
        if sdxl.is_sdxl_unet(self.unet.config):  # pooled text and size ids ride as extra rows (vidgen.interop.sdxl)
            encoder_hidden_states, added = sdxl.split_condition(encoder_hidden_states, self.unet.config)
            added = {k: repeat(v, "b d -> (b f) d", f=f) for k, v in added.items()}
        cond = repeat(encoder_hidden_states, "b n d -> (b f) n d", f=f)  # every frame reads the same prompt
        with self._context.use(f if temporal else 1, self._scalars(fps, b, sample.device),
                               self._conditions(conditions, b, sample.device), extra, encoder_hidden_states):
            out = self.unet(x, timestep, cond, added_cond_kwargs=added, return_dict=False)[0]  # ((b f) c h w)
        return rearrange(out, "(b f) c h w -> b c f h w", b=b)

    @staticmethod
    def _scalars(value, batch: int, device) -> torch.Tensor | None:
        return None if value is None else torch.as_tensor(value, dtype=torch.float32, device=device).expand(batch)

    def _conditions(self, given, batch: int, device) -> dict[str, torch.Tensor]:
        expected = set(self.options.extra_conditions)
        if given is None and not expected:
            return {}
        if set(given or ()) != expected:
            raise VidgenError(f"this U-Net is conditioned on {sorted(expected) or 'no extra conditions'}, "
                              f"got {sorted(given or ())}")
        return {name: self._scalars(value, batch, device) for name, value in given.items()}

    # --- fast paths ----------------------------------------------------------------------------

    def set_chunk_size(self, temporal: int | None = None, feed_forward: int | None = None) -> "VideoUNet":
        """Bound the largest temporaries of a forward pass; None turns a chunking off.

        temporal: each temporal attention runs over this many of its (b h w) sequences at a time.
        feed_forward: each spatial transformer's feed-forward (GEGLU, 8x as wide as its input: the
        widest activation of a step) runs over this many images of the (b f) batch at a time,
        through diffusers' `set_chunk_feed_forward`; it must divide b x f, b counting both guidance
        branches (1 always does). On a CPU this is also faster (the chunk stays in cache).
        Outputs stay equal to the unchunked ones up to float rounding.
        """
        for name, value in (("temporal", temporal), ("feed_forward", feed_forward)):
            if value is not None and value < 1:
                raise VidgenError(f"{name} chunk size must be a positive number or None, got {value}")
        for layer in self.temporal_attns.values():
            layer.chunk_size = temporal
        for module in self.unet.modules():
            if isinstance(module, BasicTransformerBlock):
                module.set_chunk_feed_forward(feed_forward, dim=0)
        return self

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the image U-Net's blocks in the backward pass to save memory.

        The recomputation runs after `forward` has returned, so each checkpointed call carries the
        frame context it was made under.
        """
        def checkpointed(module, *args):
            context = self._context.values()

            def run(*inputs):
                with self._context.use(*context):
                    return module(*inputs)

            return checkpoint(run, *args, use_reentrant=False)

        self.unet.enable_gradient_checkpointing(checkpointed)

    # --- parameter groups ----------------------------------------------------------------------

    def temporal_parameters(self) -> Iterator[nn.Parameter]:
        """The new parameters: temporal convolutions and attention, fps, extra-condition and text
        embeddings, the convolution of the extra input channels."""
        for container in (self.temporal_convs, self.temporal_attns, self.fps_embedding, self.condition_embeddings,
                          self.input_extension, self.text_embedding):
            if container is not None:
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
        weights.write_json(folder / TEMPORAL_CONFIG_NAME, dataclasses.asdict(self.options))
        weights.save_tensors(self.state_dict(), folder / WEIGHTS_NAME)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> "VideoUNet":
        """Load a folder written by `save_pretrained`; the weights must match the configs exactly."""
        folder = Path(folder)
        for name in (CONFIG_NAME, TEMPORAL_CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise weights.CheckpointError(f"{folder} is not a video U-Net folder: {name} is missing "
                                           f"(write one with VideoUNet.save_pretrained or `vidgen inflate`)")
        options = _options(folder / TEMPORAL_CONFIG_NAME, **weights.read_json(folder / TEMPORAL_CONFIG_NAME))
        with init_empty_weights():  # parameters on the meta device until the file fills them
            model = cls(UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder)), options)
        weights.load_strict(model, weights.load_tensors(folder / WEIGHTS_NAME)[0], source=folder / WEIGHTS_NAME,
                         assign=True)
        return model.to(dtype=dtype).eval()

    def save_motion_module(self, path: str | os.PathLike) -> Path:
        """Write the temporal weights alone (a "motion module") with the inflation options."""
        metadata = {"format": "vidgen-motion-module", "options": json.dumps(dataclasses.asdict(self.options))}
        return weights.save_tensors(self.temporal_state_dict(), path, metadata)

    @classmethod
    def from_motion_module(cls, unet: UNet2DConditionModel, path: str | os.PathLike) -> "VideoUNet":
        """Inflate `unet` and load a motion module's temporal weights into it.

        `unet` must have the layout the module was trained on (same blocks and widths); its own
        weights may differ, e.g. a fine-tuned image model.
        """
        tensors, metadata = weights.load_tensors(path)
        if metadata.get("format") != "vidgen-motion-module":
            raise weights.CheckpointError(f"{path} is not a vidgen motion module "
                                       f"(write one with VideoUNet.save_motion_module)")
        options = _options(Path(path), **json.loads(metadata["options"]))
        model = inflate_unet(unet, **dataclasses.asdict(options))
        weights.load_strict(model, tensors, source=path, only=model.temporal_state_dict().keys())
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


def with_options(base: VideoUNet, **changes) -> VideoUNet:
    """A new video U-Net with `base`'s weights (copied) and some inflation options changed:
    what the change adds (extra inputs, conditions, the text embedding) starts where it adds
    nothing, so the new network computes what `base` did until trained."""
    unet2d = UNet2DConditionModel.from_config(base.unet.config)
    unet2d.load_state_dict(base.unet.state_dict())
    options = _options("with_options", **{**dataclasses.asdict(base.options), **changes})
    model = VideoUNet(unet2d, options).to(device=base.unet.device, dtype=base.unet.dtype)
    state = base.temporal_state_dict()
    if "extra_in_channels" in changes:  # inputs given anew mean something new: a new, zero convolution reads them
        state = {k: v for k, v in state.items() if not k.startswith("input_extension.")}
    weights.load_strict(model, state, source="the base video U-Net", only=state.keys())
    return model


def _options(source, **options) -> InflationOptions:
    """`InflationOptions` from a temporal.json, a motion module's metadata or a call (`source` names
    which), every name checked. A file may name a switch this version does not have: an earlier
    vidgen wrote every switch of its experiments (docs/experiments.md, "Removed from the package";
    their code is at git tag experiments-before-cleanup). Off, it is ignored; on, the weights need
    a layer this version lacks, and the file is refused. A call must name known options only."""
    known = [f.name for f in dataclasses.fields(InflationOptions)]
    unknown = sorted(set(options) - set(known))
    if unknown and isinstance(source, Path):
        enabled = [name for name in unknown if options[name] is True]
        if enabled:
            raise weights.CheckpointError(
                f"{source}: {', '.join(enabled)} {'is' if len(enabled) == 1 else 'are'} on, and this version of vidgen "
                f"has no such option (an experiment removed from the package: see docs/experiments.md; the code is "
                f"at git tag experiments-before-cleanup): use a model trained without it, or vidgen at that tag")
        if all(options[name] is False for name in unknown):
            options, unknown = {k: v for k, v in options.items() if k in known}, []
    if unknown:
        raise VidgenError(f"{source}: unknown inflation options {unknown}: the options are {', '.join(known)}")
    return InflationOptions(**options)
