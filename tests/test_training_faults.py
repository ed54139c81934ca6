"""Training against faults: a corpus of broken files stops instead of spinning, a checkpoint that
would run code is refused without running it, a resume applies or refuses changed settings, the
advice after a NaN works, and a real corpus in many codecs trains with its broken files skipped.

The model is the tiny Stable-Diffusion-layout folder of conftest, inflated once; the corpora are
made here with PyAV and the ffmpeg binary of imageio-ffmpeg.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import time
from pathlib import Path

import pytest
import torch

from vidgen.cli import main
from vidgen.training import stages

from video_factory import make_mp4, make_with_ffmpeg

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny" / "video.yaml"


@pytest.fixture(scope="module")
def inflated(sd_image_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "inflated"
    assert main(["inflate", "--image-model", str(sd_image_model), "--out", str(out), "--max-frames", "16"]) == 0
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Four readable 32x32 clips with captions, and their manifest."""
    folder = tmp_path_factory.mktemp("corpus")
    for i in range(4):
        make_mp4(folder / f"c{i}.mp4", n=12, fps=12, height=32, width=32)
        (folder / f"c{i}.txt").write_text("a red circle moving left\n")
    assert main(["data", "index", str(folder), "-o", str(folder / "manifest.jsonl"), "--no-progress"]) == 0
    return folder / "manifest.jsonl"


def train(manifest: Path, run: Path, inflated: Path, *overrides: str) -> int:
    return main(["train", "--no-progress", str(TINY), f"data.manifest={manifest}", f"train.output_dir={run}",
                 f"model.pretrained={inflated}", *overrides])


def logged(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="", encoding="utf-8") as rows:
        return list(csv.DictReader(rows))


# --- a corpus with no readable clip ----------------------------------------------------------------

def test_an_all_broken_manifest_stops_after_one_pass_naming_the_manifest(inflated, tmp_path, capsys, caplog):
    for i in range(5):
        (tmp_path / f"bad{i}.mp4").write_bytes(b"not a video " * 40)
    manifest = tmp_path / "broken.jsonl"
    manifest.write_text("".join(json.dumps({"path": f"bad{i}.mp4"}) + "\n" for i in range(5)))
    started = time.monotonic()
    assert train(manifest, tmp_path / "run", inflated, "train.max_steps=1000000") == 2
    assert time.monotonic() - started < 60
    err = capsys.readouterr().err
    assert f"no clip of {manifest} could be read in a whole pass over it" in err
    assert "files failed" in err and "Invalid data" in err and "ERROR opening" not in err  # decord kept quiet
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert len(skips) == len(set(skips)) <= 5  # each bad file once


# --- checkpoints that would run code ------------------------------------------------------------------

