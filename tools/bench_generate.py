"""Time the whole cascade for one prompt: `vidgen generate` from the command to the written MP4.

    python tools/bench_generate.py                      # the embedded default model, 5 runs
    python tools/bench_generate.py --model tiny-model --runs 3 --json bench.json

Two measurements, each the median of --runs runs with a fresh seed per run:
1. the command as a user types it (`vidgen generate PROMPT -o clip.mp4`, default settings) in a
   fresh Python process each time: interpreter start, imports, model loading, sampling, writing.
   This is the figure the default model's target (under 30 s on a 2-core CPU) is about.
2. where that time goes, in this process: loading the model once, then per run the parts the
   pipeline reports (text, base, interp, sr, decode; `VideoOutput.timings`) and the MP4 write.
Extra arguments after `--` go to `vidgen generate` in both (e.g. `-- --steps 10`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def time_command(prompt: str, model: str | None, seed: int, extra: list[str], out: Path) -> float:
    command = [sys.executable, "-m", "vidgen", "generate", prompt, "-o", str(out), "--seed", str(seed),
               "--no-progress", *(["--model", model] if model else []), *extra]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def time_parts(prompt: str, model: str | None, seeds: list[int], extra: list[str], out: Path) -> dict[str, list[float]]:
    """Seconds per part of generation, a list per part (one entry per seed; "load" has one)."""
    import dataclasses

    from vidgen.commands import generate
    from vidgen.packaged import default_model
    from vidgen.pipeline import VideoPipeline
    from vidgen.video_io import save_video

    args = generate.add_parser(argparse.ArgumentParser().add_subparsers()).parse_args([prompt, "-o", str(out), *extra])
    started = time.perf_counter()
    pipe = VideoPipeline.from_pretrained(model or default_model(), scheduler=args.scheduler)
    parts: dict[str, list[float]] = {"load": [time.perf_counter() - started]}
    stages = args.stages.split(",") if args.stages else list(pipe.model.stages)
    settings = pipe.settings(stages, num_frames=args.frames, height=args.height, width=args.width, fps=args.fps,
                             num_inference_steps=args.steps, guidance_scale=args.guidance,
                             motion_guidance=args.motion_guidance, arrow_check=args.arrow_check,
                             candidates=args.candidates, choose_by=args.choose_by,
                             autocast=args.autocast)
    for seed in seeds:
        clip = pipe(prompt, **dataclasses.asdict(settings), seed=seed, progress=False, stages=stages)
        for part, seconds in clip.timings.items():
            parts.setdefault(part, []).append(seconds)
        started = time.perf_counter()
        save_video(clip.frames[0], out, fps=clip.fps, metadata={"prompt": prompt, "seed": seed})
        parts.setdefault("write", []).append(time.perf_counter() - started)
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="vidgen model folder (default: the embedded default model)")
    parser.add_argument("--prompt", default="a red circle moving left")
    parser.add_argument("--runs", type=int, default=5, help="runs of each measurement (median reported)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("extra", nargs="*", help="after --: more `vidgen generate` options")
    args = parser.parse_args()
    seeds = list(range(args.runs))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clip.mp4"
        commands = [time_command(args.prompt, args.model, seed, args.extra, out) for seed in seeds]
        parts = time_parts(args.prompt, args.model, seeds, args.extra, out)

    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"vidgen generate {args.prompt!r}: {args.runs} runs, {os.cpu_count()} CPUs, OMP_NUM_THREADS={threads}")
    print(f"  whole command   median {statistics.median(commands):6.2f} s   "
          f"(min {min(commands):.2f}, max {max(commands):.2f})")
    total = sum(statistics.median(v) for k, v in parts.items() if k != "load")
    print(f"  in one process  load {parts['load'][0]:.2f} s once, then per clip (median):")
    for part, seconds in parts.items():
        if part != "load":
            median = statistics.median(seconds)
            print(f"    {part:<8} {median:6.2f} s  {100 * median / total:5.1f} %")
    if args.json:
        report = {"prompt": args.prompt, "model": args.model or "default", "runs": args.runs,
                  "cpus": os.cpu_count(), "omp_num_threads": threads, "command_s": commands,
                  "command_median_s": statistics.median(commands), "parts_s": parts,
                  "parts_median_s": {k: statistics.median(v) for k, v in parts.items()}}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
