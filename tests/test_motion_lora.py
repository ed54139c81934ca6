"""Motion LoRAs on a diffusers video base stage (AnimateDiff's UNetMotionModel): a LoRA in diffusers'
naming, made with peft on the motion modules and the spatial attentions, gives through
`vidgen generate --lora` the frames AnimateDiffPipeline gives with it loaded; `vidgen train` with
model.lora_rank trains one on the motion modules that both load back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import interop_factory as factory
from vidgen.cli import main

REPO = Path(__file__).resolve().parents[1]
# peft's regex (a full match of the module path): every attention projection, temporal and spatial
TARGETS = r".*\.(motion_modules|attentions)\..*\.(to_q|to_k|to_v|to_out\.0)"


@pytest.fixture(scope="module")
def animatediff(tmp_path_factory) -> Path:
    """A vidgen model inflated from a tiny SD folder and MotionAdapter; a saved AnimateDiffPipeline
    of the same weights; a LoRA written by diffusers' own save_lora_weights (random A and B)."""
    from diffusers import AnimateDiffPipeline, UNetMotionModel
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    root = tmp_path_factory.mktemp("motion-lora")
    sd, adapter = factory.make_sd_pipeline(), factory.make_motion_adapter()
    sd.save_pretrained(root / "sd")
    adapter.save_pretrained(root / "adapter")
    factory.make_animatediff_pipeline(sd, adapter).save_pretrained(root / "pipeline")
    assert main(["inflate", "--image-model", str(root / "sd"), "--motion-adapter", str(root / "adapter"),
                 "--out", str(root / "model")]) == 0
    unet = UNetMotionModel.from_pretrained(root / "pipeline" / "unet")
    torch.manual_seed(7)
    config = LoraConfig(r=4, lora_alpha=2.0, target_modules=TARGETS, init_lora_weights=False)
    inject_adapter_in_model(config, unet)
    layers = get_peft_model_state_dict(unet)
    assert any(".motion_modules." in k for k in layers) and any(".attentions." in k for k in layers)
    AnimateDiffPipeline.save_lora_weights(root / "lora", unet_lora_layers=layers,
                                          unet_lora_adapter_metadata=config.to_dict())
    return root


@pytest.fixture(scope="module")
def base_frames(animatediff, tmp_path_factory) -> np.ndarray:
    return vidgen_frames(animatediff / "model", tmp_path_factory.mktemp("motion-lora-base") / "base")


def base_stage(model: Path):
    from vidgen.interop.diffusers_video import load_stage

    return load_stage(model / "unet")


def diffusers_frames(root: Path, lora: Path | None, scale: float = 1.0) -> np.ndarray:
    """AnimateDiffPipeline's frames with `lora` loaded through its own load_lora_weights at `scale`."""
    from diffusers import AnimateDiffPipeline

    pipe = AnimateDiffPipeline.from_pretrained(root / "pipeline")
    if lora is not None:
        pipe.load_lora_weights(lora, adapter_name="motion")
        pipe.set_adapters(["motion"], [scale])
    return factory.pipeline_frames(pipe)


def vidgen_frames(model: Path, out: Path, *extra: str) -> np.ndarray:
    assert main([*factory.generate_args(model, out), *extra]) == 0
    return factory.png_frames(out)


def test_a_diffusers_motion_lora_gives_animatediff_pipelines_frames_and_scale_0_the_base(animatediff, base_frames,
                                                                                          tmp_path):
    lora = animatediff / "lora" / "pytorch_lora_weights.safetensors"
    with safe_open(lora, "pt") as f:
        assert any(k.startswith("unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.lora_A")
                   for k in f.keys())
    base = base_frames
    adapted = vidgen_frames(animatediff / "model", tmp_path / "lora", "--lora", f"{lora}:0.7")
    expected = diffusers_frames(animatediff, lora, 0.7)
    assert adapted.std() > 5 and factory.max_difference(adapted, expected) <= 1
    assert factory.max_difference(adapted, base) > 1  # the comparison can fail: the LoRA counts
    off = vidgen_frames(animatediff / "model", tmp_path / "off", "--lora", f"{lora}:0")
    assert np.array_equal(off, base)


