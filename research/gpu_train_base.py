"""Train the default model's base stage on a lent GPU machine, with vidgen's own training loop.

Such a machine (the `device` tool of this workplace) runs for minutes, starts bare, reaches no
network and takes a working tree of at most 64 MiB. Three things follow:

- the corpus is rendered there, straight into a latent cache (`vidgen.data.latent_cache`'s
  format, keyed by the manifest's clip paths), with the shapes renderer and the model's own VAE:
  no MP4 is written or decoded, so neither PyAV nor decord is needed there;
- the MiniLM text encoder (91 MB) cannot travel, so its embeddings of every caption the corpus
  can hold (the shapes vocabulary, held-out triples left out, plus the empty prompt) are computed
  here first (`table`) and looked up there: the same numbers the encoder would give, in float32;
- training runs until a wall-clock budget, then stops with SIGTERM (a checkpoint is saved, as on
  any `vidgen train`), and the same run is resumed with `train.max_steps` at the step it reached,
  which exports the model; the base U-Net comes back in half precision, as shipped.

    python research/gpu_train_base.py table --out .gpu/captions.safetensors         # here
    python research/gpu_train_base.py run --table .gpu/captions.safetensors \\
        --work /tmp/w --out $OUT --clips 12000 --seconds 470 [key=value ...]     # there

`run` renders `--clips` clips of the shapes corpus (seed 0, the held-out triples excluded),
builds a base-only copy of `--start` (default: the embedded default model) and goes on training
its base stage with configs/shapes/video.yaml, the last CPU phase's settings scaled to a GPU batch (`GPU_PHASE`)
and any overrides given. Without `--table` it uses the model's own text encoder.

The shipped base stage came from two such runs on one H200 (phases `video-gpu` and `video-gpu-2`
of tools/train_shapes_cascade.py). The first, from the last CPU phase's model: 12000 clips
rendered and encoded in 77 s, then 1829 steps of 128 clips (about 530 clips/s, bf16) in the rest
of the 470 s. The second, from the first's model with `--first 12000 --seconds 520` (clips
12000-23999, none of which the first saw): 66 s of rendering, then 1851 steps (about 520
clips/s), the loss 0.0232 -> 0.0230. Elsewhere, `--seconds 1e9 train.max_steps=N` trains the same
number of steps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidgen.data import shapes  # noqa: E402
from vidgen.data.clips import frames_to_tensor  # noqa: E402
from vidgen.data.latent_cache import INDEX_NAME, _encode_frames, vae_fingerprint  # noqa: E402
from vidgen.data.manifest import write_manifest  # noqa: E402
from vidgen.errors import VidgenError  # noqa: E402
from vidgen.fs import write_text_atomic  # noqa: E402
from vidgen.packaged import DEFAULT_MODEL  # noqa: E402

# The settings of the CPU's last base phase (video-rep in tools/train_shapes_cascade.py), scaled to a GPU batch.
GPU_PHASE = ["model.freeze_spatial=false", "data.captioned_repeat=4", "train.lr=2e-4", "train.warmup_steps=200",
             "train.batch_size=128", "train.checkpoint_every=500", "train.log_every=50", "train.preview_every=0",
             "train.mixed_precision=bf16", "data.num_workers=12"]


# --- the caption table --------------------------------------------------------------------------

def corpus_captions(cfg: shapes.ShapesConfig) -> list[str]:
    """Every training caption a corpus of `cfg` can hold, and the empty prompt (the null condition)."""
    heldout = shapes.heldout_set(cfg) if cfg.exclude_heldout else frozenset()
    captions = [""]
    for color, shape, direction in itertools.product(*(shapes.VOCABULARY[s] for s in shapes.TRIPLE)):
        if (color, shape, direction) in heldout:
            continue
        for size in (None, *shapes.SIZES):
            for background in (None, *shapes.BACKGROUNDS):
                captions.append(shapes.caption(color, shape, direction, size, background))
    return captions


def write_table(out: Path, captions: list[str] | None = None) -> None:
    """Embed `captions` (default: `corpus_captions` of the default corpus) with the default model's
    text encoder into the safetensors file `out` (the captions in its metadata)."""
    from safetensors.torch import save_file

    from vidgen.checkpoint import read_model_index
    from vidgen.packaged import resolve_text_encoder
    from vidgen.text import TextEncoder

    index = read_model_index(DEFAULT_MODEL)
    encoder = TextEncoder.from_pretrained(resolve_text_encoder(index.text_encoder), max_length=index.text_max_length)
    captions = captions if captions is not None else corpus_captions(shapes.ShapesConfig())
    with torch.no_grad():
        embeddings = torch.cat([encoder.encode(captions[i:i + 64]) for i in range(0, len(captions), 64)])  # (N n d)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": embeddings.contiguous()}, out, metadata={"captions": json.dumps(captions)})
    print(f"{len(captions)} captions, {tuple(embeddings.shape)} -> {out} ({out.stat().st_size / 2**20:.1f} MiB)")


class CaptionTable(nn.Module):
    """Stands in for `vidgen.text.TextEncoder` where the encoder's weights are not at hand: the
    embeddings of a fixed set of captions, looked up. A caption outside the set is an error."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            self.captions = {c: i for i, c in enumerate(json.loads(f.metadata()["captions"]))}
            self.register_buffer("embeddings", f.get_tensor("embeddings"))  # (N n d)
        self.max_length = self.embeddings.shape[1]

    @property
    def hidden_size(self) -> int:
        return self.embeddings.shape[-1]

    def encode(self, prompts, words=None) -> torch.Tensor:
        if words is not None:
            raise VidgenError("the caption table holds the tokens in context only")
        missing = [p for p in prompts if p not in self.captions]
        if missing:
            raise VidgenError(f"captions outside the table: {missing[:3]}")
        return self.embeddings[[self.captions[p] for p in prompts]]  # (b n d)

    def null(self, batch_size: int = 1, words=None) -> torch.Tensor:
        return self.encode([""], words).expand(batch_size, -1, -1)


