"""Peak memory and time of one whole generation at Stable Diffusion 1.5 size on this machine,
with and without vidgen's memory options (vidgen.memory; `vidgen generate --offload
--attention-chunk N --decode-chunk N`).

    nice -n 10 python tools/bench_memory.py                      # docs/performance.md's figures
    python tools/bench_memory.py --frames 2 --size 64 --steps 1  # a quick smoke run

The model: SD-1.5's U-Net (tools/bench.py SD15_UNET, 860 M parameters) inflated with vidgen's
temporal layers, SD's VAE and a CLIP-L-size text encoder, all random weights (seed 0); a
zeroscope-size video model. One call of `VideoPipeline` per configuration: text, `--steps`
guided DDIM steps over all frames (both guidance branches in one batch), VAE decode.

Memory is the resident set of the process (RSS), the only measure that sees torch's CPU
allocations (tracemalloc sees Python objects only; torch's CPU allocator keeps no peak). Each
configuration runs alone in a fresh subprocess: it builds the model, hands freed memory back
(malloc_trim; blocks over 64 KiB mapped one by one), resets the kernel's high-water mark
(/proc/self/clear_refs) and generates; "peak" is VmHWM over the call, "call" is that less the
resident set of the loaded model (the weights). Times are wall-clock of the call on a shared
machine: compare them within one run only. Every configuration's frames are compared with the
plain run's (max difference in [-1, 1] pixels).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (tools/bench.py: the SD-1.5 configs and the machine description)

CONFIGS = {  # name -> the generate flags it stands for
    "plain": "whole clip decoded in one call, no chunking",
    "chunked": "--attention-chunk 256 --decode-chunk 1",
    "offload": "--offload --attention-chunk 256 --decode-chunk 1",
}


def build_pipeline(frames: int, size: int, steps: int):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from vidgen import inflate_unet
    from vidgen.model_folder import VideoModel
    from vidgen.model_index import GenerationDefaults, ModelIndex
    from vidgen.pipeline import VideoPipeline
    from vidgen.text import TextEncoder

    torch.manual_seed(0)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [c + end for end in ("", "</w>") for c in bytes_to_unicode().values()]:
        vocab.setdefault(token, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    vae = AutoencoderKL(in_channels=3, out_channels=3, **bench.SD_VAE)
    unet = inflate_unet(UNet2DConditionModel(**bench.SD15_UNET), max_frames=max(frames, 16))
    defaults = GenerationDefaults(num_frames=frames, height=size, width=size, fps=8.0, num_inference_steps=steps,
                                  guidance_scale=7.5)
    index = ModelIndex(defaults=defaults, vae_chunk_size=frames)  # plain: the whole clip in one decode call
    model = VideoModel({"base": unet}, vae, TextEncoder(text, tokenizer), DDIMScheduler(**bench.SCHEDULER), index)
    return VideoPipeline(model)


def apply(pipe, config: str) -> None:
    from vidgen import memory

    if config in ("chunked", "offload"):
        memory.set_attention_chunk(pipe.model, 256)
        memory.set_decode_chunk(pipe.model, 1)
    if config == "offload":
        memory.enable_model_offload(pipe.model, "cpu")


def probe(args) -> dict:
    """In a fresh subprocess: build, apply one configuration, generate once; memory and time."""
    pipe = build_pipeline(args.frames, args.size, args.steps)
    apply(pipe, args.probe)
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
    loaded = bench._resident_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        method = "VmHWM after a reset through /proc/self/clear_refs"
    except OSError:
        method = "ru_maxrss (since the process started: includes building the model)"
    started = time.perf_counter()
    out = pipe("a ball rolling on a beach", seed=0, progress=False, output_type="pt")
    seconds = time.perf_counter() - started
    peak = bench._resident_kib("VmHWM") if method.startswith("VmHWM") else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss
    np.save(args.frames_out, out.frames.numpy())
    return {"config": args.probe, "seconds": seconds, "parts": out.timings, "peak_gib": peak / 2**20,
            "call_gib": (peak - loaded) / 2**20, "loaded_gib": loaded / 2**20, "method": method,
            "shape": list(out.frames.shape)}


def cpu_flags() -> list[str]:
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels (latents: size / 8)")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--probe", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--frames-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args)))
        return 0
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    results, frames = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs.split(","):
            path = Path(tmp) / f"{config}.npy"
            command = [sys.executable, os.path.abspath(__file__), "--probe", config, "--frames", str(args.frames),
                       "--size", str(args.size), "--steps", str(args.steps), "--frames-out", str(path)]
            done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            frames[config] = np.load(path)
            r = results[-1]
            print(f"{config:8s} ({CONFIGS[config]}): {r['seconds']:.1f} s, peak RSS {r['peak_gib']:.2f} GiB, "
                  f"call {r['call_gib']:.2f} GiB above the loaded model's {r['loaded_gib']:.2f} GiB; "
                  f"parts {', '.join(f'{k} {v:.1f} s' for k, v in r['parts'].items())}", flush=True)
    first = next(iter(frames))
    for r in results:
        r["max_diff_vs_" + first] = float(np.abs(frames[r["config"]] - frames[first]).max())
        r["seconds_ratio"] = r["seconds"] / results[0]["seconds"]
        r["call_memory_ratio"] = r["call_gib"] / results[0]["call_gib"]
    report = {"machine": {**bench.machine(torch.device("cpu")), "cpu_flags": cpu_flags()},
              "frames": args.frames, "size": args.size, "steps": args.steps, "results": results}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
