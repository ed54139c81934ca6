"""diffusers text-to-video folders (TextToVideoSDPipeline: ModelScope / zeroscope layout) in vidgen:
they run as they are and give diffusers' own frames for a seed, train (temporal layers), carry
vidgen's interpolation and super-resolution stages, export back, and load strictly.

The folder is a tiny random TextToVideoSDPipeline built and saved by diffusers (tests/interop_factory.py),
every weight perturbed so that diffusers' zero-initialised temporal projections count.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import interop_factory as factory
from vidgen.cli import main
from vidgen.interop.diffusers_video import TEMPORAL_MODULES
from vidgen.model_index import read_model_index, write_model_index

UNET3D_TEMPORAL = TEMPORAL_MODULES["UNet3DConditionModel"]
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def zeroscope(tmp_path_factory):
    """(folder, diffusers' uint8 frames for factory.SETTINGS) of a tiny TextToVideoSDPipeline."""
    folder = tmp_path_factory.mktemp("interop") / "tiny-t2v"
    pipe = factory.make_text_to_video_pipeline()
    pipe.save_pretrained(folder)
    return folder, factory.pipeline_frames(pipe)


def generate(model: Path, out: Path, settings: dict = factory.SETTINGS) -> np.ndarray:
    assert main(factory.generate_args(model, out, settings)) == 0
    return factory.png_frames(out)


def test_folder_runs_as_it_is_and_matches_diffusers_frames(zeroscope, tmp_path):
    folder, expected = zeroscope
    frames = generate(folder, tmp_path / "clip")
    assert frames.shape == (3, 16, 16, 3) and frames.std() > 5  # a picture, not a flat field
    assert factory.max_difference(frames, expected) <= 1  # within 1/255 per pixel
    other_seed = generate(folder, tmp_path / "other", {**factory.SETTINGS, "seed": 4})
    assert factory.max_difference(other_seed, expected) > 10  # the comparison can fail


def test_trains_temporal_layers_and_carries_interp_and_sr_stages(zeroscope, tmp_path):
    folder, _ = zeroscope
    manifest = factory.shapes_corpus(tmp_path)
    video = factory.train("video", manifest, folder, tmp_path / "video")
    losses = factory.logged_losses(tmp_path / "video")
    assert len(losses) == 2 and all(np.isfinite(losses))
    temporal, spatial = factory.split_changes(load_file(folder / "unet" / UNET_WEIGHTS),
                                              load_file(video / "unet" / UNET_WEIGHTS), UNET3D_TEMPORAL)
    assert temporal and not spatial  # the spatial layers stay frozen
    assert any(k.startswith("transformer_in.") for k in temporal) and any(".temp_convs." in k for k in temporal)

    interp = factory.train("interp", manifest, video, tmp_path / "interp", frames=6, steps=1)
    cascade = factory.train("sr", manifest, interp, tmp_path / "sr", steps=1)
    assert all(np.isfinite(factory.logged_losses(tmp_path / name)).all() for name in ("interp", "sr"))
    assert all((cascade / stage / "extension.safetensors").is_file() for stage in ("interp", "sr"))
    index = read_model_index(cascade)
    index.interp.num_inference_steps = index.sr.num_inference_steps = 1  # 20 each by default: a test needs one
    write_model_index(cascade, index)
    frames = generate(cascade, tmp_path / "cascade", {**factory.SETTINGS, "frames": 2, "steps": 1})
    assert frames.shape == (6, 32, 32, 3)  # 2 keyframes x 3 (interp), 16 px x 2 (sr)

    # Export keeps the trained base and leaves out what diffusers has no place for.
    from diffusers import TextToVideoSDPipeline

    assert main(["export", str(cascade), str(tmp_path / "exported")]) == 0
    exported = factory.pipeline_frames(TextToVideoSDPipeline.from_pretrained(tmp_path / "exported"))
    assert factory.max_difference(generate(video, tmp_path / "trained"), exported) <= 1


def test_export_round_trip(zeroscope, tmp_path, capsys):
    from diffusers import TextToVideoSDPipeline

    folder, expected = zeroscope
    assert main(["export", str(folder), str(tmp_path / "out"), "--format", "diffusers"]) == 0
    assert factory.max_difference(factory.pipeline_frames(TextToVideoSDPipeline.from_pretrained(tmp_path / "out")),
                                  expected) <= 1
    assert main(["export", str(folder), str(tmp_path / "out")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", str(folder), str(tmp_path / "out"), "--overwrite"]) == 0


def test_vidgen_native_model_refuses_export_with_the_reason(sd_image_model, tmp_path, capsys):
    assert main(["inflate", "--image-model", str(sd_image_model), "--out", str(tmp_path / "native")]) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "native"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no diffusers pipeline holds" in err
    assert not (tmp_path / "out").exists()


def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    return copy


@pytest.mark.parametrize("change", ["missing", "misshapen", "extra"])
def test_unet_weights_that_do_not_fit_are_refused_naming_key_and_file(zeroscope, tmp_path, capsys, change):
    folder = _copy(zeroscope[0], tmp_path)
    path = folder / "unet" / UNET_WEIGHTS
    tensors = load_file(path)
    key = "down_blocks.0.temp_convs.0.conv4.3.weight"
    if change == "missing":
        del tensors[key]
    elif change == "misshapen":
        tensors[key] = torch.zeros(1, 2, 3)
    else:
        key = "down_blocks.0.not_a_layer.weight"
        tensors[key] = torch.zeros(1)
    save_file(tensors, path)
    assert main(factory.generate_args(folder, tmp_path / "clip")) == 2
    err = capsys.readouterr().err
    assert key in err and "unet" in err and "Traceback" not in err
    assert not (tmp_path / "clip").exists()


def test_text_encoder_missing_key_is_refused(zeroscope, tmp_path, capsys):
    folder = _copy(zeroscope[0], tmp_path)
    path = folder / "text_encoder" / "model.safetensors"
    tensors = load_file(path)
    key = next(k for k in tensors if k.endswith("final_layer_norm.weight"))
    del tensors[key]
    save_file(tensors, path)
    assert main(factory.generate_args(folder, tmp_path / "clip")) == 2
    err = capsys.readouterr().err
    assert "final_layer_norm.weight" in err and "text_encoder" in err


@pytest.mark.parametrize("part", ["unet", "vae", "text_encoder"])
def test_pickled_weights_are_refused_naming_the_file(zeroscope, tmp_path, capsys, part):
    folder = _copy(zeroscope[0], tmp_path)
    for weights in (folder / part).glob("*.safetensors"):
        weights.unlink()
    pickle = folder / part / ("pytorch_model.bin" if part == "text_encoder" else "diffusion_pytorch_model.bin")
    pickle.write_bytes(b"not unpickled")  # never read: refused by name
    assert main(factory.generate_args(folder, tmp_path / "clip")) == 2
    err = capsys.readouterr().err
    assert str(pickle) in err and "pickle" in err


@pytest.mark.parametrize("layer", ["text_embedding", "image_conditioning"])
def test_vidgen_only_layers_are_refused_on_a_diffusers_base(zeroscope, tmp_path, capsys, layer):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"path": "clip.mp4"}\n', encoding="utf-8")  # never read: refused before the data
    preset = Path(__file__).resolve().parents[1] / "configs" / "tiny" / "video.yaml"
    assert main(["train", "--no-progress", str(preset), f"data.manifest={manifest}", f"train.output_dir={tmp_path}/run",
                 f"model.pretrained={zeroscope[0]}", f"model.{layer}=true"]) == 2
    assert f"no place for model.{layer}" in capsys.readouterr().err
