"""The GPU figures of one machine in one run (under 8 minutes on one H100), as a JSON report and a table.

    python tools/gpu_check.py --out gpu_check.json          # on a CUDA machine
    python tools/gpu_check.py --dry-run --out dry.json      # CPU, tiny sizes, every code path, seconds

1. step: one guided DDIM step (both branches in one batch of 2) of a Stable-Diffusion-1.5-size video
   U-Net over 16 frames of 64x64 latents, bf16 weights, SDPA attention: vidgen's inflated U-Net
   against diffusers' UNet3DConditionModel and UNetMotionModel (AnimateDiff's layout) at matched
   widths, depths and heads; latency (median of interleaved rounds, tools/bench.py), peak memory, and
   model FLOPs utilisation: FLOPs counted from the layer shapes (torch.utils.flop_counter) over the
   latency and the device's dense bf16 peak (bench.PEAK_TFLOPS, by device name).
2. generation: peak memory of a whole 16-frame 512x512 generation (text encoder, guided DDIM, VAE
   decode), random weights at SD sizes.
3. training: the video stage's step at SD size (temporal layers trained, spatial frozen, as
   configs/shapes/video.yaml), fp32 weights under bf16 autocast (accelerate's bf16), gradient
   checkpointing; clips/s and MFU, with model FLOPs = the counted FLOPs of a checkpointed step less
   one forward pass (the recomputation).
4. resume: a tiny `vidgen train` on the device that checkpoints, is killed (SIGKILL), resumes (EMA
   included) and exports a folder that `vidgen generate` reads.

Targets printed beside the figures: step MFU >= 40 %, whole generation <= 10 GB, training MFU >= 30 %.
Without CUDA the script refuses unless --dry-run (CPU, tiny sizes, a nominal 1 TFLOP/s peak).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (tools/bench.py: contenders, timing, FLOP counting, generation memory)
from vidgen.fs import write_text_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"step_mfu": 0.40, "generation_gib": 10.0, "train_mfu": 0.30}
TINY_SD_LAYOUT = dict(bench.TINY_UNET, block_out_channels=(32, 32), attention_head_dim=4)
SIZES = {  # full: the figures; dry: the same code paths on the CPU in seconds
    "full": dict(unet=bench.SD15_UNET, frames=16, latent=64, text_tokens=77, vae=bench.SD_VAE, text_layers=12,
                 repeats=5, train_batch=2, train_steps=5, checkpoint_every=100, dtype="bf16"),
    "dry": dict(unet=TINY_SD_LAYOUT, frames=4, latent=8, text_tokens=8, vae=bench.TINY_VAE, text_layers=1,
                repeats=1, train_batch=1, train_steps=1, checkpoint_every=1, dtype="fp32"),  # CPU bf16 is slow
}
DRY_PEAK_TFLOPS = 1.0


# --- 1. one guided step ----------------------------------------------------------------------------

def motion_contender(unet: dict, args) -> bench.Contender:
    """diffusers' UNetMotionModel (AnimateDiff): the 2-D U-Net plus a motion module per block, as
    wide as the block, 8 heads; its text is given per frame, as its pipeline does."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    torch.manual_seed(0)
    adapter = MotionAdapter(block_out_channels=unet["block_out_channels"], motion_layers_per_block=unet["layers_per_block"],
                            motion_norm_num_groups=unet["norm_num_groups"], motion_num_attention_heads=8,
                            motion_max_seq_length=32)
    model = UNetMotionModel.from_unet2d(UNet2DConditionModel(**unet), adapter)
    model = model.eval().requires_grad_(False).to(device=args.device, dtype=bench.DTYPES[args.dtype])

    def denoise(x, t, c):  # x (b c f h w), c (b n d) -> per frame (b f) n d
        text = c.to(model.dtype).repeat_interleave(x.shape[2], dim=0)
        return model(x.to(model.dtype), t, text, return_dict=False)[0].float()

    return bench.Contender("diffusers-motion", model, denoise, sum(p.numel() for p in model.parameters()), denoise)


def step_figures(size: dict, args, peak: float) -> dict:
    preset = bench.Preset(size["unet"], size["frames"], size["latent"], size["latent"], size["text_tokens"],
                          size["vae"], size["text_layers"])
    device = torch.device(args.device)
    contenders = [bench.build("vidgen", preset, args), bench.build("diffusers-3d", preset, args),
                  motion_contender(size["unet"], args)]
    inputs = bench.make_inputs(preset, size["frames"], size["latent"], device)
    times = bench.time_interleaved(contenders, inputs, warmup=1, repeats=size["repeats"], device=device)
    rows = {}
    for c in contenders:
        latency = statistics.median(times[c.name]["wall"])
        flop = bench.count_flops(c, inputs)
        rows[c.name] = {"parameters": c.parameters, "latency_s": latency, "tflop": flop / 1e12,
                        "mfu": flop / latency / (peak * 1e12)}
        if device.type == "cuda":
            rows[c.name]["peak_gib"] = bench.measure_memory_cuda(c, inputs, device)["peak_mib"] / 2**10
    return {"frames": size["frames"], "latent": size["latent"], "dtype": args.dtype, "contenders": rows}


