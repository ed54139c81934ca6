"""What the arrow critic does while sampling: guide the base stage, check its clips, choose one.

Three uses of one network (vidgen.models.critic), each a plain function of the critic and
tensors that the pipeline calls at its step:

- `arrow_guide`: classifier guidance of the base stage's motion (Dhariwal & Nichol 2021,
  section 4) by the gradient of log sigmoid(d), the critic's log-probability that x_t runs
  forward under the prompt;
- `arrow_check`: for a world symmetric in time, the finished keyframes read at t = 0, each clip
  with d < 0 played backwards (d(reverse x) = -d(x), so every clip then reads as forward);
- `candidate_scores`: of several base-stage clips drawn per prompt, a score to keep the best by,
  the arrow logit or, for a critic trained on swapped captions, the prompt's probability
  against its swaps; `EarlyChoice` applies it part-way through sampling, to the clean clips the
  first steps predict, so that only the kept candidate is finished (the layout and the
  direction are set in the first steps).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .critic import ArrowCritic, swaps


def _dtype(critic: ArrowCritic) -> torch.dtype:
    return next(critic.parameters()).dtype


def arrow_guide(critic: ArrowCritic, cond: torch.Tensor, scale: float) -> Callable[[torch.Tensor, torch.Tensor],
                                                                                   torch.Tensor]:
    """guide(x_t, t) for the sampler: scale x the gradient of log sigmoid(d(x_t, t, prompt)), where
    cond (b n d) holds the prompt tokens of each clip."""
    dtype = _dtype(critic)
    with torch.inference_mode(False):  # sampling runs under inference mode; the gradient needs ordinary tensors
        tokens = cond.clone().to(dtype)

    def guide(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(False), torch.enable_grad():
            x = x.clone().to(dtype).requires_grad_()
            logits = critic(x, t.clone().reshape(1), tokens)
            gradient, = torch.autograd.grad(F.logsigmoid(logits.float()).sum(), x)
        return scale * gradient.float()

    return guide


def arrow_logits(critic: ArrowCritic, latents: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """(b,) float32: the critic's logit d for finished latents (b c f h w) under prompt tokens
    cond (b n d), read at t = 0."""
    dtype = _dtype(critic)
    zero = torch.zeros(1, dtype=torch.long, device=latents.device)
    return critic(latents.to(dtype), zero, cond.to(dtype)).float()


def arrow_check(critic: ArrowCritic, latents: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, list[bool]]:
    """The keyframe latents (b c f h w), each clip whose logit under its prompt is negative played
    backwards, and which clips were."""
    backward = arrow_logits(critic, latents, cond) < 0  # (b,)
    latents = torch.where(backward[:, None, None, None, None], latents.flip(2), latents)  # (b c f h w)
    return latents, backward.tolist()


def candidate_scores(critic: ArrowCritic, latents: torch.Tensor, cond: torch.Tensor, prompts: list[str], n: int,
                     choose_by: str, encode: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
    """(len(prompts), n) float32, larger for the candidate to keep, where latents (b c f h w) and
    cond (b n d) hold n candidates per prompt, prompt-major: the arrow logit d; or, by "swaps",
    where the critic learned swaps of a word the prompt holds (`CriticConfig.swap_words`), the
    log-probability of the prompt against its swaps (e.g. "left" against "right", "up", "down"),
    the arrow logit for a prompt without such a word. encode: prompts -> (k n d) tokens."""
    scores = arrow_logits(critic, latents, cond).view(len(prompts), n)  # (prompts n)
    groups = critic.config.swap_words if choose_by == "swaps" else {}
    dtype = _dtype(critic)
    tokens = cond.to(dtype)
    zero = torch.zeros(1, dtype=torch.long, device=latents.device)
    for i, prompt in enumerate(prompts):
        alternatives = swaps(prompt, groups) if groups else []
        if alternatives:
            rows = slice(i * n, (i + 1) * n)
            swapped = encode(alternatives).to(tokens)  # (k n d)
            _, read = critic(latents[rows].to(dtype), zero, tokens[rows],
                             swapped.expand(n, *swapped.shape))  # (n 1+k)
            scores[i] = torch.log_softmax(read.float(), dim=1)[:, 0]
    return scores


class EarlyChoice:
    """select(x0) for the sampler's `prune`: the candidate of each prompt the critic would keep,
    judged on the clean clips (b c f h w; n per prompt, prompt-major) the first steps predict, as
    the finished ones are judged (after the arrow check where that is on). `kept` holds the choice."""

    def __init__(self, critic: ArrowCritic, cond: torch.Tensor, prompts: list[str], n: int, choose_by: str,
                 check_arrow: bool, encode: Callable[[list[str]], torch.Tensor]):
        self.critic, self.cond, self.prompts, self.n = critic, cond, prompts, n
        self.choose_by, self.check_arrow, self.encode = choose_by, check_arrow, encode
        self.kept: list[int] = []

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        if self.check_arrow:
            x0, _ = arrow_check(self.critic, x0, self.cond)
        scores = candidate_scores(self.critic, x0, self.cond, self.prompts, self.n, self.choose_by, self.encode)
        self.kept = scores.argmax(dim=1).tolist()  # (prompts,)
        return torch.tensor([i * self.n + j for i, j in enumerate(self.kept)], device=x0.device)
