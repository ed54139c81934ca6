"""Time the whole cascade for one prompt: `vidgen generate` from the command to the written MP4.

    python tools/bench_generate.py                      # the embedded default model, 5 runs
    python tools/bench_generate.py --model tiny-model --runs 3 --json bench.json
    python tools/bench_generate.py --baseline OLD_MODEL -- --autocast off   # both, runs alternating: the ratio

Two measurements, each the median of --runs runs with a fresh seed per run:
1. the command as a user types it (`vidgen generate PROMPT -o clip.mp4`, default settings) in a
   fresh Python process each time: interpreter start, imports, model loading, sampling, writing.
   This is the figure the default model's target (under 30 s on a 2-core CPU) is about.
2. where that time goes, in this process: loading the model once, then per run the parts the
   pipeline reports (text, base, interp, sr, decode; `VideoOutput.timings`) and the MP4 write.
3. the start-up cost apart from sampling: a fresh process that imports vidgen's pipeline and
   loads the model, then exits (median of --runs).
With --baseline, the whole command is also timed for that model, its runs alternating with the
model's in the same loop (so a machine's drift falls on both), and the ratio of the medians is
reported. Extra arguments after `--` go to `vidgen generate` in all (e.g. `-- --steps 10`). The CPU
flags that decide the precision (avx512f, avx512_bf16, amx_bf16) are printed with the figures.
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


def time_start_up(model: str | None) -> float:
    """Seconds for a fresh process to import the pipeline and load the model (what every command pays)."""
    code = ("import sys; from vidgen.packaged import default_model; from vidgen.pipeline import VideoPipeline; "
            "VideoPipeline.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else default_model())")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *([model] if model else [])], check=True)
    return time.perf_counter() - started


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags]


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
                             candidates=args.candidates, choose_by=args.choose_by, choose_at_step=args.choose_at_step,
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
    parser.add_argument("--baseline", metavar="DIR", help="also time this model's whole command, runs alternating "
                        "with the model's, and report the ratio (e.g. the model shipped before)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("extra", nargs="*", help="after --: more `vidgen generate` options")
    args = parser.parse_args()
    seeds = list(range(args.runs))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clip.mp4"
        commands, baseline = [], []
        for seed in seeds:
            commands.append(time_command(args.prompt, args.model, seed, args.extra, out))
            if args.baseline:
                baseline.append(time_command(args.prompt, args.baseline, seed, args.extra, out))
        start_up = [time_start_up(args.model) for _ in seeds]
        parts = time_parts(args.prompt, args.model, seeds, args.extra, out)

    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"vidgen generate {args.prompt!r} {' '.join(args.extra)}: {args.runs} runs, {os.cpu_count()} CPUs "
          f"({', '.join(cpu_flags()) or 'no AVX flags'}), OMP_NUM_THREADS={threads}")
    print(f"  whole command   median {statistics.median(commands):6.2f} s   "
          f"(min {min(commands):.2f}, max {max(commands):.2f})")
    if baseline:
        print(f"  baseline {args.baseline}: median {statistics.median(baseline):6.2f} s   (min {min(baseline):.2f}, "
              f"max {max(baseline):.2f}); ratio {statistics.median(baseline) / statistics.median(commands):.2f}x")
    print(f"  start-up        median {statistics.median(start_up):6.2f} s   (a fresh process: imports + loading)")
    total = sum(statistics.median(v) for k, v in parts.items() if k != "load")
    print(f"  in one process  load {parts['load'][0]:.2f} s once, then per clip (median):")
    for part, seconds in parts.items():
        if part != "load":
            median = statistics.median(seconds)
            print(f"    {part:<8} {median:6.2f} s  {100 * median / total:5.1f} %")
    if args.json:
        report = {"prompt": args.prompt, "model": args.model or "default", "runs": args.runs,
                  "cpus": os.cpu_count(), "cpu_flags": cpu_flags(), "omp_num_threads": threads, "extra": args.extra,
                  "command_s": commands, "start_up_s": start_up,
                  **({"baseline": args.baseline, "baseline_command_s": baseline,
                      "baseline_command_median_s": statistics.median(baseline),
                      "ratio": statistics.median(baseline) / statistics.median(commands)} if baseline else {}),
                  "command_median_s": statistics.median(commands), "parts_s": parts,
                  "parts_median_s": {k: statistics.median(v) for k, v in parts.items()}}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
