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
- `TextQueryEmbedding`: the prompt read by a few learned queries, each free to single out one
  word, added to the time embedding (optional; see the class).
- `FramePrompt`: the prompt as each frame reads it through cross-attention, every token shifted
  by where the frame sits in the clip (optional; see the class).
- `TemporalText`: cross-attention from the temporal layers to the prompt's tokens, with fresh
  projections and the frame's place in the clip (optional; see the class).
- `MotionAttention`: self-attention over all pixels of all frames, biased by each key's offset in
  time and space from its query as the prompt sets it (optional; see the class).

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
from einops import rearrange, repeat
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


class TextQueryEmbedding(nn.Module):
    """The prompt read by a few learned queries -> a vector added to the time embedding of video clips.

    The way in is `TextEmbedding`'s (Imagen's pooled text embedding, added to the timestep
    embedding), but the pooling is attention with learned queries, as in Perceiver-style
    attention pooling, so that one word can be read on its own. The mean over tokens is the
    wrong pooling for motion words: in all-MiniLM-L6-v2 the mean-pooled prompts "... moving left
    ..." and "... moving right ..." have cosine 0.99, while the direction token itself differs
    (cosine 0.72) and colour and shape words move the mean far more. The scores are the raw dot
    products, without the usual 1/sqrt(d): at that scale the softmax starts about twenty times
    flatter and the queries need many more steps to settle on one word (regressing a vector per
    direction through heavy noise from the shapes captions, 800 Adam steps at 1e-3 left a relative
    error of 0.31 with these queries, 0.38 with the scale, 0.74 with the mean). The last layer starts at zero: the embedding adds nothing
    until trained.
    """

    def __init__(self, text_dim: int, time_embed_dim: int, queries: int = 4):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, text_dim) / text_dim ** 0.5)
        self.keys = nn.Linear(text_dim, text_dim, bias=False)
        self.linear_1 = nn.Linear(queries * text_dim, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)
        init_identity_(self)

    def weights(self, text: torch.Tensor) -> torch.Tensor:  # (b n d) -> (b q n): how much each query reads each token
        text = text.to(self.keys.weight.dtype)
        return torch.einsum("qd,bnd->bqn", self.queries, self.keys(text)).softmax(dim=-1)

    def forward(self, text: torch.Tensor) -> torch.Tensor:  # (b n d) -> (b e)
        text = text.to(self.linear_1.weight.dtype)
        read = torch.einsum("bqn,bnd->bqd", self.weights(text), text)  # (b q d): a few weighted tokens
        return self.linear_2(self.act(self.linear_1(rearrange(read, "b q d -> b (q d)"))))


class TextBagEmbedding(nn.Module):
    """The prompt as a bag of words -> a vector added to the time embedding of video clips.

    Each token goes through its own small MLP and the results are summed, as in Deep Sets
    (Zaheer et al. 2017), then mapped to the time embedding like `TextEmbedding`. Pooling after a
    per-token nonlinearity keeps one word's contribution whole: the difference between "... moving
    left ..." and "... moving right ..." is g(left) - g(right) at full size, where the mean over
    tokens shrinks it by the prompt's length (pooled cosine 0.985), and attention pooling
    (`TextQueryEmbedding`) with softmax scores can settle on other words and stop sending any
    gradient to the motion word (seen on the shapes base: after 1000 steps no query read "left",
    "right" or "down"). The bag is layer-normalised before the MLP: a sum of 16 MiniLM tokens'
    features has entries of about 80, and without the norm the next layer's inputs drifted to
    -400 within 500 steps on the shapes base, every unit dead and the output one constant for
    every prompt. The last layer starts at zero: the embedding adds nothing until trained.
    """

    def __init__(self, text_dim: int, time_embed_dim: int, word_dim: int = 256):
        super().__init__()
        self.word = nn.Linear(text_dim, word_dim)
        self.act = nn.SiLU()
        self.norm = nn.LayerNorm(word_dim)
        self.linear_1 = nn.Linear(word_dim, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)
        init_identity_(self)

    def forward(self, text: torch.Tensor) -> torch.Tensor:  # (b n d) -> (b e)
        bag = self.act(self.word(text.to(self.word.weight.dtype))).sum(dim=1)  # (b w): every token's own features
        return self.linear_2(self.act(self.linear_1(self.norm(bag))))