def test_older_and_original_motion_lora_names_load_as_the_same_adapter(animatediff, tmp_path):
    """diffusers' attention-processor names (`attn1.processor.to_q_lora.down.weight`) and the original
    AnimateDiff code's (`temporal_transformer.` ... `attention_blocks.0.`) map onto the same layers."""
    from vidgen.interop import lora

    path = animatediff / "lora" / "pytorch_lora_weights.safetensors"
    renamed = {}
    for key, value in load_file(path).items():
        module, half = key.rsplit(".lora_", 1)
        proj = module.rsplit(".", 2 if module.endswith("to_out.0") else 1)
        name = f"{proj[0]}.processor.{proj[1]}_lora.{'down' if half.startswith('A') else 'up'}.weight"
        if ".motion_modules." in name:
            name = name.replace(".transformer_blocks.", ".temporal_transformer.transformer_blocks.")
            name = name.replace(".attn1.", ".attention_blocks.0.").replace(".attn2.", ".attention_blocks.1.")
        renamed[name.removeprefix("unet.")] = value
    assert any(".temporal_transformer." in k and "to_out_lora.up" in k for k in renamed)
    save_file(renamed, tmp_path / "original.safetensors", metadata={"lora_alpha": "2"})
    x, text = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.randn(1, 77, 32)
    outputs = []
    for file in (path, tmp_path / "original.safetensors"):
        unet = base_stage(animatediff / "model")
        lora.load(unet, file)
        with torch.no_grad():
            outputs.append(unet(x, 500, text))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)


def test_lora_rank_trains_the_motion_modules_adapter_that_vidgen_and_diffusers_load(animatediff, base_frames,
                                                                                    tmp_path):
    root = tmp_path
    manifest = factory.shapes_corpus(root)
    assert main(["train", "--no-progress", str(REPO / "configs" / "tiny" / "video.yaml"), f"data.manifest={manifest}",
                 f"train.output_dir={root / 'run'}", f"model.pretrained={animatediff / 'model'}", "model.lora_rank=4",
                 "train.max_steps=3", "train.lr=0.05", "train.ema_decay=0", "train.checkpoint_every=3",
                 "train.batch_size=1", "data.num_frames=4", "data.size=16"]) == 0
    trained = root / "run" / "model" / "lora.safetensors"
    with safe_open(trained, "pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("unet.") and ".motion_modules." in k and ".lora_" in k for k in keys)
    assert json.loads(metadata["lora_adapter_metadata"])["unet.r"] == 4
    adapted = vidgen_frames(animatediff / "model", root / "lora", "--lora", str(trained))
    assert factory.max_difference(adapted, base_frames) > 0
    assert factory.max_difference(adapted, diffusers_frames(animatediff, trained)) <= 1


def test_a_lora_for_another_layout_is_refused_naming_a_key(animatediff, tmp_path, capsys):
    path = tmp_path / "other.safetensors"
    key = "unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_qq"
    save_file({f"{key}.lora_A.weight": torch.zeros(4, 16), f"{key}.lora_B.weight": torch.zeros(16, 4)}, path)
    assert main([*factory.generate_args(animatediff / "model", tmp_path / "c"), "--lora", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "to_qq.lora_A.weight" in err and "matches no module" in err
    assert not (tmp_path / "c").exists()


def test_a_temporal_adapter_on_zeroscopes_unet3d_saves_in_diffusers_naming_and_loads_back(tmp_path):
    """UNet3DConditionModel (ModelScope, zeroscope): the adapter sits on its temporal attentions
    (temp_attentions, transformer_in) alone, and the saved file gives the same U-Net output back."""
    from vidgen.interop import lora
    from vidgen.interop.diffusers_video import DiffusersVideoUNet

    trained = lora.add_temporal_adapter(DiffusersVideoUNet(factory.make_unet3d()), rank=2)
    trainable = [name for name, p in trained.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and (".temp_attentions." in n or "transformer_in." in n) for n in trainable)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_B" in name:  # as if trained: B leaves its zero start
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    lora.save(trained, tmp_path / "lora.safetensors")
    assert all(k.startswith("unet.") for k in load_file(tmp_path / "lora.safetensors"))
    fresh = DiffusersVideoUNet(factory.make_unet3d())
    x, text = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.randn(1, 77, 32)
    with torch.no_grad():
        base = fresh(x, 500, text)
        lora.load(fresh, tmp_path / "lora.safetensors")
        expected, loaded = trained(x, 500, text), fresh(x, 500, text)
    assert torch.allclose(loaded, expected, atol=1e-5) and not torch.allclose(loaded, base, atol=1e-3)