# --- 2. a whole generation ---------------------------------------------------------------------------

def generation_figures(size: dict, args) -> dict:
    preset = bench.Preset(size["unet"], size["frames"], size["latent"], size["latent"], size["text_tokens"],
                          size["vae"], size["text_layers"])
    options = SimpleNamespace(device=args.device, dtype=args.dtype, latent=size["latent"], frames=size["frames"],
                              generation_steps=2)
    result = bench.generation_memory(preset, options)
    result["peak_gib"] = result.get("peak_allocated_gib", result.get("peak_rss_gib"))
    return result


# --- 3. training throughput --------------------------------------------------------------------------

def training_figures(size: dict, args, peak: float) -> dict:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from vidgen.models.inflate import inflate_unet

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = inflate_unet(UNet2DConditionModel(**size["unet"])).to(device).train()
    model.enable_gradient_checkpointing()
    model.requires_grad_(False)
    trained = list(model.temporal_parameters())
    for p in trained:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(trained, lr=1e-5)
    schedule = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(0)
    b, f, s = size["train_batch"], size["frames"], size["latent"]
    latents = torch.randn(b, 4, f, s, s, generator=g).to(device)  # (b c f h w)
    text = torch.randn(b, size["text_tokens"], size["unet"]["cross_attention_dim"], generator=g).to(device)
    steps = torch.randint(0, 1000, (b,), generator=g).to(device)
    noise = torch.randn(latents.shape, generator=g).to(device)
    noisy = schedule.add_noise(latents, noise, steps)

    precision = bench.DTYPES[args.dtype]
    autocast = lambda: torch.autocast(device.type, dtype=precision, enabled=precision != torch.float32)  # noqa: E731

    def step() -> None:
        with autocast():
            loss = torch.nn.functional.mse_loss(model(noisy, steps, text, fps=bench.FPS).float(), noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    with FlopCounterMode(display=False) as counter:
        step()
    executed = counter.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        with autocast():
            model(noisy, steps, text, fps=bench.FPS)
    forward = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bench.synchronize(device)
    started = time.perf_counter()
    for _ in range(size["train_steps"]):
        step()
    bench.synchronize(device)
    seconds = (time.perf_counter() - started) / size["train_steps"]
    result = {"batch": b, "frames": f, "latent": s, "step_s": seconds, "clips_per_s": b / seconds,
              "tflop_executed": executed / 1e12, "tflop_model": (executed - forward) / 1e12,
              "mfu": (executed - forward) / seconds / (peak * 1e12), "trained_parameters": sum(p.numel() for p in trained)}
    if device.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


# --- 4. checkpoint, kill, resume, export ------------------------------------------------------------

def vidgen_command(*argv) -> list[str]:
    return [sys.executable, "-m", "vidgen", *map(str, argv)]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "HF_HUB_OFFLINE": "1"}