def use_caption_table(path: str) -> None:
    """Make vidgen load `CaptionTable(path)` wherever a model folder names its text encoder."""
    import vidgen.pipeline as pipeline

    class TableLoader:
        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            return CaptionTable(path)

    pipeline.TextEncoder = TableLoader
    pipeline.resolve_text_encoder = lambda name: name


# --- the corpus, straight into a latent cache ------------------------------------------------------

def render(args: tuple[shapes.ShapesConfig, int]):
    cfg, index = args
    clip, text = shapes.corpus_scene(cfg, index)
    return index, shapes.clip_record(index, clip, text, cfg), shapes.render_clip(clip, cfg.size, cfg.frames)


@torch.no_grad()
def render_latent_corpus(folder: Path, vae, device: str, clips: int, size: int = 64, workers: int = 14,
                         batch: int = 32, first: int = 0) -> Path:
    """Clips first..first+clips-1 of the seed-0 shapes corpus as a manifest and a latent cache
    (posterior mean and std of every frame, scaled as vidgen.data.latent_cache stores them), the VAE
    on `device`. Clip i depends on (seed, i) alone, so a later `first` gives clips an earlier run never
    saw. Returns the manifest."""
    from safetensors.torch import save_file

    cfg = shapes.ShapesConfig(videos=first + clips, size=size)
    cache = folder / "latents"
    cache.mkdir(parents=True, exist_ok=True)
    records, videos, pending = [], {}, []

    def flush():  # the pending clips' frames in one VAE batch, through the latent cache's own encoder
        frames = torch.cat([frames_to_tensor(f) for _, _, f in pending], dim=1)  # (c b*F H W)
        mean, std = _encode_frames(vae, frames, chunk_size=frames.shape[1])  # (c' b*F h w) each
        f = frames.shape[1] // len(pending)
        for (index, record, _), m, s in zip(pending, mean.split(f, dim=1), std.split(f, dim=1)):
            name = f"{index:06d}.safetensors"
            save_file({"mean": m.half().contiguous().cpu(), "std": s.half().contiguous().cpu()}, cache / name)
            videos[os.path.normpath(folder / record["path"])] = {"file": name, "frames": f, "fps": cfg.fps}
            records.append(record)
        pending.clear()

    started = time.perf_counter()
    with Pool(workers) as pool:  # forked before CUDA starts in this process
        vae.to(device)
        for item in pool.imap(render, ((cfg, i) for i in range(first, first + clips)), chunksize=16):
            pending.append(item)
            if len(pending) == batch:
                flush()
    if pending:
        flush()
    index = {"fingerprint": vae_fingerprint(vae, size), "size": size, "videos": videos, "failed": {}}
    write_text_atomic(cache / INDEX_NAME, json.dumps(index) + "\n")  # last: a cache without it is incomplete
    manifest = write_manifest(records, folder / "manifest.jsonl")
    print(f"rendered and encoded {clips} clips in {time.perf_counter() - started:.0f} s", flush=True)
    return manifest


