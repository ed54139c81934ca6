"""The sampling options `generate` and `eval` share, defined once: flags, their checks, and the
request they make of a model (vidgen.request checks it against the model's folder before loading).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..errors import VidgenError
from . import arguments as types
from .model_options import add_model_options, check_model_options

# vidgen.model_index.AUTOCAST_CHOICES and CHOOSE_BY_CHOICES, written out: importing them would load
# torch for `--help` (tests/test_pipeline_cli.py holds them equal).
AUTOCAST_CHOICES = ("off", "auto", "bfloat16", "float16")
CHOOSE_BY_CHOICES = ("arrow", "swaps")
DEVICES = ("cpu", "cuda")


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a sampling request; unset ones take the model's defaults (its vidgen.json)."""
    parser.add_argument("--model", metavar="DIR", help="vidgen model folder (default: the embedded shapes model)")
    parser.add_argument("--steps", type=types.positive_int, help="denoising steps (default: the model's)")
    parser.add_argument("--guidance", type=types.guidance,
                        help="classifier-free guidance scale, >= 0 (1: no guidance; default: the model's)")
    parser.add_argument("--frames", type=types.positive_int,
                        help="keyframes of the base stage (frame interpolation multiplies them; default: the model's)")
    parser.add_argument("--stages", help="comma-separated stages to run, base first (default: all the model has, "
                        "e.g. base,interp,sr); 'base' alone is fastest")
    parser.add_argument("--eta", type=types.unit_interval, default=0.0,
                        help="DDIM eta in [0, 1]: 0 deterministic (default), 1 DDPM-like")
    parser.add_argument("--scheduler", default="ddim", help="ddim (default), dpm++, euler, euler-a, unipc, pndm, "
                        "ddpm, or a diffusers scheduler class name")
    parser.add_argument("--autocast", choices=AUTOCAST_CHOICES,
                        help="precision of the U-Nets' matrix products, float32 weights kept: off (float32), "
                        "bfloat16, float16, or auto (bfloat16 where the GPU or CPU computes it natively, as "
                        "AVX512-BF16 CPUs do; float32 elsewhere); default: the model's")
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="where to run (default cpu)")
    critic = parser.add_argument_group("arrow critic (models that have one, such as the shapes model)")
    critic.add_argument("--candidates", type=types.positive_int, metavar="N",
                        help="base-stage clips drawn per prompt, of which the critic keeps the one that runs its way "
                        "most clearly (each costs a base stage; default: the model's)")
    critic.add_argument("--choose-by", choices=CHOOSE_BY_CHOICES,
                        help="what the critic keeps a candidate by: arrow (its arrow logit under the prompt) or swaps "
                        "(the prompt against its swapped captions, for a critic trained on them); default: the "
                        "model's")
    critic.add_argument("--arrow-check", action=argparse.BooleanOptionalAction, default=None,
                        help="play the clip backwards where the critic reads it as running against the prompt (a "
                        "world symmetric in time only; default: the model's)")
    critic.add_argument("--choose-at-step", type=types.integer(0, None, "step"), metavar="K",
                        help="with --candidates over 1: choose after K base-stage steps, from the clips they "
                        "predict, and finish only the kept one (0: after the last step; default: the model's)")
    parser.add_argument("--reconstruction-guidance", type=types.non_negative, metavar="W",
                        help="where the base stage is given frames (--image, --seconds, extend): the weight of "
                        "reconstruction guidance toward them, >= 0 (0: replacement alone; a backward pass of the "
                        "network per step; default: the model's)")
    critic.add_argument("--motion-guidance", type=types.non_negative, metavar="S",
                        help="strength of the critic's guidance of the motion, >= 0 (0: off; default: the model's)")
    parser.add_argument("--motion-noise", action=argparse.BooleanOptionalAction, default=None,
                        help="move the shared part of the base stage's noise the way the prompt's motion words say "
                        "(\"left\", \"up\", ... as the model measured them on its corpus; a model with motion words "
                        "only; default: the model's)")
    parser.add_argument("--guidance-from-step", type=types.integer(0, None, "step"), metavar="K",
                        help="guide the base stage from step K on; the steps before it call the network once, on the "
                        "prompt alone (0: every step guided; default: the model's)")
    parser.add_argument("--motion-projection", type=types.integer(0, None, "steps"), metavar="K",
                        help="with motion noise: at the base stage's first K steps, hold the clip each step predicts "
                        "to one picture moving as the prompt's motion words say (0: off; default: the model's)")
    parser.add_argument("--continue-strength", type=types.number(0.0, 1.0, low_open=True, what="strength"), metavar="S",
                        help="with --seconds: each later window starts from its known keyframes moved on at the "
                        "clip's own velocity, S of the schedule redrawn (1: from noise; default: the model's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any sampling default of the model's vidgen.json, e.g. --set candidates=1 --set "
                        "arrow_check=false (keys: num_frames, fps, height, width, num_inference_steps, guidance_scale, "
                        "motion_guidance, arrow_check, candidates, choose_by, choose_at_step, reconstruction_guidance, "
                        "motion_noise, guidance_from_step, continue_strength, motion_projection, autocast); the flags above "
                        "win over it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_options(parser)


def requested(args: argparse.Namespace) -> dict:
    """The settings the command line gives, as GenerationDefaults field names (None: the model's)."""
    return dict(num_frames=args.frames, height=getattr(args, "height", None), width=getattr(args, "width", None),
                fps=getattr(args, "fps", None), num_inference_steps=args.steps, guidance_scale=args.guidance,
                motion_guidance=args.motion_guidance, arrow_check=args.arrow_check, candidates=args.candidates,
                choose_by=args.choose_by, choose_at_step=args.choose_at_step,
                reconstruction_guidance=args.reconstruction_guidance, autocast=args.autocast,
                motion_noise=getattr(args, "motion_noise", None),
                guidance_from_step=getattr(args, "guidance_from_step", None),
                continue_strength=getattr(args, "continue_strength", None),
                motion_projection=getattr(args, "motion_projection", None))


@dataclasses.dataclass(frozen=True)
class Plan:
    """A checked request: the model folder, its settings with every value set, and the stages."""

    model: Path
    settings: object  # vidgen.model_index.GenerationDefaults
    stages: list
    output_size: tuple  # (frames, height, width, fps)


def plan(args: argparse.Namespace, batch: int = 1) -> Plan:
    """Check the request against the model folder's JSON files, before any weights load."""
    from ..config import apply_overrides
    from ..model_index import read_model_index
    from ..diffusion.schedulers import scheduler_class
    from ..packaged import default_model
    from ..request import ModelFacts, check_settings, output_size

    model = Path(args.model) if args.model is not None else default_model()
    if not model.is_dir():
        raise VidgenError(f"--model {model} is not a folder: give a vidgen model folder (made by `vidgen inflate` or "
                          f"`vidgen train`), or leave --model out for the embedded shapes model")
    index = read_model_index(model)
    facts = ModelFacts.of_folder(model, index)
    given = {k: v for k, v in requested(args).items() if v is not None}
    settings = dataclasses.replace(apply_overrides(index.defaults, args.set, "--set"), **given)
    stages = check_settings(facts, settings, args.stages.split(",") if args.stages else None, batch=batch)
    scheduler_class(args.scheduler)
    check_model_options(args)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise VidgenError("--device cuda: no CUDA GPU is available to this torch build; use --device cpu")
    return Plan(model, settings, stages, output_size(facts, settings, stages))
