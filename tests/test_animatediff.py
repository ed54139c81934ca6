"""AnimateDiff in vidgen: `vidgen inflate --motion-adapter` puts a motion module (a diffusers
MotionAdapter folder, or the original single-file module as .safetensors) into a Stable Diffusion
folder through diffusers' UNetMotionModel; the model gives AnimateDiffPipeline's own frames for a
seed, trains its motion modules alone, and exports back to a folder AnimateDiffPipeline loads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import interop_factory as factory
from vidgen.cli import main
from vidgen.interop.diffusers_video import TEMPORAL_MODULES

UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def animatediff(tmp_path_factory):
    """Folders (SD image model, MotionAdapter, original-format .safetensors module, diffusers'
    saved AnimateDiffPipeline) and AnimateDiffPipeline's uint8 frames for factory.SETTINGS."""
    root = tmp_path_factory.mktemp("animatediff")
    sd, adapter = factory.make_sd_pipeline(), factory.make_motion_adapter()
    sd.save_pretrained(root / "sd")
    adapter.save_pretrained(root / "adapter")
    save_file(factory.original_motion_module(adapter), root / "mm_tiny.safetensors")
    pipe = factory.make_animatediff_pipeline(sd, adapter)
    pipe.save_pretrained(root / "pipeline")
    return root, factory.pipeline_frames(pipe)


def inflate(root: Path, adapter: Path, out: Path, *extra: str) -> int:
    return main(["inflate", "--image-model", str(root / "sd"), "--motion-adapter", str(adapter), "--out", str(out),
                 *extra])


def generate(model: Path, out: Path) -> np.ndarray:
    assert main(factory.generate_args(model, out)) == 0
    return factory.png_frames(out)


@pytest.mark.parametrize("source", ["adapter", "mm_tiny.safetensors", "pipeline"])
def test_frames_match_animatediff_pipeline(animatediff, tmp_path, source):
    root, expected = animatediff
    model = root / source
    if source != "pipeline":  # a saved AnimateDiffPipeline folder runs as it is
        assert inflate(root, root / source, tmp_path / "model") == 0
        model = tmp_path / "model"
    frames = generate(model, tmp_path / "clip")
    assert frames.std() > 5 and factory.max_difference(frames, expected) <= 1


def test_stochastic_ddim_draws_the_same_step_noise(animatediff, tmp_path):
    """eta > 0: AnimateDiffPipeline steps on (b c f h w) latents, as vidgen does, with the same generator."""
    from diffusers import AnimateDiffPipeline

    root, _ = animatediff
    settings = {**factory.SETTINGS, "eta": 0.7}
    expected = factory.pipeline_frames(AnimateDiffPipeline.from_pretrained(root / "pipeline"), settings)
    assert main(factory.generate_args(root / "pipeline", tmp_path / "clip", settings)) == 0
    assert factory.max_difference(factory.png_frames(tmp_path / "clip"), expected) <= 1


def test_a_single_frame_table_differs(animatediff, tmp_path):
    """The comparison can fail: the same model without its motion modules' training differs."""
    root, expected = animatediff
    original = load_file(root / "mm_tiny.safetensors")
    key = next(k for k in original if k.endswith("attention_blocks.0.to_out.0.weight"))
    original[key] = original[key] * 0  # one temporal output projection back to diffusers' zero init
    save_file(original, tmp_path / "changed.safetensors")
    assert inflate(root, tmp_path / "changed.safetensors", tmp_path / "model") == 0
    assert factory.max_difference(generate(tmp_path / "model", tmp_path / "clip"), expected) > 1


