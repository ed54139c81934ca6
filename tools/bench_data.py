"""Throughput of the training data path: clips per second through decode, clip sampling and resize,
for a manifest and for WebDataset shards, against the number of DataLoader workers.

    nice -n 10 python tools/bench_data.py                       # docs/performance.md's table
    python tools/bench_data.py --clips 96 --source-size 512 --workers 0 2 4 8

A corpus is rendered on the spot (`vidgen data shapes`: one shape moving per clip, H.264, 48
frames at 24 fps, `--source-size` px), indexed into a manifest and written as shards of
`--per-shard` clips. Each setting then draws `--epochs` epochs of clips (`--frames` frames at
an fps drawn from [8, 24], resized to `--size` px, what the video stage's dataset does) through a
DataLoader of batch `--batch`, nothing else running in the main process: the rate a training
run could be fed at most. Timing starts before the loader's workers start (their start-up is
part of an epoch's cost) and is the median of the epochs; the shard figures are also given as a
ratio to the manifest's at the same worker count, measured in the same run.

Compare the rate with your training step's: a step on B clips per process taking t seconds needs
B / t clips/s per process; a lower figure here means the accelerators wait for data.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vidgen.data.dataset import VideoClipDataset, collate_clips
from vidgen.data.manifest import read_manifest
from vidgen.data.shard_dataset import ShardClipDataset, collate_positioned
from vidgen.data.shard_writer import write_shards
from vidgen.data.shards import scan_shards


def cpu_flags() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    cores = info.count("processor\t:")
    return f"{model}, {cores} cores, {' '.join(wanted)}"


def make_corpus(folder: Path, clips: int, size: int, per_shard: int) -> tuple[Path, str]:
    from vidgen.data.shapes import ShapesConfig, make_corpus as render

    manifest = render(folder / "corpus", ShapesConfig(videos=clips, size=size), progress=False)
    shards = write_shards(read_manifest(manifest), folder / "shards", per_shard, folder / "corpus", progress=False)
    return manifest, str(folder / "shards" / f"{{00000..{len(shards) - 1:05d}}}.tar")


def epoch_rate(loader, epoch: int, dataset) -> float:
    dataset.set_epoch(epoch)
    started, clips = time.perf_counter(), 0
    for batch in loader:
        clips += len(batch["path"]) + len(batch["skipped"])
    return clips / (time.perf_counter() - started)


def measure(source: str, workers: int, args, manifest: Path, pattern: str) -> float:
    clips = VideoClipDataset(read_manifest(manifest) if source == "manifest" else [], args.frames, args.size,
                             fps_range=(8.0, 24.0), seed=0)
    if source == "manifest":
        dataset, collate = clips, collate_clips
        loader = DataLoader(clips, batch_size=args.batch, shuffle=True, num_workers=workers, collate_fn=collate)
    else:
        dataset = ShardClipDataset(scan_shards(pattern), clips, shuffle_buffer=args.shuffle_buffer)
        dataset.split(0, 1, workers, args.batch)
        loader = DataLoader(dataset, batch_size=args.batch, num_workers=workers, collate_fn=collate_positioned)
    return statistics.median(epoch_rate(loader, epoch, dataset) for epoch in range(args.epochs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=32, help="clips in the corpus (default 32)")
    parser.add_argument("--source-size", type=int, default=256, help="side of the rendered videos in px (default 256)")
    parser.add_argument("--size", type=int, default=128, help="training size the clips are resized to (default 128)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--batch", type=int, default=4, help="clips per batch (default 4)")
    parser.add_argument("--per-shard", type=int, default=4, help="clips per shard (default 4)")
    parser.add_argument("--shuffle-buffer", type=int, default=100, help="shards' shuffle buffer (default 100)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts (default 0 1 2)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per setting; the median is reported (default 3)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vidgen-bench-data-") as tmp:
        started = time.perf_counter()
        manifest, pattern = make_corpus(Path(tmp), args.clips, args.source_size, args.per_shard)
        print(f"corpus: {args.clips} clips of 48 frames at {args.source_size} px (H.264), shards of {args.per_shard}; "
              f"made in {time.perf_counter() - started:.1f}s")
        print(f"machine: {cpu_flags()}; torch threads in the main process: {torch.get_num_threads()} (workers: 1)")
        print(f"clips of {args.frames} frames resized to {args.size} px, batch {args.batch}, median of {args.epochs} "
              f"epochs\n")
        print("| workers | manifest clips/s | shards clips/s | shards / manifest |")
        print("|---|---|---|---|")
        for workers in args.workers:
            rates = {source: measure(source, workers, args, manifest, pattern) for source in ("manifest", "shards")}
            print(f"| {workers} | {rates['manifest']:.1f} | {rates['shards']:.1f} | "
                  f"{rates['shards'] / rates['manifest']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
