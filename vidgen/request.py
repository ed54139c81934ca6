"""What a model can be asked for, checked from its folder's JSON files before any weights load.

`ModelFacts` reads the few numbers a request is checked against (latent factor, frame tables,
stages, critic) from a model folder's configs, or from a loaded model; `check_settings`
refuses, with the rule broken and a value that would do, any request the model cannot take,
including a size whose tensors would not fit in this machine's memory. The pipeline and the
commands call the same function, so a request is judged the same way everywhere.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import VidgenError
from .fs import read_json_object

GIB = 2**30


@dataclass(frozen=True)
class ModelFacts:
    stages: tuple[str, ...]  # in run order, "base" first
    latent_factor: int  # pixels per latent along a side
    latent_channels: int
    max_frames: dict  # stage -> rows of its frame position table
    widest_channels: int  # channels of the base U-Net's first (full-resolution) block
    interp_factor: int
    sr_scale: int
    has_critic: bool
    critic_swaps: bool  # the critic learned swapped captions (choose_by "swaps")
    motion_words: bool = False  # its base-stage noise can move with the prompt's motion words
    max_steps: int = 1000  # the noise schedule's timesteps past its offset: the most sampling steps it allows

    @classmethod
    def of_folder(cls, folder: str | os.PathLike, index) -> "ModelFacts":
        """From the JSON files of a model folder whose vidgen.json is `index` (no weights read)."""
        from .interop.folders import stage_max_frames

        folder = Path(folder)

        def config(*parts: str) -> dict:
            return read_json_object(folder.joinpath(*parts), f"{folder} is not a complete vidgen model folder: ")

        vae = config("vae", "config.json")
        critic = config(index.critic, "critic.json") if index.critic else {}
        return cls(
            stages=tuple(index.stages),
            latent_factor=2 ** (len(vae.get("block_out_channels", [0])) - 1),
            latent_channels=int(vae.get("latent_channels", 4)),
            max_frames={name: stage_max_frames(folder / sub) for name, sub in index.stages.items()},
            widest_channels=int(config(index.stages["base"], "config.json").get("block_out_channels", [320])[0]),
            interp_factor=index.interp.factor, sr_scale=index.sr.scale,
            has_critic=bool(index.critic), critic_swaps=bool(critic.get("swap_words")),
            motion_words=bool(index.motion_words) and index.frame_noise_correlation > 0,
            max_steps=_max_steps(config("scheduler", "scheduler_config.json")))

    @classmethod
    def of_model(cls, model) -> "ModelFacts":
        """From the loaded modules of a vidgen.model_folder.VideoModel: the same facts its folder's
        JSON files give (`of_folder`), so a request is judged alike before and after loading."""
        vae, base = model.vae.config, model.stages["base"].unet.config
        return cls(
            stages=tuple(model.stages),
            latent_factor=2 ** (len(vae.block_out_channels) - 1),
            latent_channels=int(vae.latent_channels),
            max_frames={name: unet.options.max_frames for name, unet in model.stages.items()},
            widest_channels=int(base.block_out_channels[0]),
            interp_factor=model.index.interp.factor, sr_scale=model.index.sr.scale,
            has_critic=model.critic is not None,
            critic_swaps=model.critic is not None and bool(model.critic.config.swap_words),
            motion_words=bool(model.index.motion_words) and model.index.frame_noise_correlation > 0,
            max_steps=_max_steps(model.scheduler.config))


def _max_steps(scheduler_config) -> int:
    """Sampling steps a diffusers noise schedule allows: its timesteps, less the offset its
    spacing adds to each (with steps_offset 1 and as many steps as timesteps, the last one would
    be past the end of the schedule)."""
    return int(scheduler_config.get("num_train_timesteps", 1000)) - int(scheduler_config.get("steps_offset", 0) or 0)


def _check_size(facts: ModelFacts, height: int, width: int) -> None:
    k = facts.latent_factor
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % k:
            nearest = max(k, round(value / k) * k)
            raise VidgenError(f"{name} {value} is not a positive multiple of {k}: this model's VAE turns each "
                              f"{k}x{k} pixels into one latent; try {name} {nearest}")


def _check_frames(facts: ModelFacts, num_frames: int) -> None:
    table = facts.max_frames["base"]
    if not 1 <= num_frames <= table:
        raise VidgenError(f"{num_frames} frames asked for, but this model takes 1 to {table} frames (its temporal "
                          f"attention has a position table of max_frames={table}): ask for fewer frames, or inflate "
                          f"the image model again with a larger max_frames")
    if "interp" in facts.max_frames:
        dense, table = num_frames * facts.interp_factor, facts.max_frames["interp"]
        if dense > table:
            raise VidgenError(f"{num_frames} keyframes make {dense} frames after {facts.interp_factor}x frame "
                              f"interpolation, more than the {table} the interpolation stage takes: ask for at most "
                              f"{table // facts.interp_factor} frames")


def _check_critic_settings(facts: ModelFacts, s) -> None:
    train_critic = "`vidgen train configs/shapes/critic.yaml model.pretrained=MODEL ...`"
    if not math.isfinite(s.motion_guidance) or s.motion_guidance < 0:
        raise VidgenError(f"motion guidance must be 0 (off) or positive, got {s.motion_guidance}")
    if s.motion_guidance and not facts.has_critic:
        raise VidgenError(f"motion guidance {s.motion_guidance} needs an arrow critic, and this model has none: "
                          f"train one with {train_critic}, or leave motion guidance at 0")
    if s.arrow_check and not facts.has_critic:
        raise VidgenError(f"the arrow check needs an arrow critic, and this model has none: train one with "
                          f"{train_critic}, or turn it off")
    if s.candidates < 1 or (s.candidates > 1 and not facts.has_critic):
        raise VidgenError(f"candidates must be 1, or more for a model with an arrow critic (which chooses among "
                          f"them), got {s.candidates}" + ("" if facts.has_critic else " and this model has no critic"))
    if not math.isfinite(s.reconstruction_guidance) or s.reconstruction_guidance < 0:
        raise VidgenError(f"reconstruction guidance must be 0 (off) or positive, got {s.reconstruction_guidance}")
    if s.guidance_from_step < 0:
        raise VidgenError(f"guidance_from_step must be 0 (every base-stage step guided) or a step number, got "
                          f"{s.guidance_from_step}")
    if not 0.0 < s.continue_strength <= 1.0:
        raise VidgenError(f"continue_strength must be in (0, 1] (how much of a continued clip's extrapolated "
                          f"keyframes is redrawn; 1: from noise alone), got {s.continue_strength}")
    if s.motion_projection < 0:
        raise VidgenError(f"motion_projection must be 0 (off) or a number of base-stage steps, got "
                          f"{s.motion_projection}")
    if s.candidates > 1 and 0 < s.choose_at_step < s.motion_projection:
        raise VidgenError(f"motion_projection {s.motion_projection} runs past the choice among candidates at step "
                          f"{s.choose_at_step}: set choose_at_step to at least {s.motion_projection}, or 0")
    if s.choose_at_step < 0:
        raise VidgenError(f"choose_at_step must be 0 (choose after the last step) or a number of steps, got "
                          f"{s.choose_at_step}")
    if 0 < s.choose_at_step < s.num_inference_steps and s.candidates > 1 and s.motion_guidance:
        raise VidgenError("choose_at_step and motion guidance do not go together (the guide reads every candidate): "
                          "set one of them to 0")
    if s.motion_noise and not facts.motion_words:
        raise VidgenError("motion noise moves the base stage's noise as the prompt's motion words say, and this model "
                          "has no motion words (vidgen.json motion_words, with frame_noise_correlation above 0): turn "
                          "it off (--no-motion-noise)")
    if s.choose_by == "swaps" and not facts.critic_swaps:
        which = "critic learned no swaps (its swap_words are empty)" if facts.has_critic else "has no critic"
        raise VidgenError(f"choose_by 'swaps' needs an arrow critic trained on swapped captions, and this model "
                          f"{which}: train one with `vidgen train configs/shapes/critic.yaml "
                          f"model.critic_swap_slots=[direction] ...`, or choose by 'arrow'")


def check_stages(facts: ModelFacts, stages: Sequence[str] | None) -> list[str]:
    run = list(facts.stages) if stages is None else list(stages)
    if run[:1] != ["base"] or any(name not in facts.stages for name in run) or len(set(run)) != len(run):
        raise VidgenError(f"stages {','.join(run)} must start with 'base' and name each of this model's stages at "
                          f"most once: {', '.join(facts.stages)}")
    return run


def output_size(facts: ModelFacts, s, stages: Sequence[str]) -> tuple[int, int, int, float]:
    """(frames, height, width, fps) of the clip the given stages make."""
    frames, height, width, fps = s.num_frames, s.height, s.width, s.fps
    if "interp" in stages:
        frames, fps = frames * facts.interp_factor, fps * facts.interp_factor
    if "sr" in stages:
        height, width = height * facts.sr_scale, width * facts.sr_scale
    return frames, height, width, fps


def peak_bytes(facts: ModelFacts, s, stages: Sequence[str], batch: int = 1) -> int:
    """A rough upper estimate of the memory a request needs: the widest U-Net activations of the
    largest stage (both guidance branches, every candidate, a few dozen live tensors) and the
    decoded float frames. Meant to refuse sizes that cannot fit, not to predict usage."""
    frames, height, width, _ = output_size(facts, s, stages)
    k = facts.latent_factor
    branches = 2 * batch * max(1, s.candidates)
    unet = branches * frames * facts.widest_channels * (height // k) * (width // k) * 4 * 32
    decoded = batch * frames * 3 * height * width * 4 * 4
    return unet + decoded


def available_bytes() -> int | None:
    """Memory the machine can give now (MemAvailable), or None where it cannot tell."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_settings(facts: ModelFacts, s, stages: Sequence[str] | None = None, batch: int = 1,
                   memory: int | None = None) -> list[str]:
    """Refuse a request (a GenerationDefaults with every value set) the model cannot take; returns
    the stages to run. `memory`: bytes the device can hold (None: this machine's free memory;
    math.inf: no limit, for defaults recorded rather than run here)."""
    from .model_index import check_autocast, check_choose_by

    run = check_stages(facts, stages)
    _check_size(facts, s.height, s.width)
    _check_frames(facts, s.num_frames)
    if not (math.isfinite(s.fps) and s.fps > 0):
        raise VidgenError(f"fps must be a positive number, got {s.fps}")
    if s.num_inference_steps < 1:
        raise VidgenError(f"steps must be at least 1, got {s.num_inference_steps}")
    if s.num_inference_steps > facts.max_steps:
        raise VidgenError(f"{s.num_inference_steps} steps asked for, but this model's noise schedule allows at most "
                          f"{facts.max_steps}: ask for fewer steps")
    if not (math.isfinite(s.guidance_scale) and s.guidance_scale >= 0):
        raise VidgenError(f"guidance must be a finite number >= 0 (1: no guidance), got {s.guidance_scale}")
    check_autocast(s.autocast, "autocast")
    check_choose_by(s.choose_by, "choose_by")
    _check_critic_settings(facts, s)
    memory = available_bytes() if memory is None else memory
    need = peak_bytes(facts, s, run, batch)
    if memory is not None and need > memory:
        frames, height, width, _ = output_size(facts, s, run)
        raise VidgenError(f"{frames} frames of {width}x{height} need about {need / GIB:.1f} GiB and this machine has "
                          f"{memory / GIB:.1f} GiB free: ask for a smaller --height/--width, fewer --frames or "
                          f"--candidates, or fewer --stages")
    return run