def base_only_model(destination: Path, source: Path = DEFAULT_MODEL) -> Path:
    """A copy of the vidgen model folder `source` (default: the embedded default model) with its base
    stage alone (what the video stage trains)."""
    if not (source / "vidgen.json").is_file():
        raise VidgenError(f"{source} is not a vidgen model folder (no vidgen.json): give --start a folder made by "
                          "`vidgen inflate` or a video-stage run's model/")
    destination.mkdir(parents=True, exist_ok=True)
    index = json.loads((source / "vidgen.json").read_text())
    for sub in (index["stages"]["base"], "vae", "scheduler"):
        shutil.copytree(source / sub, destination / sub, dirs_exist_ok=True)
    index["stages"], index["critic"] = {"base": index["stages"]["base"]}, ""
    (destination / "vidgen.json").write_text(json.dumps(index, indent=2) + "\n")
    return destination


# --- the run ------------------------------------------------------------------------------------

def newest_step(run_dir: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*")]
    return max(steps, default=0)


def ship(run_dir: Path, out: Path) -> None:
    """The exported base U-Net in half precision (as shipped), with the run's log and config, into `out`."""
    from safetensors.torch import load_file, save_file

    exported, shipped = run_dir / "model" / "unet", out / "unet"
    shipped.mkdir(parents=True, exist_ok=True)
    weights = {k: v.half().contiguous() for k, v in load_file(exported / "model.safetensors").items()}
    save_file(weights, shipped / "model.safetensors")
    for name in ("config.json", "temporal.json"):
        shutil.copy(exported / name, shipped / name)
    for name in ("log.csv", "config.yaml"):
        shutil.copy(run_dir / name, out / name)


def run(args) -> int:
    from diffusers import AutoencoderKL

    from vidgen.checkpoint import load_diffusers

    if args.table and not Path(args.table).is_file():
        raise VidgenError(f"caption table {args.table} does not exist: make it with "
                          f"`python research/gpu_train_base.py table --out {args.table}` where the text encoder is installed")
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.seconds
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = base_only_model(work / "start", Path(args.start))
    vae = load_diffusers(AutoencoderKL, model / "vae", torch.float32)
    manifest = work / "corpus" / "manifest.jsonl"
    if not manifest.is_file():  # a rerun on the same machine keeps the corpus
        manifest = render_latent_corpus(work / "corpus", vae, device, args.clips, workers=args.workers,
                                        first=args.first)
    del vae
    run_dir = work / "video-gpu"
    table = ["--table", args.table] if args.table else []
    train = [sys.executable, __file__, "train", *table, str(ROOT / "configs" / "shapes" / "video.yaml"),
             f"data.manifest={manifest}", f"data.latent_cache={work / 'corpus' / 'latents'}",
             f"model.pretrained={model}", f"train.output_dir={run_dir}", "train.max_steps=1000000",
             *GPU_PHASE, *args.overrides, "--no-progress"]
    print("+", " ".join(train), flush=True)
    process = subprocess.Popen(train)
    try:
        process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # vidgen train saves a checkpoint and exits 143
        process.wait()
    reached = newest_step(run_dir)
    print(f"training stopped at step {reached} (exit {process.returncode})", flush=True)
    if reached == 0:
        return 1
    export = [f"train.max_steps={reached}" if a.startswith("train.max_steps=") else a for a in train]
    subprocess.run(export, check=True)  # resumes at `reached` and exports the model
    ship(run_dir, out)
    return 0


def train_with_table(args) -> int:
    if args.table:
        use_caption_table(args.table)
    from vidgen.cli import main

    return main(["train", *args.rest])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser("table", help="embed every corpus caption with the packaged MiniLM (run where it is)")
    table.add_argument("--out", required=True)
    go = sub.add_parser("run", help="render the corpus, train the base stage until --seconds, export it")
    go.add_argument("--table", help="the caption table to use for a text encoder (where its weights are missing)")
    go.add_argument("--start", default=str(DEFAULT_MODEL),
                    help="vidgen model folder whose base stage goes on training (default: the embedded default model)")
    go.add_argument("--work", required=True, help="folder for the corpus, the copy of --start and the run")
    go.add_argument("--out", required=True, help="where the fp16 base U-Net, log.csv and config.yaml go")
    go.add_argument("--clips", type=int, default=12000, help="corpus clips to render (default 12000)")
    go.add_argument("--first", type=int, default=0,
                    help="index of the first corpus clip (default 0; past an earlier run's clips for new ones)")
    go.add_argument("--seconds", type=float, default=470,
                    help="wall-clock budget, rendering included, after which training stops and exports (default 470)")
    go.add_argument("--workers", type=int, default=14, help="rendering processes (default 14)")
    go.add_argument("overrides", nargs="*", metavar="key=value")
    tr = sub.add_parser("train", help="vidgen train with the caption table for a text encoder")
    tr.add_argument("--table")
    tr.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    try:
        if args.command == "table":
            write_table(Path(args.out))
            return 0
        return run(args) if args.command == "run" else train_with_table(args)
    except VidgenError as exc:
        print(f"gpu_train_base {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