class Payload:
    """Unpickled in full, this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def finished_run(corpus, inflated, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    assert train(corpus, run, inflated) == 0  # 4 steps, checkpoints at 2 and 4, EMA on
    return run


def test_training_state_is_safetensors_and_json_with_no_pickled_ema(finished_run):
    folder = finished_run / "checkpoints" / "step-00000004"
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "ema.safetensors", "ema.json", "trainer.json"} <= names
    assert not any(name.startswith("custom_checkpoint") for name in names)
    assert json.loads((folder / "trainer.json").read_text())["finite"] is True
    assert json.loads((folder / "ema.json").read_text())["optimization_step"] == 4


@pytest.mark.parametrize("planted", ["custom_checkpoint_0.pkl", "optimizer.bin", "legacy-ema", "extra.pt"])
def test_a_checkpoint_holding_a_code_pickle_is_refused_and_the_payload_never_runs(finished_run, corpus, inflated,
                                                                                tmp_path, capsys, planted):
    evil = tmp_path / "evil"
    shutil.copytree(finished_run / "checkpoints" / "step-00000004", evil)
    marker = tmp_path / "code-ran"
    if planted == "optimizer.bin":
        torch.save({"state": Payload(marker)}, evil / planted)
    else:
        if planted == "legacy-ema":  # an older vidgen's layout, with the EMA pickled where accelerate put it
            (evil / "ema.safetensors").unlink()
            planted = "custom_checkpoint_0.pkl"
        with open(evil / planted, "wb") as f:
            pickle.dump(Payload(marker), f)
    run = tmp_path / "run"
    assert train(corpus, run, inflated, "train.max_steps=6", f"train.resume={evil}") == 2
    err = capsys.readouterr().err
    assert "vidgen never unpickles anything but tensors and numbers" in err and str(evil) in err
    assert not marker.exists()


def test_an_older_checkpoint_with_a_plain_pickled_ema_still_resumes(finished_run, corpus, inflated, tmp_path, capsys):
    from safetensors.torch import load_file

    old = tmp_path / "old"
    shutil.copytree(finished_run / "checkpoints" / "step-00000004", old)
    shadow = load_file(old / "ema.safetensors")
    state = {**json.loads((old / "ema.json").read_text()), "shadow_params": [shadow[k] for k in sorted(shadow)]}
    torch.save(state, old / "custom_checkpoint_0.pkl")  # what accelerate wrote for vidgen 0.1
    (old / "ema.safetensors").unlink(), (old / "ema.json").unlink()
    assert train(corpus, tmp_path / "run", inflated, "train.max_steps=5", f"train.resume={old}") == 0
    assert f"resumed from {old} at step 4" in capsys.readouterr().out


# --- resuming under changed settings -------------------------------------------------------------------

def test_a_resume_with_another_lr_trains_at_it_and_config_yaml_records_it(corpus, inflated, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(corpus, run, inflated, "train.max_steps=2") == 0
    assert train(corpus, run, inflated, "train.max_steps=4", "train.lr=2e-5") == 0
    out = capsys.readouterr().out
    assert "resumed with train.lr: 0.001 -> 2e-05" in out
    rates = [float(row["lr"]) for row in logged(run)]
    assert rates[:2] == [1e-3, 1e-3] and rates[2:] == [2e-5, 2e-5]
    assert "lr: 2.0e-05" in (run / "config.yaml").read_text()


@pytest.mark.parametrize("override, key", [("train.batch_size=1", "train.batch_size"),
                                           ("data.num_frames=4", "data.num_frames"),
                                           ("train.seed=5", "train.seed"),
                                           ("train.ema_decay=0", "train.ema_decay")])
def test_a_resume_that_would_change_what_the_state_means_is_refused_naming_the_key(finished_run, corpus, inflated,
                                                                                 tmp_path, capsys, override, key):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    config_before = (run / "config.yaml").read_text()
    assert train(corpus, run, inflated, "train.max_steps=6", override) == 2
    err = capsys.readouterr().err
    assert key in err and "start afresh" in err
    assert (run / "config.yaml").read_text() == config_before  # nothing written


# --- a NaN, and following the advice it gives ----------------------------------------------------------

def test_after_a_nan_the_named_checkpoint_is_finite_and_its_advice_works(corpus, inflated, tmp_path, monkeypatch,
                                                                         capsys):
    loss, calls = stages.VideoStage.loss, []

    def nan_from_the_third_step(self, model, batch, generator):
        calls.append(1)
        value = loss(self, model, batch, generator)
        return value * float("nan") if len(calls) >= 3 else value

    monkeypatch.setattr(stages.VideoStage, "loss", nan_from_the_third_step)
    run = tmp_path / "nan"
    assert train(corpus, run, inflated, "train.max_steps=4") == 2
    err = capsys.readouterr().err
    good = run / "checkpoints" / "step-00000002"
    assert "the loss became nan at step 3" in err and f"the last checkpoint with finite weights is {good}" in err
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(good / "model.safetensors").values())
    advice = err.split("Resume from it with a lower rate: ", 1)[1].split(" (or raise", 1)[0]
    argv = advice.split()
    assert argv[:2] == ["vidgen", "train"]
    monkeypatch.setattr(stages.VideoStage, "loss", loss)  # the cause is gone; follow the advice word for word
    assert main([argv[1], "--no-progress", *argv[2:]]) == 0
    rows = logged(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and float(rows[-1]["lr"]) == pytest.approx(1e-4)


def test_weights_that_turn_non_finite_are_never_saved_as_a_checkpoint(corpus, inflated, tmp_path, monkeypatch,
                                                                      capsys):
    loss, calls = stages.VideoStage.loss, []

    def corrupt_a_weight_at_the_second_step(self, model, batch, generator):
        calls.append(1)
        value = loss(self, model, batch, generator)  # finite
        if len(calls) == 2:  # a NaN gradient: the update of step 2 leaves NaN weights behind a finite loss
            weight = next(p for p in model.parameters() if p.requires_grad)
            weight.register_hook(lambda grad: torch.full_like(grad, float("nan")) if len(calls) == 2 else grad)
        return value

    monkeypatch.setattr(stages.VideoStage, "loss", corrupt_a_weight_at_the_second_step)
    run = tmp_path / "inf"
    assert train(corpus, run, inflated, "train.max_steps=4") == 2
    err = capsys.readouterr().err
    assert "the weights became non-finite at step 2, before any checkpoint was written" in err
    assert "train.resume=never train.lr=0.0001" in err
    assert not list((run / "checkpoints").glob("step-*"))


# --- a real corpus, many codecs -----------------------------------------------------------------------

def test_a_corpus_in_many_codecs_indexes_and_trains_skipping_the_broken_files(inflated, tmp_path, capsys):
    folder = tmp_path / "real"
    (folder / "sub").mkdir(parents=True)
    make_mp4(folder / "h264.mp4", n=24, fps=24, height=40, width=56)
    make_with_ffmpeg(folder / "vp9.webm", "libvpx-vp9", n=15, fps=15, height=32, width=48)
    make_with_ffmpeg(folder / "sub" / "theora.ogv", "libtheora", n=10, fps=5, height=36, width=36)
    make_with_ffmpeg(folder / "cinepak.avi", "cinepak", n=9, fps=9, height=32, width=48)
    make_with_ffmpeg(folder / "sub" / "mjpeg.avi", "mjpeg", n=30, fps=30, height=64, width=32)
    (folder / "sub" / "mjpeg.txt").write_text("a blue square moving up\n")
    (folder / "empty.mp4").write_bytes(b"")
    good = (folder / "h264.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(good[: len(good) // 3])
    manifest = tmp_path / "manifest.jsonl"
    assert main(["data", "index", str(folder), "-o", str(manifest), "--no-progress"]) == 0
    indexed = [json.loads(line)["path"] for line in manifest.read_text().splitlines()]
    assert sorted(Path(p).name for p in indexed) == ["cinepak.avi", "h264.mp4", "mjpeg.avi", "theora.ogv", "vp9.webm"]
    # Train on the indexed files and on the two broken ones listed by hand: they are skipped and counted.
    with open(manifest, "a", encoding="utf-8") as f:
        for name in ("empty.mp4", "truncated.mp4"):
            f.write(json.dumps({"path": str(folder / name)}) + "\n")
    run = tmp_path / "run"
    assert train(manifest, run, inflated, "train.max_steps=4", "train.batch_size=2", "data.fps_range=[]") == 0
    assert int(logged(run)[-1]["skipped_clips"]) > 0
    assert (run / "model" / "vidgen.json").is_file()
