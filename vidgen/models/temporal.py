"""The temporal layers that turn an image U-Net into a video U-Net (Make-A-Video, Singer et al.
2022, section 3.2 "Spatiotemporal layers").

- `TemporalConv`: the 1-D half of the pseudo-3D convolution, eq. (2):
  Conv_P3D(h) = Conv1D(Conv2D(h) o T) o T, a convolution over frames at every pixel.
- `TemporalAttention`: the 1-D half of the pseudo-3D attention, eq. (3):
  ATTN_P3D(h) = unflatten(ATTN1D(ATTN2D(flatten(h)) o T) o T), self-attention over frames at
  every pixel, with a frame position encoding.
- `FpsEmbedding`: the frame-rate conditioning ("Frame rate conditioning", section 3.2), added
  to the diffusion time embedding.
- `TextEmbedding`: the prompt, pooled over tokens, added to the time embedding (optional; see
  the class).

Every layer starts as the identity (the paper initialises the temporal convolutions to the
identity and the temporal attention's output projection to zero), so an inflated network
equals its image network frame by frame until training moves it. The initial values are set
in one place, `init_identity_`.

The layers see sequences over frames: `TemporalConv` takes (n, c, f), `TemporalAttention`
takes (n, f, c), n being batch x pixels; each names its layout in `LAYOUT` for the code that
reshapes video into it (vidgen.models.inflate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from einops import rearrange
from torch import nn

from ..errors import VidgenError


def check_num_frames(num_frames: int, max_frames: int) -> None:
    """Refuse a frame count the frame position table cannot encode."""
    if not 1 <= num_frames <= max_frames:
        raise VidgenError(
            f"{num_frames} frames asked for, but this model takes 1 to {max_frames} frames (its temporal attention "
            f"has a position table of max_frames={max_frames}): ask for fewer frames, or inflate the image model "
            f"again with a larger max_frames"
        )


class TemporalConv(nn.Module):
    """Convolution over frames, kernel 3, zero-padded at the clip ends (eq. 2).

    Initialised to the identity: a dirac kernel (only the centre tap, channel i -> i) and zero bias.
    """

    LAYOUT = "(b h w) c f"

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        init_identity_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n c f) -> (n c f)
        return self.conv(x)


class TemporalAttention(nn.Module):
    """Pre-norm multi-head self-attention over frames with a residual connection (eq. 3).

    A learned frame position table of `max_frames` rows (initialised to sinusoids) is added to
    the normalised input, so the layer knows frame order; more frames than rows is an error.
    Heads are `attention_head_dim` channels wide where the width divides evenly, else one head
    spans all channels. The output projection starts at zero: the layer starts as the identity.

    `chunk_size` (a setting, not a weight; None: all at once) runs the n sequences that many at a
    time, so the layer's temporaries (q, k, v, attention weights) are bounded by the chunk rather
    than by batch x pixels; the result is the same up to float rounding.
    """

    LAYOUT = "(b h w) f c"

    def __init__(self, channels: int, max_frames: int = 64, attention_head_dim: int = 64):
        super().__init__()
        self.max_frames = max_frames
        self.heads = channels // attention_head_dim if channels % attention_head_dim == 0 else 1
        self.chunk_size: int | None = None
        self.norm = nn.LayerNorm(channels)
        self.to_qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.to_out = nn.Linear(channels, channels)
        self.position = nn.Parameter(torch.empty(max_frames, channels))
        init_identity_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n f c) -> (n f c)
        check_num_frames(x.shape[1], self.max_frames)
        if self.chunk_size is None or x.shape[0] <= self.chunk_size:
            return self._attend(x)
        out = torch.empty_like(x)
        for start in range(0, x.shape[0], self.chunk_size):
            out[start:start + self.chunk_size] = self._attend(x[start:start + self.chunk_size])
        return out

    def _attend(self, x: torch.Tensor) -> torch.Tensor:  # (n f c) -> (n f c)
        frames = x.shape[1]
        h = self.norm(x) + self.position[:frames].to(x.dtype)
        q, k, v = rearrange(self.to_qkv(h), "n f (three heads d) -> three n heads f d", three=3, heads=self.heads)
        h = F.scaled_dot_product_attention(q, k, v)  # (n heads f d)
        h = rearrange(h, "n heads f d -> n f (heads d)")
        return x + self.to_out(h)


class FpsEmbedding(nn.Module):
    """Frames per second -> a vector added to the U-Net's time embedding (section 3.2).

    Sinusoidal features of the fps value, then an MLP whose last layer starts at zero, so the
    embedding adds nothing until trained.
    """

    def __init__(self, time_embed_dim: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.linear_1 = nn.Linear(frequency_dim, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)
        init_identity_(self)

    def forward(self, fps: torch.Tensor) -> torch.Tensor:  # (b,) -> (b d)
        features = get_timestep_embedding(fps.float(), self.frequency_dim).to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(features)))


class TextEmbedding(nn.Module):
    """The prompt, averaged over its tokens -> a vector added to the time embedding of video clips.

    Imagen (Saharia et al. 2022, section 2.4) adds a pooled text embedding to the diffusion
    timestep embedding; here it is what lets the temporal layers read the prompt. Cross-attention
    reaches only the spatial layers, which learned from still frames what a caption says about
    looks, not about motion, so "moving left" barely reaches the layers that make motion.
    Through the time embedding it enters every ResNet block, and the temporal convolution after
    it. The last layer starts at zero: the embedding adds nothing until trained.
    """

    def __init__(self, text_dim: int, time_embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(text_dim, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)
        init_identity_(self)

    def forward(self, text: torch.Tensor) -> torch.Tensor:  # (b n d) -> (b e)
        pooled = text.mean(dim=1).to(self.linear_1.weight.dtype)  # (b d)
        return self.linear_2(self.act(self.linear_1(pooled)))


@torch.no_grad()
def init_identity_(module: nn.Module) -> nn.Module:
    """Set every temporal layer inside `module` to its starting point, the identity.

    TemporalConv: dirac kernel, zero bias. TemporalAttention: zero output projection, sinusoidal
    position table. FpsEmbedding, TextEmbedding: zero last layer. Other weights keep PyTorch's
    default initialisation.
    """
    for m in module.modules():
        if isinstance(m, TemporalConv):
            nn.init.dirac_(m.conv.weight)
            nn.init.zeros_(m.conv.bias)
        elif isinstance(m, TemporalAttention):
            nn.init.zeros_(m.to_out.weight)
            nn.init.zeros_(m.to_out.bias)
            frames = torch.arange(m.max_frames, device=m.position.device)
            m.position.copy_(get_timestep_embedding(frames, m.position.shape[1], flip_sin_to_cos=True))
        elif isinstance(m, (FpsEmbedding, TextEmbedding)):
            nn.init.zeros_(m.linear_2.weight)
            nn.init.zeros_(m.linear_2.bias)
    return module
