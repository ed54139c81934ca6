"""Benchmark one guided denoising step: vidgen's inflated U-Net against diffusers' video U-Net
(`UNet3DConditionModel`, the ModelScope text-to-video layout) and the plain image U-Net.

    python tools/bench.py --size default                         # docs/performance.md's table
    python tools/bench.py --size tiny --repeats 5 --scaling      # cost against frames and latent size
    python tools/bench.py --size sd15 --device cuda --dtype bf16 --generation   # on a GPU

The contenders, all random weights, seed 0, built with the same spatial widths, depths, heads
and cross-attention width:

- vidgen:      `inflate_unet(UNet2DConditionModel(**config))`, a temporal conv after every ResNet
               block and a temporal attention after every transformer (Make-A-Video's pseudo-3D layers);
- diffusers-3d: `UNet3DConditionModel` with the same config, *2D block types renamed *3D, its spatial
               attention set to the 2-D model's heads (see `unet3d_config`: the two classes read
               attention_head_dim differently); its own temporal layers: 4 GroupNorm-SiLU-Conv3d(3,1,1)
               per ResNet, a temporal transformer per spatial one, and one after conv_in;
- image-2d:    the plain `UNet2DConditionModel` (the same weights as vidgen's spatial layers) over the
               frames as one batch of images: the floor, what the temporal layers add cost on top of.

One guided step is `vidgen.diffusion.sampler.sample` with one DDIM step: the conditional and
unconditional branches in one batch of 2 clips, then the guidance and the scheduler update,
under `torch.inference_mode`. Timing interleaves the contenders run by run in one process
(the first contender rotates every round) after warm-up, so drift of a shared machine falls on
all of them alike; it reports the median wall-clock latency and, on the CPU, the median CPU time
of the process (less disturbed by other jobs on a busy machine than wall-clock).

Peak memory on the CPU: torch's CPU allocator keeps no peak counter, so each contender is
measured alone in a fresh subprocess (this script with --memory-probe, eager even under
--compile): it builds the one model, runs a warm-up step, hands freed memory back to the kernel
(malloc_trim; blocks over 64 KiB are mapped and unmapped one by one), resets the kernel's
high-water mark of resident memory (/proc/self/clear_refs), runs the measured step and reads
VmHWM: the peak resident set during the step ("peak"), and that less the resident set of the
loaded, warmed-up model ("step"). On a GPU: torch.cuda peak allocated bytes, per contender,
in the timing process.

FLOPs are counted from the layer shapes (torch.utils.flop_counter: matmuls, convolutions and
attention; norms and elementwise ops are not counted); on a GPU with a known peak, MFU =
FLOPs per step / median latency / peak.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import diffusers
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet3DConditionModel
from diffusers.models.attention_processor import Attention
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from einops import rearrange, repeat
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from vidgen.diffusion.sampler import sample
from vidgen.models.inflate import inflate_unet
from vidgen.precision import autocast

# --- sizes ---------------------------------------------------------------------------------------

DEFAULT_UNET = dict(  # the embedded default (shapes world) model's U-Net, configs/shapes/image.yaml
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(64, 128, 128), layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=8, cross_attention_dim=384, norm_num_groups=32,
)
SD15_UNET = dict(  # runwayml/stable-diffusion-v1-5 unet/config.json (as tools/sd15_inflate_check.py)
    sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=8, cross_attention_dim=768, norm_num_groups=32,
)
TINY_UNET = dict(  # a seconds-long smoke run of everything here
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=8, cross_attention_dim=32, norm_num_groups=8,
)
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, norm_num_groups=32,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
              scaling_factor=0.18215)
SHAPES_VAE = dict(block_out_channels=(32, 64, 64), layers_per_block=1, latent_channels=4, norm_num_groups=32,
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
TINY_VAE = dict(block_out_channels=(16, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)


@dataclass(frozen=True)
class Preset:
    unet: dict
    frames: int
    latent: int  # latent side on the CPU
    latent_gpu: int  # latent side on a GPU
    text_tokens: int
    vae: dict  # for --generation
    text_layers: int  # CLIP text encoder depth for --generation


PRESETS = {
    "tiny": Preset(TINY_UNET, frames=8, latent=16, latent_gpu=16, text_tokens=8, vae=TINY_VAE, text_layers=1),
    "default": Preset(DEFAULT_UNET, frames=16, latent=16, latent_gpu=16, text_tokens=16, vae=SHAPES_VAE,
                      text_layers=6),
    "sd15": Preset(SD15_UNET, frames=16, latent=32, latent_gpu=64, text_tokens=77, vae=SD_VAE, text_layers=12),
}
CONTENDERS = ("vidgen", "diffusers-3d", "image-2d")
SCALING_FRAMES = (8, 16, 32, 64)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Dense (no sparsity) tensor-core peaks in TFLOP/s for bf16 / fp16, from the vendors' data sheets.
PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
               "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "RTX 4090": 165.0}
SCHEDULER = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                 set_alpha_to_one=False, steps_offset=1)
FPS = 8.0
GUIDANCE = 7.5


diffusers.utils.logging.set_verbosity_error()  # not its note on casting models without float32 modules


def unet3d_config(unet2d: dict, head_width: int | None = None) -> dict:
    """The `UNet3DConditionModel` arguments matching a `UNet2DConditionModel` config; build with
    `build_unet3d`, which also matches the spatial heads.

    Block types *2D -> *3D; widths, layers per block, norm groups and cross-attention width as
    given. `attention_head_dim` means different things to the two classes. UNet2DConditionModel
    reads it as the number of heads (a diffusers naming legacy): SD-1.5's 8 gives 8 heads of width
    c/8 in every spatial transformer. UNet3DConditionModel passes it on as a heads count too, but its
    blocks build `Transformer2DModel(c // n, n)` and `TransformerTemporalModel(c // n, n)`, whose
    first argument is the heads count: n becomes the head *width*, c/n the number of heads, in its
    spatial and its temporal transformers alike, and its `transformer_in` gets 8 heads of width n.
    So the 3-D model is built with n = `head_width`, by default the 2-D config's value (the same
    config, as a user porting it would write; for the default size it is also the cheapest n for
    the 3-D model: 16 costs 8 % more, ModelScope's 64 2.5x, its transformer_in being 512 wide),
    which shapes its temporal layers, and `build_unet3d` then sets every spatial attention's head
    count to the 2-D model's (the projections keep their shapes; only their split into heads changes).
    """
    unsupported = {k: unet2d[k] for k in ("use_linear_projection", "num_attention_heads") if unet2d.get(k)}
    if unsupported or not isinstance(unet2d["attention_head_dim"], int) or \
            not unet2d.get("flip_sin_to_cos", True) or unet2d.get("freq_shift", 0):
        raise ValueError(f"UNet3DConditionModel cannot match these U-Net settings: {unsupported or unet2d}")
    keys = ("sample_size", "in_channels", "out_channels", "block_out_channels", "layers_per_block",
            "cross_attention_dim", "norm_num_groups")
    return dict({k: unet2d[k] for k in keys if k in unet2d},
                attention_head_dim=head_width or unet2d["attention_head_dim"],
                down_block_types=tuple(t.replace("2D", "3D") for t in unet2d["down_block_types"]),
                up_block_types=tuple(t.replace("2D", "3D") for t in unet2d["up_block_types"]))


def spatial_heads(model: torch.nn.Module) -> list[tuple[int, int]]:
    """(heads, width) of every attention inside the spatial transformers, in module order."""
    return [(a.heads, a.inner_dim) for m in model.modules() if isinstance(m, Transformer2DModel)
            for a in m.modules() if isinstance(a, Attention)]


def build_unet3d(unet2d: dict, head_width: int | None = None) -> UNet3DConditionModel:
    """diffusers' video U-Net with the 2-D config's spatial layout, heads included (see unet3d_config)."""
    model = UNet3DConditionModel(**unet3d_config(unet2d, head_width))
    for m in model.modules():
        if isinstance(m, Transformer2DModel):
            for attention in m.modules():
                if isinstance(attention, Attention):
                    attention.heads = unet2d["attention_head_dim"]  # the 2-D model's count (legacy name)
    with torch.device("meta"):
        expected = spatial_heads(UNet2DConditionModel(**unet2d))
    if spatial_heads(model) != expected:
        raise AssertionError("diffusers-3d's spatial attention does not match the 2-D U-Net's")
    return model


MATCHING = ("matched: block_out_channels, layers_per_block, norm groups and cross_attention_dim equal, and every "
            "spatial attention has the 2-D U-Net's {heads} heads (UNet3DConditionModel reads attention_head_dim as "
            "a head width, UNet2DConditionModel as a head count: the 3-D model is built with head width "
            "{temporal} for its temporal layers and its spatial attentions are then set to {heads} heads, checked "
            "against the 2-D model); the temporal layers are each model's own: vidgen a Conv1d(k=3) per ResNet and "
            "a 1-layer self-attention over frames (heads 64 wide, or one head) per transformer; diffusers-3d "
            "4x(GroupNorm, SiLU, Conv3d(3,1,1)) per ResNet, a temporal transformer (2 self-attentions + GEGLU "
            "feed-forward, heads {temporal} wide) per transformer, and one more after conv_in (8 heads {temporal} "
            "wide)")


# --- building the contenders ---------------------------------------------------------------------

@dataclass
class Contender:
    name: str
    model: torch.nn.Module
    denoise: Callable  # (x (b c f h w), t, text (b n d)) -> (b c f h w) float32
    parameters: int = 0
    eager: Callable | None = None  # denoise without torch.compile, for counting FLOPs


def build(name: str, preset: Preset, args) -> Contender:
    """One contender on args.device in args.dtype, seeded so vidgen and image-2d share their spatial weights."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    weight_dtype = torch.float32 if args.autocast else dtype
    torch.manual_seed(0)
    if name == "diffusers-3d":
        model = build_unet3d(preset.unet, args.unet3d_head_width)
        if args.chunk_ff:
            model.enable_forward_chunking(args.chunk_ff, dim=0)
        forward = lambda x, t, c: model(x, t, c, return_dict=False)[0]  # noqa: E731
    else:
        unet2d = UNet2DConditionModel(**preset.unet)
        if name == "vidgen":
            model = inflate_unet(unet2d)
            model.set_chunk_size(temporal=args.chunk_temporal, feed_forward=args.chunk_ff)
            forward = lambda x, t, c: model(x, t, c, fps=FPS)  # noqa: E731
        else:
            model = unet2d
            if args.chunk_ff:
                for module in model.modules():
                    if hasattr(module, "set_chunk_feed_forward"):
                        module.set_chunk_feed_forward(args.chunk_ff, dim=0)

            def forward(x, t, c):  # frames as a batch of images
                f = x.shape[2]
                out = model(rearrange(x, "b c f h w -> (b f) c h w"), t, repeat(c, "b n d -> (b f) n d", f=f),
                            return_dict=False)[0]
                return rearrange(out, "(b f) c h w -> b c f h w", f=f)
    model = model.eval().requires_grad_(False).to(device=device, dtype=weight_dtype)
    parameters = sum(p.numel() for p in model.parameters())
    if args.channels_last:  # the 2-D convolutions' weights (Module.to refuses UNet3D's 5-D Conv3d weights)
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
    precision = autocast(device, dtype) if args.autocast else contextlib.nullcontext()

    def denoiser(run):
        def denoise(x, t, c):  # latents stay float32 for the scheduler, as in the pipeline
            with precision:
                return run(x.to(weight_dtype), t, c.to(weight_dtype)).float()
        return denoise

    eager = denoiser(forward)
    return Contender(name, model, denoiser(torch.compile(forward)) if args.compile else eager, parameters, eager)


