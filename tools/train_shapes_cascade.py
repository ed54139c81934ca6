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


def steps(work: Path) -> list[tuple[str, Path, list[str]]]:
    """(name, the folder it makes, command), in cascade order."""
    vidgen = [sys.executable, "-m", "vidgen"]

    def corpus(size: int) -> tuple[str, Path, list[str]]:
        folder = work / f"corpus{size}"  # the same seed: the same clips at two sizes
        return f"corpus{size}", folder / "manifest.jsonl", [*vidgen, "data", "shapes", "--out", str(folder), "--videos",
                                                           "2000", "--seed", "0", "--size", str(size), "--no-progress"]

    def train(stage: str, *overrides: str, size: int = 64) -> tuple[str, Path, list[str]]:
        out = work / stage
        return stage, out / "model", [*vidgen, "train", str(CONFIGS / f"{stage}.yaml"),
                                      f"data.manifest={work / f'corpus{size}' / 'manifest.jsonl'}",
                                      f"train.output_dir={out}", *overrides, "--no-progress"]

    return [
        corpus(64),
        train("vae"),
        train("image", f"model.vae={work / 'vae' / 'model'}", f"data.latent_cache={work / 'latents64'}"),
        ("inflate", work / "inflated", [*vidgen, "inflate", "--image-model", str(work / "image" / "model"),
                                        "--out", str(work / "inflated"), "--frames", "16", "--fps", "8"]),
        train("video", f"model.pretrained={work / 'inflated'}", f"data.latent_cache={work / 'latents64'}"),
        train("interp", f"model.pretrained={work / 'video' / 'model'}", f"data.latent_cache={work / 'latents64'}"),
        corpus(128),
        train("sr", f"model.pretrained={work / 'interp' / 'model'}", f"data.latent_cache={work / 'latents128'}", size=128),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/shapes", help="folder for corpora, runs and checkpoints (outside git)")
    parser.add_argument("--only", help="run just this step (corpus64, vae, image, inflate, video, interp, corpus128, sr)")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    for name, made, cmd in steps(work):
        if args.only and name != args.only:
            continue
        if made.exists():
            print(f"{name}: done ({made})")
            continue
        timed(work, name, cmd)


if __name__ == "__main__":
    main()
