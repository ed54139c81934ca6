"""Memory options of `vidgen generate`: frame-chunked decoding, attention chunking and model CPU
offload give the frames of the plain call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.cli import main


@pytest.fixture(scope="module")
def video_model(sd_image_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("memory") / "video"
    assert main(["inflate", "--image-model", str(sd_image_model), "--out", str(out), "--max-frames", "8",
                 "--frames", "6"]) == 0
    return out


def perturbed_pipeline(video_model: Path):
    """The inflated model with random temporal layers (inflated ones start as the identity, which
    would hide a chunking error in the temporal attention)."""
    from vidgen.pipeline import VideoPipeline

    pipe = VideoPipeline.from_pretrained(video_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in pipe.model.stages["base"].temporal_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return pipe


def test_frame_chunked_decode_equals_the_whole_decode(video_model):
    from vidgen.models.vae import decode_latents
    from vidgen.pipeline import VideoPipeline

    vae = VideoPipeline.from_pretrained(video_model).model.vae
    latents = torch.randn(2, 4, 6, 16, 16, generator=torch.Generator().manual_seed(0))  # (b c f h w)
    with torch.no_grad():
        whole = decode_latents(vae, latents, chunk_size=12)  # all 2 x 6 frames in one call
        for chunk in (1, 5):
            chunked = decode_latents(vae, latents, chunk_size=chunk)
            assert chunked.shape == whole.shape == (2, 3, 6, 32, 32)
            assert (chunked - whole).abs().max() < 1e-5


def test_attention_chunk_and_offload_give_the_plain_frames(video_model):
    from vidgen import memory

    plain = perturbed_pipeline(video_model)
    expected = plain("a red circle", num_inference_steps=2, seed=0, output_type="pt", progress=False).frames

    chunked = perturbed_pipeline(video_model)
    memory.set_attention_chunk(chunked.model, 7)  # 16x16 latents: 256 sequences per temporal attention, 7 at a time
    memory.set_decode_chunk(chunked.model, 1)
    got = chunked("a red circle", num_inference_steps=2, seed=0, output_type="pt", progress=False).frames
    assert (got - expected).abs().max() < 1e-4

    offloaded = perturbed_pipeline(video_model)
    hooks = memory.enable_model_offload(offloaded.model, "cpu")
    order = memory.offload_order(offloaded.model)
    assert len(hooks) == len(order) == 3  # text encoder, base U-Net, VAE, in the order they run
    assert all(hasattr(module, "_hf_hook") for module in order)
    assert [h.hook.prev_module_hook for h in hooks[1:]] == hooks[:-1]  # each start sends the one before back
    got = offloaded("a red circle", num_inference_steps=2, seed=0, output_type="pt", progress=False).frames
    assert torch.equal(got, expected)


def test_the_memory_flags_on_the_command_line(video_model, tmp_path, capsys):
    def frames(out: Path, *extra) -> np.ndarray:
        assert main(["generate", "a red circle", "--model", str(video_model), "-o", str(out), "--format", "png",
                     "--steps", "2", "--seed", "0", "--no-progress", *extra]) == 0
        return np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))])

    plain = frames(tmp_path / "plain")
    low = frames(tmp_path / "low", "--offload", "--attention-chunk", "16", "--decode-chunk", "2")
    assert low.shape == plain.shape == (6, 32, 32, 3)
    assert np.abs(low.astype(int) - plain.astype(int)).max() <= 1  # float rounding at most one level
    assert main(["generate", "x", "--model", str(video_model), "-o", str(tmp_path / "c.gif"), "--decode-chunk",
                 "0"]) == 2
    assert "--decode-chunk" in capsys.readouterr().err