@dataclass
class Inputs:
    noise: torch.Tensor  # (1 c f h w)
    cond: torch.Tensor  # (1 n d)
    uncond: torch.Tensor  # (1 n d)


def make_inputs(preset: Preset, frames: int, latent: int, device) -> Inputs:
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, preset.unet["in_channels"], frames, latent, latent, generator=g)
    cond, uncond = torch.randn(2, 1, preset.text_tokens, preset.unet["cross_attention_dim"], generator=g)
    return Inputs(noise.to(device), cond.to(device), uncond.to(device))


def guided_step(c: Contender, inputs: Inputs) -> torch.Tensor:
    """One DDIM step with classifier-free guidance, both branches in one batch."""
    with torch.inference_mode():
        return sample(c.denoise, DDIMScheduler(**SCHEDULER), inputs.noise, inputs.cond, inputs.uncond,
                      guidance_scale=GUIDANCE, num_inference_steps=1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- measuring ----------------------------------------------------------------------------------

def time_interleaved(contenders: list[Contender], inputs: Inputs, warmup: int, repeats: int, device) -> dict:
    """name -> {"wall": [s...], "cpu": [s...]}: each round runs every contender once, the first rotating."""
    times = {c.name: {"wall": [], "cpu": [], "first_call_s": None} for c in contenders}
    for c in contenders:  # warm-up (and compilation), not timed
        for i in range(warmup):
            started = time.perf_counter()
            guided_step(c, inputs)
            synchronize(device)
            if i == 0:
                times[c.name]["first_call_s"] = time.perf_counter() - started
    for r in range(repeats):
        for c in contenders[r % len(contenders):] + contenders[:r % len(contenders)]:
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            guided_step(c, inputs)
            synchronize(device)
            times[c.name]["wall"].append(time.perf_counter() - wall)
            times[c.name]["cpu"].append(time.process_time() - cpu)
    return times


def count_flops(c: Contender, inputs: Inputs) -> int:
    """FLOPs of one guided step, counted from the shapes of its matmuls, convolutions and attention."""
    def attention(query, key, value, *args, out_shape=None, **kwargs):  # shapes in, FLOPs out
        return sdpa_flop_count(query, key, value)

    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention}  # not in torch's table
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        guided_step(dataclasses.replace(c, denoise=c.eager), inputs)
    return counter.get_total_flops()


