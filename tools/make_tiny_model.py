"""Write a tiny, untrained vidgen model folder (random U-Net and VAE, the packaged MiniLM text
encoder), so `vidgen generate` runs end to end before the trained default model exists.

    python tools/make_tiny_model.py tiny-model
    vidgen generate "a red circle moving left" --model tiny-model -o clip.mp4

Its clips are noise-like: it shows the plumbing (text -> guided DDIM -> VAE -> MP4), not a model.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from vidgen.model_folder import VideoModel
from vidgen.model_index import GenerationDefaults, ModelIndex
from vidgen.models.inflate import inflate_unet
from vidgen.packaged import minilm_folder
from vidgen.text import TextEncoder


def build(seed: int = 0) -> VideoModel:
    torch.manual_seed(seed)
    text = TextEncoder.from_pretrained(minilm_folder(), max_length=16)
    vae = AutoencoderKL(block_out_channels=(16, 32, 32), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, latent_channels=4,
                        norm_num_groups=8, sample_size=64)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                attention_head_dim=8, norm_num_groups=8, cross_attention_dim=text.hidden_size)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False)
    defaults = GenerationDefaults(num_frames=16, fps=8.0, height=64, width=64, num_inference_steps=20, guidance_scale=5.0)
    return VideoModel({"base": inflate_unet(unet.eval())}, vae.eval(), text, scheduler, ModelIndex(defaults=defaults))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="model folder to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = build(args.seed).save_pretrained(args.out)
    print(f"wrote an untrained tiny vidgen model to {folder}")


if __name__ == "__main__":
    main()
