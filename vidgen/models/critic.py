"""The arrow critic: does a noisy clip run forward in time under its prompt?

The base stage learns motion from unlabeled video, where a clip and its time reversal are equally
likely; only the captioned part says which way a named motion goes, and in the denoising loss
that sign is worth about 2 % of the error at high noise (docs/experiments.md). The
shipped base therefore moves its objects along the asked axis but picks the sign by chance.

This small network learns just that sign, discriminatively. It scores a noisy clip x_t (the
latents at timestep t) under a prompt, and its logit is the score's odd part in time,

    d(x_t, t, c) = s(x_t, t, c) - s(reverse(x_t), t, c),

so d(reverse(x)) = -d(x) by construction: trained with the logistic loss -log sigmoid(d) on real
(forward) clips, it is a classifier of "forward" against "played backwards" whose negatives cost
nothing, and a prompt without a motion the critic can read gets d = 0 on average. At sampling
its gradient steers the denoiser toward clips that run forward under the prompt (classifier
guidance, Dhariwal & Nichol 2021, section 4, applied to eps as in their eq. 14; a classifier
trained on noisy inputs as their section 4.1 and GLIDE's noised CLIP, Nichol et al. 2022, 2.4).

Where the world is symmetric in time (docs/shapes-world.md: one object at constant velocity, so a clip
played backwards is a clip of the opposite direction), the critic can also act on the finished
keyframes: at t = 0, where it is surest, a clip with d < 0 is played backwards, after which d > 0
(`arrow_check` in vidgen.models.critic_choice). Natural video is not symmetric in time (things
fall, and do not rise), and there only the guidance applies.

Time reversal teaches the sign of a motion along the asked axis, not the axis: a clip moving along
the other one is neither a positive nor a negative. With `swap_words` (groups of words of one
kind, e.g. the corpus's directions), each captioned clip is also scored under its caption with
its word of a group replaced by each other word of that group, and its own caption must win a
softmax over them (`swap_loss`: hard negative captions, as NegCLIP's, Yuksekgonul et al. 2023,
with the clip left as it is). The score is a dot product with the prompt's mean token vector,
so the margin between two captions one word apart is the clip vector read along the difference
of the two words' vectors: a classifier of which of the group's words the clip shows. At sampling
the candidate whose own prompt wins that softmax most surely is kept (critic_choice).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from einops import reduce
from torch import nn

from ..config import load_config
from ..fs import atomic_dir
from ..weights import CheckpointError, load_strict, load_tensors, save_tensors, write_json

CONFIG_NAME = "critic.json"
WEIGHTS_NAME = "critic.safetensors"


@dataclass
class CriticConfig:
    latent_channels: int = 4
    text_dim: int = 384  # width of the text encoder's token embeddings
    widths: tuple[int, ...] = (32, 64, 64, 128)  # channels of the 3-D convolutions; each after the first halves f, h, w
    embed_dim: int = 128  # width of the clip and prompt vectors whose dot product is the score
    # Groups of interchangeable words (e.g. {"direction": ["left", "right", "up", "down"]}) whose
    # swaps the critic was trained to tell apart (`swap_loss`); empty: trained on the arrow alone.
    swap_words: dict[str, list[str]] = field(default_factory=dict)


class _Block(nn.Module):
    """3-D convolution, group norm, a scale and shift from the timestep embedding, SiLU."""

    def __init__(self, channels_in: int, channels_out: int, stride: int, time_dim: int):
        super().__init__()
        self.conv = nn.Conv3d(channels_in, channels_out, kernel_size=3, stride=stride, padding=1)
        self.norm = nn.GroupNorm(min(8, channels_out), channels_out)
        self.film = nn.Linear(time_dim, 2 * channels_out)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:  # (b c f h w), (b e)
        scale, shift = self.film(time)[:, :, None, None, None].chunk(2, dim=1)
        return F.silu(self.norm(self.conv(x)) * (1 + scale) + shift)


class ArrowCritic(nn.Module):
    """d(x_t, t, c): the logit that clip latents x_t (b c f h w) run forward under prompt tokens c."""

    def __init__(self, config: CriticConfig | None = None):
        super().__init__()
        self.config = config = config or CriticConfig()
        time_dim = 4 * config.widths[0]
        self.time_proj = Timesteps(config.widths[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(config.widths[0], time_dim)
        channels = (config.latent_channels, *config.widths)
        self.blocks = nn.ModuleList(_Block(channels[i], channels[i + 1], 1 if i == 0 else 2, time_dim)
                                    for i in range(len(config.widths)))
        self.clip_head = nn.Linear(config.widths[-1], config.embed_dim)
        # The prompt as a bag of its tokens, each through one MLP and averaged: no token can be
        # weighted out, so the motion word always reaches the score.
        self.token_norm = nn.LayerNorm(config.text_dim)
        self.token_mlp = nn.Sequential(nn.Linear(config.text_dim, 2 * config.embed_dim), nn.SiLU(),
                                       nn.Linear(2 * config.embed_dim, config.embed_dim))

    def clip_vector(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(b c f h w), (b,) -> (b e)."""
        time = self.time_embedding(self.time_proj(t.flatten().to(x.device)).to(x.dtype))  # (b 4w)
        if time.shape[0] == 1:
            time = time.expand(x.shape[0], -1)
        h = x
        for block in self.blocks:
            h = block(h, time)
        return self.clip_head(reduce(h, "b c f h w -> b c", "mean"))

    def prompt_vector(self, tokens: torch.Tensor) -> torch.Tensor:
        """(b n d) token embeddings -> (b e)."""
        return self.token_mlp(self.token_norm(tokens)).mean(dim=1)

    def score(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """s(x_t, t, c), (b,): how well the clip as given fits the prompt."""
        return (self.clip_vector(x, t) * self.prompt_vector(tokens)).sum(-1) / self.config.embed_dim ** 0.5

    def forward(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor,
                swapped: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """d = s(x) - s(x reversed in time), (b,). One batch for both orders.

        With `swapped` (b k n d), the tokens of k other captions per clip, also the scores of the
        clip as given under its caption and each of those, (b 1+k), from the same clip vectors."""
        b = x.shape[0]
        vectors = self.clip_vector(torch.cat([x, x.flip(2)]), torch.cat([t.expand(b), t.expand(b)]))  # (2b e)
        forward, backward = vectors.chunk(2)
        scale = self.config.embed_dim ** 0.5
        d = ((forward - backward) * self.prompt_vector(tokens)).sum(-1) / scale
        if swapped is None:
            return d
        captions = torch.cat([tokens[:, None], swapped], dim=1)  # (b 1+k n d)
        prompts = self.prompt_vector(captions.flatten(0, 1)).unflatten(0, captions.shape[:2])  # (b 1+k e)
        return d, torch.einsum("be,bke->bk", forward, prompts) / scale

    # --- files: critic.json + critic.safetensors -----------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        with atomic_dir(folder) as tmp:
            write_json(tmp / CONFIG_NAME, asdict(self.config))
            save_tensors(self.state_dict(), tmp / WEIGHTS_NAME)
        return Path(folder)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> "ArrowCritic":
        folder = Path(folder)
        if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise CheckpointError(f"{folder} is not an arrow critic folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}")
        critic = cls(load_config(CriticConfig, folder / CONFIG_NAME))  # typed: a wrong or unknown key is named
        tensors, _ = load_tensors(folder / WEIGHTS_NAME)
        load_strict(critic, tensors, folder / WEIGHTS_NAME)
        return critic.to(dtype or torch.float32).eval()


def arrow_loss(logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(d) over real clips: each is the positive, its reversal (d -> -d) the negative."""
    return F.softplus(-logits).mean()


def swap_loss(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each clip's own caption (column 0 of scores (b 1+k)) against its swaps,
    where `valid` (b 1+k) marks the real ones (captions have different numbers of swaps, and
    those without any do not count)."""
    has_swaps = valid[:, 1:].any(dim=1)  # (b,)
    if not has_swaps.any():
        return scores.sum() * 0.0
    scores = scores.masked_fill(~valid, float("-inf"))
    losses = torch.logsumexp(scores, dim=1) - scores[:, 0]
    return losses[has_swaps].mean()


def _swapped_captions(critic: ArrowCritic, captions: list[str], embed,
                      device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(b k n d) tokens of each caption's k swaps (`CriticConfig.swap_words`), its own caption filling
    the places it has no swap for, and (b k) which are real; None where no caption has a swap."""
    alternatives = [swaps(caption, critic.config.swap_words) for caption in captions]
    k = max(map(len, alternatives), default=0)
    if not k:
        return None
    swapped = torch.stack([embed(alt + [caption] * (k - len(alt))) for caption, alt in zip(captions, alternatives)])
    return swapped, torch.tensor([[j < len(alt) for j in range(k)] for alt in alternatives], device=device)


def motion_loss(critic: ArrowCritic, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, captions: list[str],
                embed, swap_weight: float = 1.0) -> torch.Tensor:
    """What the critic's training minimises: the arrow loss of clips x (b c f h w) at timestep t
    under their captions' tokens (b n d), plus, where the critic learned swaps, swap_weight x the
    swap loss. embed: captions -> (k n d) tokens."""
    found = _swapped_captions(critic, captions, embed, x.device)
    if found is None:
        return arrow_loss(critic(x, t, tokens))
    swapped, valid = found
    d, scores = critic(x, t, tokens, swapped.to(tokens))
    own = torch.ones_like(valid[:, :1])
    return arrow_loss(d) + swap_weight * swap_loss(scores, torch.cat([own, valid], dim=1))


def motion_margin(critic: ArrowCritic, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, captions: list[str],
                  embed) -> torch.Tensor:
    """(b,) how surely clips x (b c f h w) show their captions' motion, linear in the critic's
    scores: the arrow logit d, plus, where the critic learned swaps, the caption's score minus the
    mean of its swaps' scores. Unlike `motion_loss` (logistic), a clip that does not move (about 0)
    is worth the mean of one that moves the asked way and one that moves the opposite way, so a
    generator rewarded by it gains nothing by hedging between directions."""
    found = _swapped_captions(critic, captions, embed, x.device)
    if found is None:
        return critic(x, t, tokens)
    swapped, valid = found
    d, scores = critic(x, t, tokens, swapped.to(tokens))
    others = (scores[:, 1:] * valid).sum(1) / valid.sum(1).clamp_min(1)
    return d + torch.where(valid.any(1), scores[:, 0] - others, torch.zeros_like(d))


def swaps(caption: str, groups: dict[str, list[str]]) -> list[str]:
    """The caption with each word it holds of a group replaced, in turn, by every other word of that
    group (whole words, read without case and trailing punctuation; a caption without any such word
    has none)."""
    words = caption.split()
    out = []
    for group in groups.values():
        for i, word in enumerate(words):
            bare = word.lower().rstrip(".,;:!?")
            if bare in group:
                tail = word[len(bare):]
                out += [" ".join(words[:i] + [other + tail] + words[i + 1:]) for other in group if other != bare]
    return out
