"""Retrain the embedded default shapes model from nothing, stage by stage, with vidgen's own commands.

    python tools/train_shapes_cascade.py --work runs/shapes            # everything, resuming where it stopped
    python tools/train_shapes_cascade.py --work runs/shapes --only vae  # one stage

Each stage is a `vidgen train` run with its config in configs/shapes/; a stage whose exported
model exists is skipped, and an interrupted stage resumes from its newest checkpoint. Stage
times are appended to WORK/times.csv.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "shapes"


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def timed(work: Path, name: str, cmd: list[str]) -> None:
    started = time.perf_counter()
    run(cmd)
    with open(work / "times.csv", "a", newline="") as f:
        csv.writer(f).writerow([name, round(time.perf_counter() - started, 1)])


def steps(work: Path, corpus: Path) -> list[tuple[str, Path, list[str]]]:
    """(name, the folder it makes, command), in cascade order."""
    vidgen = [sys.executable, "-m", "vidgen"]
    manifest = f"data.manifest={corpus / 'manifest.jsonl'}"

    def train(stage: str, *overrides: str) -> tuple[str, Path, list[str]]:
        out = work / stage
        return stage, out / "model", [*vidgen, "train", str(CONFIGS / f"{stage}.yaml"), manifest,
                                      f"train.output_dir={out}", *overrides, "--no-progress"]

    return [
        ("corpus", corpus / "manifest.jsonl", [*vidgen, "data", "shapes", "--out", str(corpus), "--videos", "2000",
                                               "--seed", "0", "--size", "64", "--no-progress"]),
        train("vae"),
        train("image", f"model.vae={work / 'vae' / 'model'}"),
        ("inflate", work / "inflated", [*vidgen, "inflate", "--image-model", str(work / "image" / "model"),
                                        "--out", str(work / "inflated"), "--frames", "16", "--fps", "8"]),
        train("video", f"model.pretrained={work / 'inflated'}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/shapes", help="folder for corpora, runs and checkpoints (outside git)")
    parser.add_argument("--only", help="run just this step (corpus, vae, image, inflate, video)")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    for name, made, cmd in steps(work, work / "corpus64"):
        if args.only and name != args.only:
            continue
        if made.exists():
            print(f"{name}: done ({made})")
            continue
        timed(work, name, cmd)


if __name__ == "__main__":
    main()
