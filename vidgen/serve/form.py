"""The web page's fields -> a checked clip request, by the command line's own rules.

Each number goes through the argparse type `vidgen generate` gives its flag
(vidgen.commands.arguments), the prompts through vidgen.request.check_prompt, and the settings
through the pipeline's check (vidgen.request.check_settings), so the page refuses exactly what the
command line refuses, with the same words. Nothing here imports gradio.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ..commands import arguments as types
from ..commands.generate import fresh_seed
from ..errors import VidgenError
from ..request import check_prompt
from . import media


@dataclass(frozen=True)
class ClipRequest:
    """One clip to make: every value checked, the seed drawn where the user asked for a random one."""

    prompt: str
    negative: str | None
    seed: int
    settings: object  # vidgen.model_index.GenerationDefaults, every value set
    stages: list
    media: dict = field(default_factory=dict)  # extra pipeline arguments: image=, video=, strength=

    def summary(self) -> str:
        s = self.settings
        return (f"seed {self.seed}, {s.num_inference_steps} steps, guidance {s.guidance_scale:g}, "
                f"{s.num_frames} keyframes")


def _as_text(value) -> str:
    """A field's value as the text a user would have typed on the command line."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def parse(kind, value, name: str):
    """`value` through the command line's argparse type `kind`; its refusal as a VidgenError naming
    the field. None or blank: None (the model's default)."""
    text = _as_text(value)
    if not text:
        return None
    try:
        return kind(text)
    except argparse.ArgumentTypeError as exc:
        raise VidgenError(f"{name} {text}: {exc}") from None


def read_form(pipe, prompt: str | None, negative: str | None = None, seed=None, random_seed: bool = False,
              steps=None, guidance=None, frames=None, image: str | None = None, video: str | None = None,
              strength=None) -> ClipRequest:
    """The page's (or the API's) values as a ClipRequest for `pipe`, or a VidgenError saying what to change.
    Blank numbers take the model's defaults; a blank seed, or `random_seed`, draws a fresh one."""
    prompt = check_prompt(prompt or "")
    negative = negative if negative and negative.strip() else None  # blank: no negative prompt
    if negative is not None:
        check_prompt(negative, "the negative prompt", allow_empty=True)
    chosen = None if random_seed else parse(types.seed, seed, "seed")
    given = dict(num_inference_steps=parse(types.positive_int, steps, "steps"),
                 guidance_scale=parse(types.guidance, guidance, "guidance"),
                 num_frames=parse(types.positive_int, frames, "length (keyframes)"))
    settings = pipe.settings(**given)  # check_settings: what this model can take
    stages = list(pipe.model.stages)
    extra = media.read_media(pipe, image, video, parse(types.unit_interval, strength, "strength"))
    return ClipRequest(prompt, negative, fresh_seed() if chosen is None else chosen, settings, stages, extra)
