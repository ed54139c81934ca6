"""Time `vidgen data shapes`: the whole command, start-up included, rendering a shapes-world corpus.

    python tools/bench_shapes.py                 # 100 clips of 64 px, 48 frames (target: under 30 s on 2 cores)
    python tools/bench_shapes.py --videos 20 --size 128
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def time_command(videos: int, size: int) -> float:
    """Seconds `vidgen data shapes` takes to render `videos` clips of `size` px into a scratch folder."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "vidgen", "data", "shapes", "--out", out, "--videos", str(videos),
                   "--size", str(size), "--no-progress"]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    seconds = time_command(args.videos, args.size)
    print(f"vidgen data shapes: {args.videos} clips of {args.size} px, 48 frames, in {seconds:.1f} s "
          f"({seconds / args.videos * 1000:.0f} ms a clip)")


if __name__ == "__main__":
    main()
