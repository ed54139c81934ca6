"""Picking a diffusers scheduler by a short name or its class name, built from a model's scheduler config.

DDIM (Song et al. 2021) is the default, as in Make-A-Video; any other diffusers scheduler
that fits the model's noise schedule can stand in, e.g. `dpm++` (DPM-Solver++, Lu et al. 2022).
"""

from __future__ import annotations

import os

import diffusers
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..errors import VidgenError

ALIASES = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "unipc": "UniPCMultistepScheduler",
}
DEFAULT = "ddim"


def scheduler_class(name: str) -> type[SchedulerMixin]:
    """`ddim`, `dpm++`, ... or a diffusers class name such as `HeunDiscreteScheduler`."""
    cls = getattr(diffusers, ALIASES.get(name.lower(), name), None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise VidgenError(f"unknown scheduler {name!r}: use one of {', '.join(ALIASES)} or the class name of a "
                          f"diffusers scheduler (e.g. DPMSolverMultistepScheduler)")
    return cls


def load_scheduler(name: str, folder: str | os.PathLike) -> SchedulerMixin:
    """A scheduler of kind `name` with the noise schedule in `folder/scheduler_config.json`."""
    try:
        return scheduler_class(name).from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise VidgenError(f"cannot read a scheduler config from {folder}: {exc}") from None
