"""What the steps of one sampling call share (its settings, randomness, precision and the seconds
each part took), and what the call returns (`VideoOutput`), for the pipeline and the media modes
(vidgen.media) alike."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .model_index import GenerationDefaults

OUTPUT_TYPES = ("np", "pt", "latent")
# callback(part, steps done, steps it runs) after every denoising step of every sampled part:
# "anchor frame", "base stage", "interp stage", "sr stage". What it raises ends the call (how a
# caller such as `vidgen serve` cancels a clip between steps).
StepCallback = Callable[[str, int, int], None]


@dataclass
class VideoOutput:
    """What one call made, and how."""

    frames: np.ndarray | torch.Tensor  # uint8 (b f h w 3) for output_type "np"; float (b 3 f h w) in [-1, 1] for
    # "pt"; for "latent" the last stage's latents (b c f h w), float32 on the CPU, not decoded
    fps: float  # of the frames (frame interpolation multiplies the keyframes' rate)
    settings: GenerationDefaults  # every value the call used: its own, else the model's defaults
    stages: list[str]  # the stages run, in order
    timings: dict[str, float]  # seconds per part run: text, anchor, base, arrow_check, interp, sr, decode
    reversed: list[bool]  # per clip: played backwards by the arrow check
    kept_candidates: list[int]  # per clip: which of its candidates the critic kept (0 where candidates == 1)
    autocast: str  # what the U-Nets' matrix products ran in: "float32", "bfloat16" or "float16"


@dataclass
class Call:
    """What the steps of one call share: its settings, randomness and precision, and the seconds
    each part took."""

    settings: GenerationDefaults
    eta: float
    generator: torch.Generator
    progress: bool
    precision: torch.dtype | None  # the U-Nets' autocast dtype; None: float32
    device: torch.device
    callback: StepCallback | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, part: str):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[part] = time.perf_counter() - started


def as_list(prompt: str | Sequence[str]) -> list[str]:
    return [prompt] if isinstance(prompt, str) else list(prompt)


def new_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """The call's CPU generator: the one given, else one seeded by `seed` (a fresh seed where None)."""
    if generator is not None and seed is not None:
        raise ValueError("give a seed or a generator, not both")
    if generator is None:
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
    return generator