# Far past what any text encoder here reads (77 tokens or fewer): a guard against pasted junk, not the model's limit.
MAX_PROMPT_CHARS = 1000


def check_prompt(prompt: str, what: str = "the prompt", allow_empty: bool = False) -> str:
    """Refuse an empty (unless `allow_empty`: a negative prompt) or an over-long prompt: the
    command line's and the web page's rule."""
    if not prompt.strip() and not allow_empty:
        raise VidgenError(f"{what} is empty: say what the clip shows, e.g. \"a red circle moving left\"")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise VidgenError(f"{what} is {len(prompt)} characters long, and vidgen takes at most {MAX_PROMPT_CHARS} "
                          f"(the text encoder reads only its first few dozen words): shorten it")
    return prompt


def settings_record(s, stages: Sequence[str], scheduler: str, eta: float, autocast: str,
                    size: tuple[int, int, int, float]) -> dict:
    """The settings a clip was made with, as its sidecar and the eval report record them: one
    function, so the two cannot drift apart. `size` is `output_size`'s (frames, height, width, fps);
    `autocast` the precision that ran (e.g. "bfloat16")."""
    frames, height, width, fps = size
    return {"stages": list(stages), "scheduler": scheduler, "steps": s.num_inference_steps,
            "guidance": s.guidance_scale, "motion_guidance": s.motion_guidance, "arrow_check": s.arrow_check,
            "candidates": s.candidates, "choose_by": s.choose_by, "choose_at_step": s.choose_at_step,
            "reconstruction_guidance": s.reconstruction_guidance, "motion_noise": s.motion_noise,
            "guidance_from_step": s.guidance_from_step,
            "continue_strength": s.continue_strength, "motion_projection": s.motion_projection,
            "autocast": autocast, "eta": eta,
            "keyframes": s.num_frames, "frames": frames, "height": height, "width": width, "fps": fps}
