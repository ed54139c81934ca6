"""Frames pinned to the bit: `vidgen generate` with a fixed seed writes the pixels it wrote when
these hashes were recorded, so a change to the code's structure that changes no behaviour keeps
them. A hash that moves means the frames moved: find out why before recording a new one.

Two tiny models from the SD-layout fixture: the inflated base stage alone (`vidgen inflate`), and
a cascade (base, frame interpolation, super-resolution) with a seeded, untrained arrow critic, so
that every step of the pipeline's recipe is on the path: the frame-noise prior, SDEdit starts,
the arrow check, candidates chosen by arrow and by swaps, and motion guidance.
"""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.cli import main

PROMPT = "a red circle moving left"

# Recorded before the model folder and the sampler were split (vidgen.model_folder, vidgen.pipeline).
INFLATED_BASE = "a4fc9e93a59b10d375247cd52c6d793d0999210b7f51fccbcaf9ce52476bc82b"
CASCADE_DEFAULTS = "f078b05d803dd6d5e526f1cef42b92c1326568a14f2c9bf12f6e47d5dc978079"
CASCADE_BASE_SWAPS_GUIDED = "e8dc10342691660480b61aa3c59c30618ab711a9e1dad9c0284161db7eecad84"


def frames_sha256(folder) -> str:
    """sha256 over the frames' pixels in frame order (not the PNG files' bytes, which depend on
    the encoder's version)."""
    digest = hashlib.sha256()
    for png in sorted(folder.glob("*.png")):
        digest.update(np.asarray(Image.open(png).convert("RGB")).tobytes())  # (h w 3) uint8
    return digest.hexdigest()


def generate(model, out, *flags) -> str:
    assert main(["generate", PROMPT, "--model", str(model), "--seed", "3", "--steps", "3", "--format", "png",
                 "-o", str(out), "--no-progress", *flags]) == 0
    return frames_sha256(out)


@pytest.fixture(scope="module")
def inflated(sd_image_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("pinned") / "inflated"
    assert main(["inflate", "--image-model", str(sd_image_model), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_cascade(sd_image_model, tmp_path_factory):
    from vidgen.model_folder import VideoModel
    from vidgen.models import cascade
    from vidgen.models.critic import ArrowCritic, CriticConfig

    model = VideoModel.from_image_model(sd_image_model)
    base = model.stages["base"]
    model.set_stage("interp", cascade.interpolation_unet(base).eval())
    model.set_stage("sr", cascade.super_resolution_unet(base).eval())
    torch.manual_seed(0)
    directions = ["left", "right", "up", "down"]
    model.set_critic(ArrowCritic(CriticConfig(latent_channels=4, text_dim=model.text_encoder.hidden_size,
                                              widths=(8, 16), embed_dim=16, swap_words={"direction": directions})))
    index = model.index
    index.frame_noise_correlation = index.interp.noise_correlation = 0.5
    index.interp.num_inference_steps = index.sr.num_inference_steps = 2
    index.interp.strength = index.sr.strength = 0.5
    index.defaults.num_frames, index.defaults.arrow_check, index.defaults.candidates = 4, True, 2
    out = tmp_path_factory.mktemp("pinned") / "cascade"
    model.save_pretrained(out)
    return out


def test_the_inflated_model_writes_the_pinned_frames(inflated, tmp_path):
    assert generate(inflated, tmp_path / "frames") == INFLATED_BASE


def test_the_cascade_with_a_critic_writes_the_pinned_frames(tiny_cascade, tmp_path):
    assert generate(tiny_cascade, tmp_path / "defaults") == CASCADE_DEFAULTS
    assert generate(tiny_cascade, tmp_path / "swaps", "--stages", "base", "--candidates", "3", "--choose-by", "swaps",
                    "--motion-guidance", "50") == CASCADE_BASE_SWAPS_GUIDED