def _resident_kib(field_name: str) -> int:
    return int(re.search(rf"{field_name}:\s+(\d+) kB", open("/proc/self/status").read()).group(1))


def memory_probe(args) -> dict:
    """Run in a fresh subprocess: one contender's peak resident memory over one guided step (CPU)."""
    preset = PRESETS[args.size]
    c = build(args.memory_probe, preset, args)
    inputs = make_inputs(preset, args.frames, args.latent, args.device)
    guided_step(c, inputs)  # warm-up: one-time allocations (weight reorders, caches) belong to the model
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)  # hand memory the warm-up freed back, so the next step must map its own
    loaded = _resident_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        method = "VmHWM reset by /proc/self/clear_refs"
    except OSError:
        method = "ru_maxrss (high-water mark since start: includes building the model)"
    guided_step(c, inputs)
    peak = _resident_kib("VmHWM") if method.startswith("VmHWM") else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mib": peak / 1024, "step_mib": (peak - loaded) / 1024, "loaded_mib": loaded / 1024,
            "method": method}


def measure_memory_cpu(name: str, frames: int, latent: int, args) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--memory-probe", name, "--size", args.size,
               "--frames", str(frames), "--latent", str(latent), "--device", "cpu", "--dtype", args.dtype,
               "--threads", str(torch.get_num_threads())]
    for flag in ("channels_last", "autocast"):
        if getattr(args, flag):
            command.append("--" + flag.replace("_", "-"))
    for option in ("chunk_temporal", "chunk_ff", "unet3d_head_width"):
        if getattr(args, option):
            command += ["--" + option.replace("_", "-"), str(getattr(args, option))]
    # Allocations above 64 KiB are mapped and unmapped by themselves (glibc's threshold would otherwise
    # grow and keep freed blocks resident), so resident memory follows the live tensors.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_memory_cuda(c: Contender, inputs: Inputs, device) -> dict:
    gc.collect()
    torch.cuda.empty_cache()
    loaded = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    guided_step(c, inputs)
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_mib": peak / 2**20, "step_mib": (peak - loaded) / 2**20, "loaded_mib": loaded / 2**20,
            "method": "torch.cuda.max_memory_allocated"}