class WordTableEmbedding(nn.Module):
    """The prompt as a bag of word ids -> a vector added to the time embedding of video clips.

    Each word id has a learned vector, started at zero; the prompt's vectors are summed (a bag of
    words, as in fastText, Joulin et al. 2017) and added to the time embedding. It reads the word
    codes of `TextEncoder.word_codes` (each token id as one-hots of its residues modulo two
    coprime numbers, as wide as the text encoder), so the table is one linear map without bias
    and a word's vector is the sum of its two columns (the quotient-remainder trick; words that
    share one residue share that column). The reason for it: on the anchored shapes base a clean
    direction code added to the time embedding began to bind within 600 steps
    (tools/oracle_direction.py), while a bag of the encoder's features (`TextBagEmbedding`)
    learned one constant for every prompt. Here, as for the code, only the clips whose prompt
    says "left" train the columns of "left" (neither is shared in MiniLM's vocabulary), and no
    other word's features can swamp its input.
    """

    def __init__(self, code_dim: int, time_embed_dim: int):
        super().__init__()
        self.table = nn.Linear(code_dim, time_embed_dim, bias=False)  # code_dim: the text encoder's width
        nn.init.zeros_(self.table.weight)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:  # (b n d) word codes -> (b e)
        counts = codes.sum(dim=1).to(self.table.weight.dtype)  # (b d): how often each residue occurs
        return self.table(counts)


