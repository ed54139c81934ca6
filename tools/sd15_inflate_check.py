"""Inflate a full-size Stable Diffusion 1.5 U-Net (random weights, nothing downloaded) and time
one guided denoising step on the CPU.

    python tools/sd15_inflate_check.py [--frames 8] [--latent-size 32] [--threads N]

Prints the image U-Net's and the temporal layers' parameter counts, the time of one DDIM step
with classifier-free guidance (conditional and unconditional branches in one batch of 2) over
(1, 4, frames, size, size) latents in float32 under inference_mode, and the peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel

from vidgen import inflate_unet
from vidgen.diffusion.sampler import sample

# runwayml/stable-diffusion-v1-5 unet/config.json, written out.
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8,
)
SD15_SCHEDULER = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1)
TEXT_TOKENS = 77


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def count(params) -> int:
    return sum(p.numel() for p in params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--latent-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    torch.manual_seed(0)
    unet2d = UNet2DConditionModel(**SD15_UNET).eval()
    model = inflate_unet(unet2d).eval()
    built = time.perf_counter() - started
    print(f"image U-Net parameters:    {count(model.spatial_parameters()):>13,}")
    print(f"temporal parameters:       {count(model.temporal_parameters()):>13,} "
          f"({len(model.temporal_convs)} temporal convs, {len(model.temporal_attns)} temporal attentions, "
          f"fps embedding)")
    print(f"build + inflate:           {built:.1f} s")

    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 4, args.frames, args.latent_size, args.latent_size, generator=g)  # (b c f h w)
    cond, uncond = torch.randn(2, 1, TEXT_TOKENS, 768, generator=g)  # (b n d) each
    with torch.inference_mode():
        started = time.perf_counter()
        out = sample(lambda x, t, c: model(x, t, c, fps=8), DDIMScheduler(**SD15_SCHEDULER), noise, cond, uncond,
                     guidance_scale=7.5, num_inference_steps=1)
        step = time.perf_counter() - started
    assert out.shape == noise.shape and torch.isfinite(out).all()
    print(f"one guided DDIM step:      {step:.1f} s  (batch 2 x {args.frames} frames x "
          f"{args.latent_size}x{args.latent_size} latents, float32, {torch.get_num_threads()} threads)")
    print(f"peak resident memory:      {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
