"""tools/gpu_train_base.py: the caption table that stands in for the text encoder on a machine
without its weights, and the corpus rendered straight into a latent cache."""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidgen.data import shapes
from vidgen.data.clips import frames_to_tensor
from vidgen.data.latent_cache import LatentCache, _encode_frames, vae_fingerprint
from vidgen.data.manifest import read_manifest
from vidgen.errors import VidgenError

TOOL = Path(__file__).resolve().parents[1] / "tools" / "gpu_train_base.py"


@pytest.fixture(scope="module")
def tool():
    sys.path.insert(0, str(TOOL.parent))  # importable by name: its renderer goes to worker processes
    try:
        yield importlib.import_module(TOOL.stem)
    finally:
        sys.path.remove(str(TOOL.parent))


def test_the_caption_list_holds_every_corpus_caption_and_no_heldout_triple(tool):
    cfg = shapes.ShapesConfig()
    captions = set(tool.corpus_captions(cfg))
    assert "" in captions and len(captions) == 1 + (6 * 3 * 4 - 6) * 3 * 3
    assert {shapes.corpus_clip(cfg, i)[1] for i in range(300)} <= captions
    heldout = [shapes.caption(*triple) for triple in shapes.HELDOUT]
    assert not captions & set(heldout)


def test_the_table_gives_the_text_encoders_embeddings(tool, tmp_path):
    from vidgen.checkpoint import read_model_index
    from vidgen.packaged import DEFAULT_MODEL, resolve_text_encoder
    from vidgen.text import TextEncoder

    captions = ["", "a red circle moving left", "a small blue square moving up on a gray background"]
    tool.write_table(tmp_path / "table.safetensors", captions)
    table = tool.CaptionTable(tmp_path / "table.safetensors")
    index = read_model_index(DEFAULT_MODEL)
    encoder = TextEncoder.from_pretrained(resolve_text_encoder(index.text_encoder), max_length=index.text_max_length)
    prompts = [captions[2], captions[1], captions[1]]
    with torch.no_grad():
        assert torch.allclose(table.encode(prompts), encoder.encode(prompts), atol=1e-5)
        assert torch.allclose(table.null(2), encoder.null(2), atol=1e-5)
    assert table.hidden_size == encoder.hidden_size and table.max_length == encoder.max_length
    with pytest.raises(VidgenError, match="outside the table"):
        table.encode(["a green triangle moving down"])


def test_the_rendered_corpus_is_a_latent_cache_of_the_shapes_clips(tool, tmp_path):
    from diffusers import AutoencoderKL

    from vidgen.checkpoint import load_diffusers
    from vidgen.packaged import DEFAULT_MODEL

    vae = load_diffusers(AutoencoderKL, DEFAULT_MODEL / "vae", torch.float32)
    manifest = tool.render_latent_corpus(tmp_path, vae, "cpu", clips=3, workers=1, batch=2)
    records = read_manifest(manifest)
    cache = LatentCache(tmp_path / "latents")
    assert LatentCache.matches(tmp_path / "latents", vae_fingerprint(vae, 64))
    assert [r["caption"] for r in records] == [shapes.corpus_clip(shapes.ShapesConfig(), i)[1] for i in range(3)]
    clip, _ = shapes.corpus_clip(shapes.ShapesConfig(), 2)
    mean, std = cache.load(records[2]["path"])  # (c F h w)
    assert mean.shape == (4, 48, 16, 16) and cache.entry(records[2]["path"]).fps == 24.0
    expected_mean, expected_std = _encode_frames(vae, frames_to_tensor(shapes.render_clip(clip)), 16)
    assert torch.allclose(mean, expected_mean.half().float(), atol=2e-3)
    assert torch.allclose(std, expected_std.half().float(), atol=2e-3)
    other, _ = cache.load(records[1]["path"])
    assert not torch.allclose(mean, other, atol=1e-2)  # each clip its own latents


def test_vidgen_loads_the_table_for_a_model_that_names_its_text_encoder(tool, tmp_path, monkeypatch):
    import vidgen.pipeline as pipeline

    tool.write_table(tmp_path / "table.safetensors", ["", "a red circle moving left"])
    monkeypatch.setattr(pipeline, "TextEncoder", pipeline.TextEncoder)  # restored after the test
    monkeypatch.setattr(pipeline, "resolve_text_encoder", pipeline.resolve_text_encoder)
    tool.use_caption_table(str(tmp_path / "table.safetensors"))
    model = tool.base_only_model(tmp_path / "model")
    assert json.loads((model / "vidgen.json").read_text())["stages"] == {"base": "unet"}
    pipe = pipeline.VideoPipeline.from_pretrained(model)
    assert isinstance(pipe.text_encoder, tool.CaptionTable)
    frames = pipe(["a red circle moving left"], num_inference_steps=1, num_frames=2, seed=0, progress=False,
                  candidates=1, arrow_check=False)  # the copy has no critic to choose or check with
    assert np.asarray(frames[0]).shape[0] == 2


def test_a_later_first_clip_renders_clips_an_earlier_corpus_lacks(tool, tmp_path):
    from diffusers import AutoencoderKL

    from vidgen.checkpoint import load_diffusers
    from vidgen.packaged import DEFAULT_MODEL

    vae = load_diffusers(AutoencoderKL, DEFAULT_MODEL / "vae", torch.float32)
    records = read_manifest(tool.render_latent_corpus(tmp_path, vae, "cpu", clips=2, workers=1, first=4))
    assert [Path(r["path"]).name for r in records] == ["00004.mp4", "00005.mp4"]
    assert [r["caption"] for r in records] == [shapes.corpus_clip(shapes.ShapesConfig(), i)[1] for i in (4, 5)]
    cache = LatentCache(tmp_path / "latents")
    assert all(cache.load(r["path"])[0].shape == (4, 48, 16, 16) for r in records)
