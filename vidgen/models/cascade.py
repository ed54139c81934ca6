"""The cascade's other networks: frame interpolation and super-resolution as video U-Nets with
extra inputs (Make-A-Video, sections 3.3 and 3.4).

Both start as a copy of the trained base video U-Net with zero-initialised extra input channels
and extra scalar conditions (vidgen.models.inflate), so at the start of training they are the
base model; what they learn is how to use what they are given.

- Masked frame interpolation (section 3.3): the input also holds the latents of the known
  frames (zeros elsewhere) and a binary mask channel; conditioned on the frame skip and on the
  dense clip's fps. Known frames every `skip` frames interpolate; only the first frame known
  animates an image; the first frames known extend a clip.
- Super-resolution (section 3.4): the input also holds the low-resolution latents, upsampled
  to the output size and noise-augmented (Ho et al. 2022, "Cascaded diffusion"), conditioned on
  the augmentation level.

The base stage itself may take an anchor frame (`anchored_unet`): explicit image conditioning,
after Emu Video (Girdhar et al. 2023, section 3.1), which factorises text-to-video into
text-to-image, then image-and-text-to-video. A text-to-image U-Net draws one frame of the clip
from the prompt; the video U-Net reads that frame's latents at every frame, with each frame's
signed distance from it, and makes the clip around it. Where the object is no longer has to be
drawn from noise, so what the prompt says about motion (where it goes from there) is most of
what is left to predict, instead of a sliver of the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from .inflate import VideoUNet, with_options

INTERP_CONDITION = "frame_skip"
SR_CONDITION = "noise_level"


def extend_unet(base: VideoUNet, extra_in_channels: int, extra_conditions: tuple[str, ...]) -> VideoUNet:
    """A new video U-Net with `base`'s weights plus zero-initialised extra inputs and conditions."""
    if hasattr(base, "with_options"):  # a wrapped diffusers video U-Net (vidgen.interop.diffusers_video)
        return base.with_options(extra_in_channels=extra_in_channels, extra_conditions=extra_conditions)
    return with_options(base, extra_in_channels=extra_in_channels, extra_conditions=extra_conditions)


def interpolation_unet(base: VideoUNet) -> VideoUNet:
    """Input: latents + known-frame latents + mask (2c + 1 channels); conditioned on the frame skip."""
    return extend_unet(base, base.unet.config.in_channels + 1, (INTERP_CONDITION,))


def super_resolution_unet(base: VideoUNet) -> VideoUNet:
    """Input: latents + upsampled low-resolution latents (2c channels); conditioned on the noise level."""
    return extend_unet(base, base.unet.config.in_channels, (SR_CONDITION,))


def anchored_unet(base: VideoUNet) -> VideoUNet:
    """Input: latents + the anchor frame's latents at every frame + each frame's offset from the
    anchor (2c + 1 channels); the base's scalar conditions (fps) unchanged."""
    return extend_unet(base, base.unet.config.in_channels + 1, base.options.extra_conditions)


# --- anchor inputs ----------------------------------------------------------------------------

def anchor_index(num_frames: int, position: float) -> int:
    """The frame at `position` of a clip (0: the first frame, 1: the last), rounding half up."""
    return int(position * (num_frames - 1) + 0.5)


def anchor_input(latents: torch.Tensor, anchor: torch.Tensor, index: int) -> torch.Tensor:
    """(b, c, f, h, w) latents and (b, c, h, w) anchor latents -> (b, 2c + 1, f, h, w): what an
    anchored base U-Net reads. The last channel is each frame's signed distance from the anchor
    frame `index`, in clip lengths ((j - index) / (f - 1)): every frame's spatial layers know how
    far the object has gone since the anchor, not only the temporal layers."""
    b, _, f, h, w = latents.shape
    offset = (torch.arange(f, device=latents.device, dtype=torch.float32) - index) / max(f - 1, 1)  # (f,)
    offset = offset.to(latents.dtype).view(1, 1, f, 1, 1).expand(b, 1, f, h, w)
    return torch.cat([latents, repeat(anchor.to(latents.dtype), "b c h w -> b c f h w", f=f), offset], dim=1)


# --- interpolation inputs ---------------------------------------------------------------------

def keyframe_mask(num_frames: int, skip: int, device=None) -> torch.Tensor:
    """(f,) True at the known frames 0, skip, 2*skip, ... of a dense clip."""
    mask = torch.zeros(num_frames, dtype=torch.bool, device=device)
    mask[::skip] = True
    return mask


def spread_keyframes(keyframes: torch.Tensor, skip: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Place f keyframe latents every `skip` frames of a dense clip of f * skip frames.

    keyframes: (b, c, f, h, w). Returns known (b, c, f*skip, h, w), zeros between keyframes, and
    mask (b, 1, f*skip, h, w). The last skip - 1 frames follow the last keyframe: they are
    extrapolated, so the dense clip spans the keyframes' whole duration.
    """
    b, c, f, h, w = keyframes.shape
    known = keyframes.new_zeros(b, c, f * skip, h, w)
    known[:, :, ::skip] = keyframes
    mask = keyframe_mask(f * skip, skip, keyframes.device).to(keyframes.dtype)
    return known, mask.view(1, 1, -1, 1, 1).expand(b, 1, -1, h, w)


def blend_keyframes(keyframes: torch.Tensor, skip: int) -> torch.Tensor:
    """(b, c, f, h, w) keyframes -> (b, c, f*skip, h, w): each dense frame a linear blend of the
    keyframes on either side by its distance to them; the frames after the last keyframe hold it.

    Where interpolation starts part-way through its schedule (`InterpolationSettings.strength`),
    this is the clip it starts from: background and colors are the keyframes', and the network
    only has to resolve where the object is between them.
    """
    f = keyframes.shape[2]
    position = torch.arange(f * skip, device=keyframes.device, dtype=torch.float32) / skip  # in keyframes
    before = position.floor().long().clamp(max=f - 1)
    after = (before + 1).clamp(max=f - 1)
    weight = torch.where(after > before, position - before, 0.0).view(1, 1, -1, 1, 1).to(keyframes.dtype)
    return (1 - weight) * keyframes[:, :, before] + weight * keyframes[:, :, after]


def interpolation_input(latents: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(b, c, f, h, w) x3 -> (b, 2c + 1, f, h, w): what the interpolation U-Net reads."""
    return torch.cat([latents, known * mask, mask], dim=1)


# --- super-resolution inputs ------------------------------------------------------------------

def upsample_latents(latents: torch.Tensor, scale: int) -> torch.Tensor:
    """(b, c, f, h, w) -> (b, c, f, h*scale, w*scale), bilinear per frame."""
    b = latents.shape[0]
    frames = rearrange(latents, "b c f h w -> (b f) c h w")
    frames = F.interpolate(frames.float(), scale_factor=scale, mode="bilinear", align_corners=False).to(latents.dtype)
    return rearrange(frames, "(b f) c h w -> b c f h w", b=b)


def super_resolution_input(latents: torch.Tensor, low_res_upsampled: torch.Tensor) -> torch.Tensor:
    """(b, c, f, H, W) x2 -> (b, 2c, f, H, W): what the super-resolution U-Net reads."""
    return torch.cat([latents, low_res_upsampled], dim=1)
