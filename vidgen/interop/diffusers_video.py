"""diffusers' own video U-Nets as vidgen stages: `UNet3DConditionModel` (ModelScope, zeroscope)
and `UNetMotionModel` (AnimateDiff), wrapped, not re-implemented.

`DiffusersVideoUNet` gives a diffusers video U-Net the interface of vidgen's inflated U-Net
(vidgen.models.inflate.VideoUNet): `forward(sample (b c f h w), t, text (b n d), fps=,
conditions=)`, its temporal and spatial parameter groups, `freeze_spatial`, folders that
save and load strictly. The sampler, the training stages and the cascade therefore take it
where they take a VideoUNet. The wrapped model's weights are untouched and saved in diffusers'
own layout, so diffusers loads the folder back (vidgen.interop.export).

The frame interpolation and super-resolution stages (Make-A-Video sections 3.3, 3.4) extend it
as they extend a VideoUNet: zero-initialised extra input channels (a convolution added to
`conv_in`'s output) and extra scalar conditions (embeddings added to the time embedding),
through the same forward hooks (vidgen.models.hooks); diffusers' model stays as it was. These
additions are vidgen's and are saved beside the diffusers weights (extension.safetensors).
fps is not a condition of either diffusers model and is ignored.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator

import diffusers
import torch
from einops import rearrange, repeat
from torch import nn

from .. import weights
from ..errors import VidgenError
from ..models.hooks import ExtraInputHook, FpsHook, FrameContext, extra_input_conv
from ..models.inflate import TEMPORAL_CONFIG_NAME, InflationOptions, VideoUNet, _options
from ..models.temporal import FpsEmbedding, check_num_frames
from .folders import UNBOUNDED_FRAMES, VIDEO_UNETS, stage_max_frames, unet_class

EXTENSION_NAME = "extension.safetensors"  # vidgen's extra inputs and conditions, beside diffusers' weights
EXTENSION_PREFIXES = ("condition_embeddings.", "input_extension.")
# Names of the wrapped models' temporal modules (the rest of each model is its image U-Net).
TEMPORAL_MODULES = {"UNet3DConditionModel": ("transformer_in", "temp_convs", "temp_attentions"),
                    "UNetMotionModel": ("motion_modules",)}
ATTENTION_PROJECTIONS = (".to_q", ".to_k", ".to_v", ".to_out.0")  # diffusers' Attention's linear layers


class DiffusersVideoUNet(nn.Module):
    """A diffusers video U-Net (`self.unet`) with vidgen's stage interface; (b, c, f, h, w) in and out."""

    def __init__(self, unet: nn.Module, options: InflationOptions | None = None):
        super().__init__()
        kind = type(unet).__name__
        if kind not in VIDEO_UNETS:
            raise TypeError(f"DiffusersVideoUNet wraps a {' or '.join(VIDEO_UNETS)}, got {kind}")
        if options is None:
            options = InflationOptions(max_frames=_max_frames(unet))
        if options.text_embedding:
            raise VidgenError(f"a {kind} base stage cannot take vidgen's text embedding (model.text_embedding): "
                              f"diffusers' model has no place for it; train with model.text_embedding=false")
        self.unet, self.options = unet, options
        self._context = FrameContext()
        time_dim = unet.time_embedding.linear_2.out_features
        self.condition_embeddings = nn.ModuleDict({name: FpsEmbedding(time_dim) for name in options.extra_conditions})
        self.input_extension = None
        self._hooks = []
        if options.extra_conditions:  # fps stays unconditioned: the context's fps is always None
            self._hooks.append(unet.time_embedding.register_forward_hook(
                FpsHook(None, self.condition_embeddings, self._context)))
        if options.extra_in_channels:
            self.input_extension = extra_input_conv(unet.conv_in, options.extra_in_channels)
            self._hooks.append(unet.conv_in.register_forward_hook(ExtraInputHook(self.input_extension, self._context)))
        self.to(device=unet.device, dtype=unet.dtype)

    @property
    def kind(self) -> str:
        return type(self.unet).__name__

    # --- running -----------------------------------------------------------------------------

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                fps: float | torch.Tensor | None = None, conditions: dict[str, float | torch.Tensor] | None = None,
                enable_time: bool = True) -> torch.Tensor:
        """sample (b, c + e, f, h, w), timestep (a number, 0-d or (b,)), text (b, n, d) -> (b, c, f, h, w).
        fps is accepted and ignored (neither diffusers model is conditioned on it)."""
        b, channels, f, _, _ = sample.shape
        latent_channels, extra_channels = self.unet.config.in_channels, self.options.extra_in_channels
        if channels != latent_channels + extra_channels:
            raise VidgenError(f"this U-Net takes {latent_channels} latent + {extra_channels} extra input channels, "
                              f"got {channels}")
        if not enable_time:
            raise VidgenError(f"a {self.kind} cannot run without its temporal layers: train its image U-Net "
                              f"separately")
        check_num_frames(f, self.options.max_frames)
        extra = None
        if extra_channels:  # conv_in sees the frames as a batch of images, (b f) first
            extra = rearrange(sample[:, latent_channels:], "b e f h w -> (b f) e h w")
        if self.kind == "UNetMotionModel":  # it takes the text per frame, as AnimateDiffPipeline repeats it
            encoder_hidden_states = repeat(encoder_hidden_states, "b n d -> (b f) n d", f=f)
        # Contiguous: torch 2.13's CPU backward through UNet3DConditionModel crashes (SIGSEGV) on the
        # strided latents the VAE path gives (tests/test_diffusers_video.py trains on them).
        latents = sample[:, :latent_channels].contiguous()
        with self._context.use(f, None, self._conditions(conditions, b, sample.device), extra):
            return self.unet(latents, timestep, encoder_hidden_states,
                             return_dict=False)[0]  # (b c f h w)

    def _conditions(self, given, batch: int, device) -> dict[str, torch.Tensor]:
        expected = set(self.options.extra_conditions)
        if set(given or ()) != expected:
            raise VidgenError(f"this U-Net is conditioned on {sorted(expected) or 'no extra conditions'}, "
                              f"got {sorted(given or ())}")
        return {name: torch.as_tensor(value, dtype=torch.float32, device=device).expand(batch)
                for name, value in (given or {}).items()}

    # --- parameter groups ----------------------------------------------------------------------

    def _is_temporal(self, name: str) -> bool:
        parts = name.split(".")
        return any(module in parts for module in TEMPORAL_MODULES[self.kind])

    def temporal_parameters(self) -> Iterator[nn.Parameter]:
        """The diffusers model's temporal modules, and vidgen's extra inputs and conditions."""
        for name, p in self.unet.named_parameters():
            if self._is_temporal(name):
                yield p
        yield from self.condition_embeddings.parameters()
        if self.input_extension is not None:
            yield from self.input_extension.parameters()

    def spatial_parameters(self) -> Iterator[nn.Parameter]:
        """The image U-Net inside the diffusers model: everything but its temporal modules."""
        return (p for name, p in self.unet.named_parameters() if not self._is_temporal(name))

    def temporal_attention_projections(self) -> list[str]:
        """Module paths (from this wrapper, `unet.` first) of the query, key, value and output
        projections of the temporal attentions: where AnimateDiff's motion LoRAs sit."""
        return [name for name, module in self.named_modules()
                if isinstance(module, nn.Linear) and name.startswith("unet.") and self._is_temporal(name[5:])
                and name.endswith(ATTENTION_PROJECTIONS)]

    def freeze_spatial(self, frozen: bool = True) -> "DiffusersVideoUNet":
        for p in self.spatial_parameters():
            p.requires_grad_(not frozen)
        return self

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    def set_chunk_size(self, temporal: int | None = None, feed_forward: int | None = None) -> "DiffusersVideoUNet":
        """Chunk the feed-forwards as diffusers does (`enable_forward_chunking`); `temporal` has no
        diffusers counterpart and is ignored."""
        if feed_forward is not None:
            self.unet.enable_forward_chunking(feed_forward, dim=0)
        return self

    def temporal_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items()
                if k.startswith(EXTENSION_PREFIXES) or (k.startswith("unet.") and self._is_temporal(k[5:]))}

    def extension_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(EXTENSION_PREFIXES)}

    def with_options(self, **changes) -> "DiffusersVideoUNet":
        """A copy with some options changed (vidgen.models.cascade: the interpolation and
        super-resolution stages' extra inputs and conditions); what is added starts at zero."""
        options = _options("with_options", **{**dataclasses.asdict(self.options), **changes})
        unet = type(self.unet).from_config(self.unet.config)  # a fresh copy: the hooks stay on self.unet
        unet.load_state_dict(self.unet.state_dict())
        model = DiffusersVideoUNet(unet.to(device=self.unet.device, dtype=self.unet.dtype), options)
        state = self.extension_state_dict()
        if "extra_in_channels" in changes:
            state = {k: v for k, v in state.items() if not k.startswith("input_extension.")}
        state = {k: v for k, v in state.items() if k in model.state_dict()}
        weights.load_strict(model, state, source="the base U-Net's extension", only=state.keys())
        return model

    # --- saving and loading --------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """diffusers' own folder (config.json, diffusion_pytorch_model.safetensors) plus vidgen's
        temporal.json and, where the stage has extra inputs or conditions, extension.safetensors."""
        folder = Path(folder)
        self.unet.save_pretrained(folder, safe_serialization=True)
        weights.write_json(folder / TEMPORAL_CONFIG_NAME, dataclasses.asdict(self.options))
        extension = self.extension_state_dict()
        if extension:
            weights.save_tensors(extension, folder / EXTENSION_NAME)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> "DiffusersVideoUNet":
        """Load a diffusers video U-Net folder strictly (safetensors only; a missing, extra or
        misshapen key is refused naming it and the file), with vidgen's extension where saved."""
        folder = Path(folder)
        kind = unet_class(folder)
        if kind is None:
            raise weights.CheckpointError(f"{folder} holds no {' or '.join(VIDEO_UNETS)}")
        unet = weights.load_diffusers(getattr(diffusers, kind), folder, dtype)
        options = None
        if (folder / TEMPORAL_CONFIG_NAME).is_file():
            options = _options(folder / TEMPORAL_CONFIG_NAME, **weights.read_json(folder / TEMPORAL_CONFIG_NAME))
        model = cls(unet, options)
        expected = model.extension_state_dict()
        if expected or (folder / EXTENSION_NAME).is_file():
            tensors = weights.load_tensors(folder / EXTENSION_NAME)[0]
            weights.load_strict(model, tensors, source=folder / EXTENSION_NAME, only=expected.keys())
        return model.to(dtype=dtype).eval()


def _max_frames(unet: nn.Module) -> int:
    if type(unet).__name__ == "UNetMotionModel":
        return int(unet.config.motion_max_seq_length)  # its motion modules' sinusoid table
    return UNBOUNDED_FRAMES


def load_stage(folder: str | os.PathLike, dtype: torch.dtype | None = None) -> VideoUNet | DiffusersVideoUNet:
    """A stage folder of a model: a diffusers video U-Net (its config.json names one) or vidgen's own."""
    if unet_class(folder) is not None:
        return DiffusersVideoUNet.from_pretrained(folder, dtype)
    return VideoUNet.from_pretrained(folder, dtype)


__all__ = ["DiffusersVideoUNet", "load_stage", "stage_max_frames"]
