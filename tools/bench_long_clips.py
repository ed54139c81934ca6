"""Peak memory of a long clip against its length: `vidgen generate PROMPT --seconds N`.

    nice -n 10 python tools/bench_long_clips.py --seconds 2,6,20 --json samples/bench_long_clips.json

Each length runs in a fresh Python process (the command as a user types it, writing an MP4) and
reports that process's peak resident memory (ru_maxrss of the child) and wall time. Windows of the
base stage continue each other and the later stages run a window at a time
(vidgen.media.long_clips), so peak memory should stay that of one window plus the finished frames
(N s x 24 fps x 128 x 128 x 3 bytes, about 1.2 MB a second). Sampling steps do not change the
memory, so the default here is few (--steps 2) to keep the run short; timings are then not the
shipped model's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(seconds: float, steps: int, out: Path, model: str | None) -> dict:
    command = [sys.executable, "-m", "vidgen", "generate", "a red circle moving left", "-o", str(out), "--seed", "0",
               "--seconds", str(seconds), "--steps", str(steps), "--candidates", "1", "--no-progress",
               *(["--model", model] if model else [])]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own resource use
    took = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"vidgen generate --seconds {seconds} failed")
    return {"seconds": seconds, "wall_s": took, "peak_rss_mib": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", default="2,6,20")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--model")
    parser.add_argument("--json")
    args = parser.parse_args()
    lengths = [float(s) for s in args.seconds.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in lengths:
            results.append(run_once(seconds, args.steps, Path(tmp) / f"long_{seconds:g}.mp4", args.model))
            print(results[-1], flush=True)
    base = results[0]["peak_rss_mib"]
    for r in results:
        r["peak_vs_shortest"] = r["peak_rss_mib"] / base
    report = {"machine": platform.processor() or platform.machine(), "steps": args.steps, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
