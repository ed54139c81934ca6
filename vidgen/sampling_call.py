"""What the steps of one sampling call share (its settings, randomness, precision and the seconds
each part took), for the pipeline and the media modes (vidgen.media) alike."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .model_index import GenerationDefaults


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
    callback: Callable[[str, int, int], None] | None = None  # vidgen.pipeline.StepCallback
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