def peak_tflops(device: torch.device, dtype: str, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda" or dtype == "fp32":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def run_point(names: list[str], preset: Preset, frames: int, latent: int, args, flops: bool = True) -> dict:
    """Build, time (interleaved), count and measure every contender at one size."""
    device = torch.device(args.device)
    contenders = [build(name, preset, args) for name in names]
    inputs = make_inputs(preset, frames, latent, device)
    times = time_interleaved(contenders, inputs, args.warmup, args.repeats, device)
    results = {}
    for c in contenders:
        t = times[c.name]
        row = {"parameters": c.parameters, "latency_s": statistics.median(t["wall"]), "wall_s": t["wall"],
               "first_call_s": t["first_call_s"]}
        if device.type == "cpu":
            row["cpu_s"] = statistics.median(t["cpu"])
        row["frame_steps_per_s"] = frames / row["latency_s"]
        if flops:
            row["gflop"] = count_flops(c, inputs) / 1e9
            row["tflops_per_s"] = row["gflop"] / 1e3 / row["latency_s"]
            peak = peak_tflops(device, args.dtype, args.peak_tflops)
            if peak:
                row["mfu"] = row["tflops_per_s"] / peak
        if device.type == "cuda":
            row["memory"] = measure_memory_cuda(c, inputs, device)
        results[c.name] = row
    del contenders
    gc.collect()
    if device.type == "cpu" and not args.no_memory:
        for name in names:
            results[name]["memory"] = measure_memory_cpu(name, frames, latent, args)
    return {"frames": frames, "latent": latent, "contenders": results, "ratios": ratios(results)}


def ratios(results: dict) -> dict:
    """The targets' ratios: diffusers-3d over vidgen, and what vidgen adds to the image U-Net."""
    out = {}
    if "vidgen" in results and "diffusers-3d" in results:
        v, d = results["vidgen"], results["diffusers-3d"]
        out["diffusers-3d / vidgen latency"] = d["latency_s"] / v["latency_s"]
        if "cpu_s" in v:
            out["diffusers-3d / vidgen cpu time"] = d["cpu_s"] / v["cpu_s"]
        if "memory" in v and "memory" in d:
            out["diffusers-3d / vidgen peak memory"] = d["memory"]["peak_mib"] / v["memory"]["peak_mib"]
            out["diffusers-3d / vidgen step memory"] = d["memory"]["step_mib"] / v["memory"]["step_mib"]
    if "vidgen" in results and "image-2d" in results:
        v, i = results["vidgen"], results["image-2d"]
        out["temporal overhead (vidgen / image-2d - 1), latency"] = v["latency_s"] / i["latency_s"] - 1
        if "cpu_s" in v:
            out["temporal overhead (vidgen / image-2d - 1), cpu time"] = v["cpu_s"] / i["cpu_s"] - 1
    return out


# --- a whole generation (GPU memory target) -------------------------------------------------------

def generation_memory(preset: Preset, args) -> dict:
    """Peak memory and time of a whole `VideoPipeline` call: text encoder, guided DDIM over every
    frame, VAE decode in chunks of 8 frames; random weights at the preset's sizes."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from vidgen.model_index import GenerationDefaults, ModelIndex
    from vidgen.models.vae import latent_factor
    from vidgen.model_folder import VideoModel
    from vidgen.pipeline import VideoPipeline
    from vidgen.text import TextEncoder

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.manual_seed(0)
    chars = list(bytes_to_unicode().values())  # a byte-level tokenizer: one token per character
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=preset.text_tokens)
    width = preset.unet["cross_attention_dim"]
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=4 * width,
                                        num_hidden_layers=preset.text_layers, num_attention_heads=max(1, width // 64),
                                        max_position_embeddings=preset.text_tokens, bos_token_id=0, eos_token_id=1,
                                        pad_token_id=1))
    vae = AutoencoderKL(in_channels=3, out_channels=3, **preset.vae)
    unet = inflate_unet(UNet2DConditionModel(**preset.unet))
    latent = args.latent
    size = latent * latent_factor(vae)
    defaults = GenerationDefaults(num_frames=args.frames, height=size, width=size, fps=FPS,
                                  num_inference_steps=args.generation_steps, guidance_scale=GUIDANCE)
    pipe = VideoPipeline(VideoModel({"base": unet}, vae, TextEncoder(text, tokenizer), DDIMScheduler(**SCHEDULER),
                                    ModelIndex(defaults=defaults)))
    for module in (unet, vae, text):
        module.to(device=device, dtype=dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    frames = pipe("a ball", seed=0, progress=False).frames
    synchronize(device)
    seconds = time.perf_counter() - started
    result = {"frames": args.frames, "height": size, "width": size, "steps": args.generation_steps,
              "seconds": seconds, "output_shape": list(frames.shape)}
    if device.type == "cuda":
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    else:
        result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


# --- reporting ----------------------------------------------------------------------------------

def machine(device: torch.device) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    info = {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
            "load_average": os.getloadavg()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def print_point(title: str, point: dict) -> None:
    print(f"\n{title}")
    results = point["contenders"]
    print(f"  {'contender':<13} {'params':>8} {'latency':>9} {'cpu time':>9} {'frames*steps/s':>15} "
          f"{'GFLOP':>7} {'TFLOP/s':>8} {'MFU':>6} {'peak MiB':>9} {'step MiB':>9}")
    for name, r in results.items():
        mem = r.get("memory", {})
        cells = [f"  {name:<13}", f"{r['parameters'] / 1e6:7.1f}M", f"{r['latency_s'] * 1e3:7.0f}ms",
                 f"{r['cpu_s'] * 1e3:7.0f}ms" if "cpu_s" in r else f"{'-':>9}", f"{r['frame_steps_per_s']:15.1f}",
                 f"{r['gflop']:7.1f}" if "gflop" in r else f"{'-':>7}",
                 f"{r['tflops_per_s']:8.3f}" if "tflops_per_s" in r else f"{'-':>8}",
                 f"{r['mfu'] * 100:5.1f}%" if "mfu" in r else f"{'-':>6}",
                 f"{mem['peak_mib']:9.0f}" if mem else f"{'-':>9}", f"{mem['step_mib']:9.0f}" if mem else f"{'-':>9}"]
        print(" ".join(cells))
    for k, value in point["ratios"].items():
        print(f"  {k}: " + (f"{value * 100:+.1f}%" if "overhead" in k else f"{value:.2f}x"))


def print_scaling(scaling: dict, names: list[str]) -> None:
    """One line per size: each contender's latency (and step memory), per frame, and the ratios."""
    print("\nscaling summary: latency ms (step MiB) per contender; ms per frame for vidgen")
    print("  " + f"{'frames':>6} {'latent':>6} " + " ".join(f"{n:>18}" for n in names) + f" {'vidgen ms/frame':>16}")
    for point in (*scaling["frames"].values(), *scaling["latent"].values()):
        cells = []
        for name in names:
            r = point["contenders"][name]
            mem = f" ({r['memory']['step_mib']:.0f})" if "memory" in r else ""
            cells.append(f"{r['latency_s'] * 1e3:.0f}{mem}".rjust(18))
        per_frame = point["contenders"]["vidgen"]["latency_s"] * 1e3 / point["frames"] if "vidgen" in names else 0
        print(f"  {point['frames']:>6} {point['latent']:>6} " + " ".join(cells) + f" {per_frame:16.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(PRESETS), default="default")
    parser.add_argument("--frames", type=int, help="frames per clip (default: the preset's, 16)")
    parser.add_argument("--latent", type=int, help="latent side (default: the preset's; sd15: 32 on CPU, 64 on GPU)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (each runs every contender once)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each contender first")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help=f"comma-separated from {CONTENDERS}")
    parser.add_argument("--scaling", action="store_true",
                        help=f"also time frames {SCALING_FRAMES} and latent sides x0.5, x1, x2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="weights and activations")
    parser.add_argument("--autocast", action="store_true",
                        help="keep float32 weights, run under torch.autocast(--dtype)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every contender (warm-up compiles)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last weights for every contender")
    parser.add_argument("--chunk-temporal", type=int, help="vidgen: temporal attention sequences per chunk")
    parser.add_argument("--chunk-ff", type=int, help="every contender: images per feed-forward chunk")
    parser.add_argument("--unet3d-head-width", type=int, metavar="N",
                        help="diffusers-3d's attention_head_dim, the width of its temporal heads (default: the 2-D "
                             "config's value; ModelScope's is 64)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the CPU memory subprocesses")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak for MFU (default: known GPUs' bf16/fp16)")
    parser.add_argument("--generation", action="store_true",
                        help="also measure a whole pipeline call (text, guided DDIM, VAE decode) at the preset size")
    parser.add_argument("--generation-steps", type=int, default=2, help="DDIM steps of --generation")
    parser.add_argument("--json", metavar="OUT", help="write every figure to this JSON file")
    parser.add_argument("--memory-probe", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.stdout.reconfigure(line_buffering=True)  # each table as it is measured, also into a file
    preset = PRESETS[args.size]
    device = torch.device(args.device)
    args.frames = args.frames or preset.frames
    args.latent = args.latent or (preset.latent_gpu if device.type == "cuda" else preset.latent)
    if args.memory_probe:
        print(json.dumps(memory_probe(args)))
        return 0
    names = [n.strip() for n in args.contenders.split(",")]
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown contenders {unknown}: choose from {', '.join(CONTENDERS)}")

    report = {"machine": machine(device), "args": vars(args),
              "matching": MATCHING.format(heads=preset.unet["attention_head_dim"],
                                          temporal=unet3d_config(preset.unet, args.unet3d_head_width)[
                                              "attention_head_dim"])}
    print("machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()))
    print(f"contenders {', '.join(names)}: {report['matching']}")
    print(f"one guided DDIM step = batch of 2 (cond + uncond) x {args.frames} frames x {args.latent}x{args.latent} "
          f"latents, {args.dtype}{' autocast' if args.autocast else ''}, median of {args.repeats} interleaved runs "
          f"after {args.warmup} warm-up")

    report["main"] = run_point(names, preset, args.frames, args.latent, args)
    print_point(f"size {args.size}: {args.frames} frames, {args.latent}x{args.latent} latents", report["main"])

    if args.scaling:
        report["scaling"] = {"frames": {}, "latent": {}}
        for frames in SCALING_FRAMES:
            if frames != args.frames:
                point = run_point(names, preset, frames, args.latent, args, flops=False)
                print_point(f"scaling: {frames} frames, {args.latent}x{args.latent} latents", point)
            else:
                point = report["main"]
            report["scaling"]["frames"][frames] = point
        for latent in (args.latent // 2, args.latent, args.latent * 2):
            if latent != args.latent:
                point = run_point(names, preset, args.frames, latent, args, flops=False)
                print_point(f"scaling: {args.frames} frames, {latent}x{latent} latents", point)
            else:
                point = report["main"]
            report["scaling"]["latent"][latent] = point
        print_scaling(report["scaling"], names)

    if args.generation:
        report["generation"] = generation_memory(preset, args)
        print(f"\nwhole generation: {json.dumps(report['generation'])}")
    report["machine"]["load_average_after"] = os.getloadavg()
    print(f"\nload average before {report['machine']['load_average']}, after {report['machine']['load_average_after']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
