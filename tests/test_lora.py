"""LoRA adapters: trained on the temporal layers by `vidgen train` (model.lora_rank), built with
peft for the spatial U-Net, loaded by `vidgen generate --lora FILE[:SCALE]`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vidgen.cli import main

REPO = Path(__file__).resolve().parents[1]


def vidgen(*argv) -> None:
    argv = [str(a) for a in argv]
    assert main(argv) == 0, f"vidgen {' '.join(argv)} failed"


@pytest.fixture(scope="module")
def temporal_lora(video_model, tmp_path_factory) -> Path:
    """A rank-4 LoRA on the temporal attention, 3 video-stage steps on a 2-clip shapes corpus."""
    root = tmp_path_factory.mktemp("lora-run")
    vidgen("data", "shapes", "--out", root / "corpus", "--videos", 2, "--size", 32, "--no-progress", "frames=8")
    vidgen("train", "--no-progress", REPO / "configs" / "tiny" / "video.yaml",
           f"data.manifest={root / 'corpus' / 'manifest.jsonl'}", f"train.output_dir={root / 'run'}",
           f"model.pretrained={video_model}", "model.lora_rank=4", "train.max_steps=3", "train.lr=0.05",
           "train.ema_decay=0", "train.checkpoint_every=3", "data.num_frames=4")
    return root / "run" / "model" / "lora.safetensors"


@pytest.fixture(scope="module")
def base_clip(video_model, tmp_path_factory) -> Path:
    """The clip of the model without adapters (its PNG frames and sidecar)."""
    out = tmp_path_factory.mktemp("lora-base") / "base"
    generate(video_model, out)
    return out


def frames_of(out: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))])  # (f h w 3)


def generate(model: Path, out: Path, *extra) -> np.ndarray:
    vidgen("generate", "a red circle moving left", "--model", model, "-o", out, "--format", "png", "--steps", 2,
           "--seed", 0, "--no-progress", *extra)
    return frames_of(out)


def test_a_temporal_lora_trained_by_vidgen_train_changes_the_clip_and_at_scale_0_gives_the_base_back(
        video_model, temporal_lora, base_clip, tmp_path):
    with safe_open(temporal_lora, "pt") as f:
        keys = list(f.keys())
        assert f.metadata()["format"] == "vidgen-lora" and f.metadata()["rank"] == "4"
    assert keys and all(k.startswith("temporal_attns.") and ".lora_" in k for k in keys)  # the adapter alone
    assert temporal_lora.stat().st_size < (video_model / "unet" / "model.safetensors").stat().st_size / 10
    base = frames_of(base_clip)
    adapted = generate(video_model, tmp_path / "lora", "--lora", temporal_lora)
    off = generate(video_model, tmp_path / "off", "--lora", f"{temporal_lora}:0")
    assert base.shape == adapted.shape == (4, 32, 32, 3)
    assert np.abs(adapted.astype(int) - base.astype(int)).max() > 0
    assert np.array_equal(off, base)
    assert json.loads((tmp_path / "off.json").read_text())["lora"] == [[str(temporal_lora), 0.0]]  # in the sidecar
    assert json.loads(base_clip.with_suffix(".json").read_text())["lora"] == []


def spatial_lora_file(sd_image_model: Path, path: Path, rank: int = 4, alpha: float = 8.0):
    """A LoRA for the image U-Net made with peft (random A and B), saved under diffusers' `unet.` names;
    returns the peft-adapted image U-Net it came from."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    unet = UNet2DConditionModel.from_pretrained(sd_image_model / "unet").eval()
    torch.manual_seed(1)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                        init_lora_weights=False)
    inject_adapter_in_model(config, unet)
    state = {f"unet.{k}": v.contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    save_file(state, path, metadata={"lora_adapter_metadata": json.dumps({"r": rank, "lora_alpha": alpha})})
    return unet


def test_a_spatial_lora_made_with_peft_loads_as_peft_runs_it_and_changes_the_clip(
        sd_image_model, video_model, base_clip, tmp_path):
    from vidgen.interop import lora
    from vidgen.model_folder import VideoModel

    path = tmp_path / "spatial.safetensors"
    peft_unet = spatial_lora_file(sd_image_model, path)
    unet = VideoModel.from_pretrained(video_model).stages["base"]
    lora.load(unet, path, scale=1.0)
    x, text = torch.randn(2, 4, 1, 16, 16), torch.randn(2, 32, 32)
    with torch.no_grad():  # one frame: the image U-Net with the adapter, as peft computes it
        expected = peft_unet(x[:, :, 0], 500, text).sample
        assert torch.allclose(unet(x, 500, text)[:, :, 0], expected, atol=1e-5)
    kohya_path = tmp_path / "kohya.safetensors"  # the same adapter under kohya's names, alpha per module
    kohya = {}
    for key, value in load_file(path).items():
        module, half = key.removeprefix("unet.").rsplit(".lora_", 1)
        name = "lora_unet_" + module.replace(".", "_")
        kohya[f"{name}.lora_{'down' if half.startswith('A') else 'up'}.weight"] = value
        kohya[f"{name}.alpha"] = torch.tensor(8.0)
    save_file(kohya, kohya_path)
    peft_path = tmp_path / "peft.safetensors"  # as PeftModel.save_pretrained names them
    save_file({k.replace("unet.", "base_model.model.", 1): v for k, v in load_file(path).items()}, peft_path,
              metadata={"lora_alpha": "8"})
    for other in (kohya_path, peft_path):
        unet_other = VideoModel.from_pretrained(video_model).stages["base"]
        lora.load(unet_other, other)
        with torch.no_grad():
            assert torch.allclose(unet_other(x, 500, text)[:, :, 0], expected, atol=1e-5)
    base = frames_of(base_clip)
    adapted = generate(video_model, tmp_path / "lora", "--lora", f"{path}:0.5")
    assert np.abs(adapted.astype(int) - base.astype(int)).max() > 0


def test_two_loras_each_at_its_own_scale(sd_image_model, video_model, temporal_lora, tmp_path):
    from vidgen.interop import lora
    from vidgen.model_folder import VideoModel

    path = tmp_path / "spatial.safetensors"
    spatial_lora_file(sd_image_model, path)
    unet = VideoModel.from_pretrained(video_model).stages["base"]
    x, text = torch.randn(1, 4, 4, 16, 16), torch.randn(1, 32, 32)
    with torch.no_grad():
        base = unet(x, 500, text)
        first = lora.load(unet, path, 1.0)
        second = lora.load(unet, temporal_lora, 1.0)
        both = unet(x, 500, text)
        lora.set_scale(unet, first, 0.0)
        temporal_only = unet(x, 500, text)
        lora.set_scale(unet, second, 0.0)
        assert torch.equal(unet(x, 500, text), base)
    assert not torch.allclose(both, temporal_only) and not torch.allclose(temporal_only, base)


def test_a_lora_for_another_model_is_refused_naming_a_key(video_model, tmp_path, capsys):
    path = tmp_path / "other.safetensors"
    save_file({"unet.mid_block.attentions.0.no_such_layer.lora_A.weight": torch.zeros(4, 32),
               "unet.mid_block.attentions.0.no_such_layer.lora_B.weight": torch.zeros(32, 4)}, path)
    argv = ["generate", "x", "--model", str(video_model), "-o", str(tmp_path / "c.gif"), "--steps", "2",
            "--no-progress", "--lora", str(path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_layer.lora_A.weight" in err and "matches no module" in err
    assert not (tmp_path / "c.gif").exists()
    pickle = tmp_path / "weights.bin"
    pickle.write_bytes(b"\x80\x04")
    assert main(argv[:-1] + [str(pickle)]) == 2  # refused before the model loads
    assert "not a .safetensors file" in capsys.readouterr().err


def test_lora_rank_is_refused_outside_the_video_stage(tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    assert main(["train", str(REPO / "configs" / "tiny" / "interp.yaml"), f"data.manifest={manifest}",
                 f"train.output_dir={tmp_path / 'run'}", "model.lora_rank=4", "model.pretrained=x"]) == 2
    assert "model.lora_rank" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