class FramePrompt(nn.Module):
    """The prompt as each frame of a clip reads it: every token plus an offset computed from the
    token and the frame's place in the clip (0 first, 1 last).

    Where a moving object is depends on what the prompt says and on when: an object "moving left"
    that stays in view starts right of centre and ends left of it. Cross-attention gives every
    frame the same prompt, and a pooled embedding (`TextEmbedding`) blurs the one word that names
    the motion into the others, so neither can say "frame 12 of a clip moving left". Frame-level
    prompts (Free-Bloom, Huang et al. 2023; DirecT2V, Hong et al. 2023) write a prompt per frame
    with a language model; here the per-frame prompt is learned from captioned video. The offset
    depends on the token, so "left" and "right" move differently from frame to frame (an offset
    shared by all tokens would shift every attention key alike and change nothing). The last
    layer starts at zero: every frame reads the prompt as given until trained.
    """

    def __init__(self, text_dim: int, frequency_dim: int = 64):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.linear_1 = nn.Linear(text_dim + frequency_dim, text_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(text_dim, text_dim)
        init_identity_(self)

    def forward(self, text: torch.Tensor, num_frames: int) -> torch.Tensor:  # (b n d) -> (b f n d)
        b, n, _ = text.shape
        place = torch.linspace(0.0, 1.0, num_frames, device=text.device)  # (f,)
        # Sinusoids of the place scaled to 0..100: the slowest features stay near-linear over a clip.
        features = get_timestep_embedding(place * 100.0, self.frequency_dim).to(self.linear_1.weight.dtype)  # (f e)
        tokens = repeat(text.to(self.linear_1.weight.dtype), "b n d -> b f n d", f=num_frames)
        features = repeat(features, "f e -> b f n e", b=b, n=n)
        offset = self.linear_2(self.act(self.linear_1(torch.cat([tokens, features], dim=-1))))
        return (tokens + offset).to(text.dtype)


class TemporalText(nn.Module):
    """Cross-attention from every pixel of every frame to the prompt's tokens, placed after a
    temporal attention, with its own projections and a frame position table; residual, pre-norm.

    Make-A-Video's temporal layers read no text (section 3.2): the prompt enters only through the
    image model's spatial cross-attention, which learned from still frames and reads the same
    prompt at every frame. A motion word then has to steer the temporal layers through features
    made for looks. This layer gives them the tokens themselves (not pooled: in all-MiniLM-L6-v2
    the pooled vectors of "left" and "right" prompts are near twins), read by queries that know the
    frame, so "moving left" can say what frame 12 looks like. Video latent diffusion models put
    such a cross-attention in their temporal blocks (Stable Video Diffusion's, Blattmann et al.
    2023, attend to their conditioning); here it is a layer of its own, so the self-attention over
    frames keeps Make-A-Video's form.

    The output projection starts at zero: the layer starts as the identity.
    """

    LAYOUT = "b f (h w) c"
    READS_TEXT = True  # the hook passes the prompt, (b n d)

    def __init__(self, channels: int, text_dim: int, max_frames: int = 64, attention_head_dim: int = 64):
        super().__init__()
        self.max_frames = max_frames
        self.heads = channels // attention_head_dim if channels % attention_head_dim == 0 else 1
        self.norm = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_kv = nn.Linear(text_dim, 2 * channels, bias=False)
        self.to_out = nn.Linear(channels, channels)
        self.position = nn.Parameter(torch.empty(max_frames, channels))
        init_identity_(self)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:  # (b f p c), (b n d) -> (b f p c)
        frames = x.shape[1]
        check_num_frames(frames, self.max_frames)
        h = self.norm(x) + self.position[:frames, None].to(x.dtype)
        # Every query of a clip, whatever its frame and pixel, reads that clip's tokens.
        q = rearrange(self.to_q(h), "b f p (heads d) -> b heads (f p) d", heads=self.heads)
        k, v = rearrange(self.to_kv(text.to(x.dtype)), "b n (two heads d) -> two b heads n d", two=2, heads=self.heads)
        h = F.scaled_dot_product_attention(q, k, v)  # (b heads (f p) d)
        h = rearrange(h, "b heads (f p) d -> b f p (heads d)", f=frames)
        return x + self.to_out(h)


class MotionAttention(nn.Module):
    """Self-attention over every pixel of every frame, with an attention bias that is a quadratic
    form in the key's offset from its query (frames, rows, columns), its coefficients read from
    the prompt; pre-norm, residual.

    The pseudo-3D layers (eqs. 2-3) mix frames only at one pixel, so a displacement, an object at
    p in frame t and at p + v dt in frame t + dt, has to be built by spatial layers that do not know
    the frame. Motion words then have no short path to motion: on the shapes world the base stage
    attends to "left" and receives a value that tells it from "right", yet swapping the two does not
    change its prediction. Here a query reads keys along a line in space-time where the prompt
    says so: a bias -(dx - v dt)^2 / s^2, for one, is a quadratic form in (dt, dy, dx) whose cross
    term carries the velocity v. Each head's bias is sum_k c_k(prompt) phi_k(dt, dy, dx) over the
    nine monomials phi of degree 1 and 2 (the constant does not change a softmax), the
    coefficients c an MLP of the prompt pooled by a few learned queries (the pooled mean of a
    prompt blurs its one motion word: in all-MiniLM-L6-v2 "left" and "right" prompts are near
    twins). Offsets are measured in units of FRAMES_PER_UNIT frames and of the side / SIDE_UNITS in
    rows and columns, so coefficients of order one already draw kernels a few pixels wide.

    Full attention over f x h x w tokens costs (f h w)^2 per head: the layer belongs at a U-Net's
    coarse levels (vidgen.models.inflate places it below the full latent resolution).

    The output projection and the coefficients' last layer start at zero: the layer starts as the
    identity.
    """

    LAYOUT = "b f h w c"
    READS_TEXT = True
    BASIS = ("dt", "dy", "dx", "dt2", "dy2", "dx2", "dt_dy", "dt_dx", "dy_dx")
    FRAMES_PER_UNIT = 4.0  # offsets are measured in 4 frames in time, an eighth of the side in space
    SIDE_UNITS = 8.0

    def __init__(self, channels: int, text_dim: int, attention_head_dim: int = 64, pool_queries: int = 4,
                 hidden_dim: int = 128):
        super().__init__()
        self.heads = channels // attention_head_dim if channels % attention_head_dim == 0 else 1
        self.norm = nn.LayerNorm(channels)
        self.to_qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.to_out = nn.Linear(channels, channels)
        self.pool_queries = nn.Parameter(torch.randn(pool_queries, text_dim) / text_dim ** 0.5)
        self.pool_keys = nn.Linear(text_dim, text_dim, bias=False)
        self.linear_1 = nn.Linear(pool_queries * text_dim, hidden_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(hidden_dim, self.heads * len(self.BASIS))
        self._offsets: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        init_identity_(self)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:  # (b f h w c), (b n d) -> (b f h w c)
        _, f, h, w, _ = x.shape
        q, k, v = rearrange(self.to_qkv(self.norm(x)), "b f h w (three heads d) -> three b heads (f h w) d",
                            three=3, heads=self.heads)
        bias = self.bias(text, f, h, w).to(q.dtype)  # (b heads (f h w) (f h w))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (b heads (f h w) d)
        out = rearrange(out, "b heads (f h w) d -> b f h w (heads d)", f=f, h=h)
        return x + self.to_out(out)

    def coefficients(self, text: torch.Tensor) -> torch.Tensor:  # (b n d) -> (b heads k)
        text = text.to(self.linear_1.weight.dtype)
        scores = torch.einsum("qd,bnd->bqn", self.pool_queries, self.pool_keys(text)) / text.shape[-1] ** 0.5
        pooled = torch.einsum("bqn,bnd->bqd", scores.softmax(dim=-1), text)  # (b q d): a few weighted tokens
        c = self.linear_2(self.act(self.linear_1(rearrange(pooled, "b q d -> b (q d)"))))
        return rearrange(c, "b (heads k) -> b heads k", heads=self.heads)

    def bias(self, text: torch.Tensor, f: int, h: int, w: int) -> torch.Tensor:  # -> (b heads (f h w) (f h w))
        basis, index = self.offsets(f, h, w, text.device)  # (o k) over the distinct offsets; (N N) -> offset
        table = torch.einsum("bhk,ok->bho", self.coefficients(text), basis.to(self.linear_2.weight.dtype))
        return table[:, :, index]

    def offsets(self, f: int, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The basis at every distinct offset (key minus query), (o, 9), and for every (query, key)
        pair of the (f h w) tokens the row of its offset, (N, N); kept per size."""
        key = (f, h, w, str(device))
        if key not in self._offsets:
            grid = torch.stack(torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij"))
            grid = rearrange(grid, "three f h w -> (f h w) three")  # (N 3): each token's (t, y, x)
            delta = grid[None, :, :] - grid[:, None, :]  # (N N 3): key minus query
            index = ((delta[..., 0] + f - 1) * (2 * h - 1) + delta[..., 1] + h - 1) * (2 * w - 1) + delta[..., 2] + w - 1
            steps = torch.stack(torch.meshgrid(*[torch.arange(-(n - 1), n) for n in (f, h, w)], indexing="ij"))
            steps = rearrange(steps, "three a b c -> (a b c) three").float()  # (o 3), in index order
            units = torch.tensor([self.FRAMES_PER_UNIT, h / self.SIDE_UNITS, w / self.SIDE_UNITS])
            dt, dy, dx = (steps / units).unbind(-1)
            basis = torch.stack([dt, dy, dx, dt * dt, dy * dy, dx * dx, dt * dy, dt * dx, dy * dx], dim=-1)
            self._offsets[key] = basis.to(device), index.to(device)
        return self._offsets[key]


@torch.no_grad()
def init_identity_(module: nn.Module) -> nn.Module:
    """Set every temporal layer inside `module` to its starting point, the identity.

    TemporalConv: dirac kernel, zero bias. TemporalAttention, TemporalText: zero output projection,
    sinusoidal position table. MotionAttention: zero output projection and zero coefficients.
    FpsEmbedding, TextEmbedding, TextQueryEmbedding, TextBagEmbedding, FramePrompt: zero last layer. Other weights keep PyTorch's default
    initialisation.
    """
    for m in module.modules():
        if isinstance(m, TemporalConv):
            nn.init.dirac_(m.conv.weight)
            nn.init.zeros_(m.conv.bias)
        elif isinstance(m, (TemporalAttention, TemporalText)):
            nn.init.zeros_(m.to_out.weight)
            nn.init.zeros_(m.to_out.bias)
            frames = torch.arange(m.max_frames, device=m.position.device)
            m.position.copy_(get_timestep_embedding(frames, m.position.shape[1], flip_sin_to_cos=True))
        elif isinstance(m, MotionAttention):
            for layer in (m.to_out, m.linear_2):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        elif isinstance(m, (FpsEmbedding, TextEmbedding, TextQueryEmbedding, TextBagEmbedding, FramePrompt)):
            nn.init.zeros_(m.linear_2.weight)
            nn.init.zeros_(m.linear_2.bias)
    return module