def run(argv: list[str], timeout: float) -> str:
    done = subprocess.run(argv, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[2:5])} ... failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def resume_figures(size: dict, args, work: Path) -> dict:
    """A tiny video-stage run on the device: checkpoints every N steps, is killed (SIGKILL) past its
    first checkpoint, resumes (EMA included) to 2N more steps and exports a folder that generates."""
    sys.path.insert(0, str(REPO / "tools"))
    from make_tiny_model import build as tiny_model

    from vidgen.cli import main as vidgen

    tiny_model().save_pretrained(work / "tiny")
    assert vidgen(["data", "shapes", "--out", str(work / "corpus"), "--videos", "4", "--size", "32", "--no-progress",
                   "frames=16"]) == 0
    every = size["checkpoint_every"]
    train = vidgen_command("train", "--no-progress", REPO / "configs/tiny/video.yaml",
                           f"data.manifest={work / 'corpus/manifest.jsonl'}", f"model.pretrained={work / 'tiny'}",
                           f"train.output_dir={work / 'run'}", f"train.checkpoint_every={every}",
                           *(["train.mixed_precision=bf16"] if args.device == "cuda" else []))
    started = time.perf_counter()
    log = work / "first-run.log"  # a file, not a pipe: a chatty run never blocks on a full pipe
    with open(log, "w") as first_log:
        first = subprocess.Popen([*train, f"train.max_steps={100 * every}"], env=subprocess_env(),
                                 stdout=subprocess.DEVNULL, stderr=first_log, text=True)
    checkpoints = work / "run" / "checkpoints"
    deadline = time.monotonic() + 300
    while not any(checkpoints.glob("step-*[0-9]")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # no time to save: the resume starts from the last checkpoint
    first.wait()
    if not any(checkpoints.glob("step-*[0-9]")):
        raise RuntimeError(f"the first run ended without a checkpoint: {log.read_text()[-2000:]}")
    saved = max(int(p.name.removeprefix("step-")) for p in checkpoints.glob("step-*[0-9]"))
    target = saved + 2 * every
    printed = run([*train, f"train.max_steps={target}", "train.resume=auto"], timeout=600)
    final = checkpoints / f"step-{target:08d}"
    assert vidgen(["generate", "a red circle moving left", "--model", str(work / "run/model"), "-o",
                   str(work / "clip.mp4"), "--frames", "4", "--steps", "2", "--height", "32", "--width", "32",
                   "--seed", "0", "--device", args.device, "--no-progress"]) == 0
    return {"killed_after_checkpoint": saved, "resumed": "resumed from" in printed, "resumed_to": target,
            "ema_in_checkpoint": (final / "ema.safetensors").is_file(),
            "exported": (work / "run/model/vidgen.json").is_file(), "generated": (work / "clip.mp4").is_file(),
            "seconds": time.perf_counter() - started}


# --- the report -------------------------------------------------------------------------------------

def table(report: dict) -> str:
    lines = [f"device: {report['machine'].get('gpu', report['machine']['cpu'])}, peak {report['peak_tflops']:g} "
             f"TFLOP/s bf16{' (nominal: dry run)' if report['dry_run'] else ''}"]
    step = report["step"]
    lines.append(f"1. guided step, {step['frames']} frames x {step['latent']}x{step['latent']} latents, {step['dtype']}:")
    lines.append(f"   {'':18} {'params':>9} {'latency':>9} {'GFLOP':>9} {'MFU':>7} {'peak GiB':>9}")
    for name, row in step["contenders"].items():
        peak = f"{row['peak_gib']:9.2f}" if "peak_gib" in row else f"{'-':>9}"
        target = f"   target >= {TARGETS['step_mfu']:.0%}" if name == "vidgen" else ""
        lines.append(f"   {name:18} {row['parameters'] / 1e6:8.0f}M {row['latency_s'] * 1e3:7.1f}ms "
                     f"{row['tflop'] * 1e3:9.1f} {row['mfu']:7.1%} {peak}{target}")
    gen = report["generation"]
    lines.append(f"2. whole generation {gen['frames']} x {gen['height']}x{gen['width']} with VAE decode: peak "
                 f"{gen['peak_gib']:.2f} GiB in {gen['seconds']:.1f} s   target <= {TARGETS['generation_gib']:g} GB")
    tr = report["training"]
    lines.append(f"3. training step (batch {tr['batch']} x {tr['frames']} frames, autocast {report['step']['dtype']}, "
                 f"checkpointing): "
                 f"{tr['clips_per_s']:.2f} clips/s, MFU {tr['mfu']:.1%}   target >= {TARGETS['train_mfu']:.0%}")
    rs = report["resume"]
    lines.append(f"4. tiny run killed after step {rs['killed_after_checkpoint']}, resumed to {rs['resumed_to']}: "
                 f"resumed {rs['resumed']}, EMA saved {rs['ema_in_checkpoint']}, exported {rs['exported']}, "
                 f"generated {rs['generated']} ({rs['seconds']:.0f} s)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check.json", help="JSON report to write (default gpu_check.json)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: exercise every code path in seconds")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: by device name)")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device is visible to this torch build: run it on a GPU machine, or add "
              "--dry-run for the CPU smoke run", file=sys.stderr)
        return 2
    size = SIZES["dry" if args.dry_run else "full"]
    args.device = "cpu" if args.dry_run else "cuda"
    args.dtype = size["dtype"]
    args.autocast, args.compile, args.channels_last = False, False, False
    args.chunk_temporal = args.chunk_ff = args.unet3d_head_width = None
    device = torch.device(args.device)
    peak = DRY_PEAK_TFLOPS if args.dry_run else bench.peak_tflops(device, "bf16", args.peak_tflops)
    if peak is None:
        print(f"gpu_check: error: no known bf16 peak for {torch.cuda.get_device_name(device)}: give --peak-tflops",
              file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    started = time.perf_counter()
    report = {"dry_run": args.dry_run, "machine": bench.machine(device), "peak_tflops": peak, "targets": TARGETS}
    sections = {"step": lambda: step_figures(size, args, peak), "generation": lambda: generation_figures(size, args),
                "training": lambda: training_figures(size, args, peak)}
    with tempfile.TemporaryDirectory(prefix="vidgen-gpu-check-") as work:
        sections["resume"] = lambda: resume_figures(size, args, Path(work))
        for name, measure in sections.items():
            began = time.perf_counter()
            report[name] = measure()
            print(f"{name}: {time.perf_counter() - began:.1f} s", flush=True)
    report["seconds"] = time.perf_counter() - started
    report["met"] = {"step_mfu": report["step"]["contenders"]["vidgen"]["mfu"] >= TARGETS["step_mfu"],
                     "generation_gib": report["generation"]["peak_gib"] * 2**30 / 1e9 <= TARGETS["generation_gib"],
                     "train_mfu": report["training"]["mfu"] >= TARGETS["train_mfu"]}
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"targets met: {', '.join(f'{k} {v}' for k, v in report['met'].items())}; wrote {args.out} in "
          f"{report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
