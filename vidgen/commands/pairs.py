"""`vidgen data pairs`: (noise, sample) pairs of a shapes model's base stage for the reflow stage,
each sample captioned with what the shapes judge saw in it (vidgen.training.reflow_pairs)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import VidgenError
from ..fs import read_json_object, write_text_atomic
from . import arguments as types


def add_pairs_parser(sub) -> None:
    pairs = sub.add_parser(
        "pairs", help="Sample a shapes model's base stage into (noise, clip) pairs for the reflow stage",
        description="Draw seen-triple prompts, sample each once with the model's base stage (its steps and guidance, "
        "one candidate, no arrow check), judge the decoded keyframes, and keep every clip with one steady object "
        "of the asked color and shape that moves along an axis: twice, under the direction it moved (as drawn) "
        "and under the opposite one (played backwards), each with the noise it started from. One safetensors "
        "shard per batch; a rerun with the same arguments resumes at the first missing shard.")
    pairs.add_argument("--out", required=True, help="folder of the pairs-NNNNN.safetensors shards (created)")
    pairs.add_argument("--model", metavar="DIR", help="vidgen shapes model folder (default: the embedded shapes model)")
    pairs.add_argument("--clips", type=types.positive_int, default=512, help="prompts to sample (default 512)")
    pairs.add_argument("--seed", type=types.integer(0, 2**31 - 1, "seed"), default=0,
                       help="seed of the prompts and noise (default 0; eval's prompts are drawn apart from these)")
    pairs.add_argument("--batch-size", type=types.positive_int, default=8, help="prompts per shard (default 8)")
    pairs.add_argument("--steps", type=types.positive_int, help="the base stage's steps (default: the model's)")
    pairs.add_argument("--guidance", type=types.guidance, help="guidance scale (default: the model's)")
    pairs.add_argument("--autocast", choices=("off", "bfloat16", "float16", "auto"),
                       help="precision of the U-Net's matrix products (default: the model's)")
    pairs.add_argument("--no-progress", action="store_true", help="no progress bar")
    pairs.set_defaults(run=run_pairs)


def run_pairs(args: argparse.Namespace) -> int:
    from ..model_index import read_model_index
    from ..packaged import default_model

    model = Path(args.model) if args.model is not None else default_model()
    if not model.is_dir():
        raise VidgenError(f"--model {model} is not a folder: give a vidgen shapes model folder, or leave --model out")
    read_model_index(model)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VidgenError(f"--out {out} is a file: give a folder for the pairs shards")
    if out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith("pairs")):
        raise VidgenError(f"--out {out} holds files that are not pairs shards: give a new or empty folder, or one "
                          f"this command wrote")
    made_with = {"model": str(model.resolve()), "seed": args.seed, "batch_size": args.batch_size, "steps": args.steps,
                 "guidance": args.guidance, "autocast": args.autocast}
    record = out / "pairs.json"
    if record.is_file():
        before = read_json_object(record)
        changed = sorted(k for k in made_with if before.get(k) != made_with[k])
        if changed:
            raise VidgenError(f"--out {out} holds pairs made with other settings ({', '.join(changed)}: "
                              f"{', '.join(f'{before.get(k)!r}' for k in changed)}): rerun with those, or give a new folder")

    from ..pipeline import VideoPipeline
    from ..training.reflow_pairs import write_pairs

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record, json.dumps(made_with, indent=2) + "\n")  # what a resumed run must repeat
    started = time.perf_counter()
    pipe = VideoPipeline.from_pretrained(model)
    given = {"num_inference_steps": args.steps, "guidance_scale": args.guidance, "autocast": args.autocast}
    totals = write_pairs(pipe, out, args.clips, seed=args.seed, batch_size=args.batch_size,
                         progress=not args.no_progress, **{k: v for k, v in given.items() if v is not None})
    print(f"{totals['pairs']} pairs from {totals['kept']} of {totals['drawn']} sampled clips in {totals['shards']} "
          f"shards in {out} ({time.perf_counter() - started:.1f}s)")
    return 0