def test_refusals_before_loading(animatediff, tmp_path, capsys):
    root, _ = animatediff
    pickle = tmp_path / "mm_sd_v15.ckpt"
    pickle.write_bytes(b"never unpickled")
    assert inflate(root, pickle, tmp_path / "a") == 2
    assert "mm_sd_v15.ckpt is a pickle" in capsys.readouterr().err
    assert inflate(root, root / "adapter", tmp_path / "b", "--max-frames", "8") == 2
    assert "--max-frames does not apply" in capsys.readouterr().err
    assert inflate(root, tmp_path / "nothing-here", tmp_path / "c") == 2
    assert "neither a diffusers MotionAdapter folder" in capsys.readouterr().err
    tensors = load_file(root / "mm_tiny.safetensors")
    del tensors[next(k for k in tensors if k.endswith("ff_norm.weight"))]
    save_file(tensors, tmp_path / "broken.safetensors")
    assert inflate(root, tmp_path / "broken.safetensors", tmp_path / "d") == 2
    err = capsys.readouterr().err
    assert "broken.safetensors" in err and "norm3.weight" in err  # the key, under the adapter's name
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_adapter_for_another_unet_layout_is_refused(animatediff, tmp_path, capsys):
    from diffusers import MotionAdapter

    root, _ = animatediff
    MotionAdapter(**{**factory.TINY_ADAPTER, "block_out_channels": (16, 32, 32)}).save_pretrained(tmp_path / "sdxl")
    assert inflate(root, tmp_path / "sdxl", tmp_path / "model") == 2
    assert "does not fit this image U-Net" in capsys.readouterr().err


def test_trains_motion_modules_only_and_exports_back(animatediff, tmp_path):
    from diffusers import AnimateDiffPipeline

    root, _ = animatediff
    assert inflate(root, root / "adapter", tmp_path / "model") == 0
    trained = factory.train("video", factory.shapes_corpus(tmp_path), tmp_path / "model", tmp_path / "video")
    assert all(np.isfinite(factory.logged_losses(tmp_path / "video")))
    temporal, spatial = factory.split_changes(load_file(tmp_path / "model" / "unet" / UNET_WEIGHTS),
                                              load_file(trained / "unet" / UNET_WEIGHTS),
                                              TEMPORAL_MODULES["UNetMotionModel"])
    assert temporal and not spatial

    assert main(["export", str(trained), str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported" / "motion_adapter").is_dir()
    exported = factory.pipeline_frames(AnimateDiffPipeline.from_pretrained(tmp_path / "exported"))
    assert factory.max_difference(generate(trained, tmp_path / "clip"), exported) <= 1


def test_original_key_names_map_to_the_motion_adapters():
    """The original code's names, written out (not derived from the adapter), land on diffusers'."""
    import torch

    from vidgen.interop.animatediff import original_to_adapter_keys

    block = "up_blocks.1.motion_modules.2.temporal_transformer.transformer_blocks.0"
    table = torch.randn(1, 24, 8)
    original = {f"{block}.attention_blocks.0.to_q.weight": torch.zeros(1),
                f"{block}.attention_blocks.1.to_out.0.bias": torch.zeros(1),
                f"{block}.norms.0.weight": torch.zeros(1), f"{block}.norms.1.bias": torch.zeros(1),
                f"{block}.ff_norm.weight": torch.zeros(1), f"{block}.ff.net.0.proj.weight": torch.zeros(1),
                f"{block}.attention_blocks.0.pos_encoder.pe": table,
                f"{block}.attention_blocks.1.pos_encoder.pe": table.clone(),
                "mid_block.motion_modules.0.temporal_transformer.proj_in.weight": torch.zeros(1)}
    converted = original_to_adapter_keys(original, "mm.safetensors")
    new = "up_blocks.1.motion_modules.2.transformer_blocks.0"
    assert sorted(converted) == sorted([f"{new}.attn1.to_q.weight", f"{new}.attn2.to_out.0.bias", f"{new}.norm1.weight",
                                        f"{new}.norm2.bias", f"{new}.norm3.weight", f"{new}.ff.net.0.proj.weight",
                                        f"{new}.pos_embed.pe", "mid_block.motion_modules.0.proj_in.weight"])
    assert torch.equal(converted[f"{new}.pos_embed.pe"], table)
