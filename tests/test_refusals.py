"""What every command does with bad input: exit code 2, one line on stderr naming the bad value and
the fix, no traceback, and nothing written or deleted where the command would have written.

One table per command. Each row runs the command in-process on a scratch folder that holds a
user's files, then checks the code, the message and that the folder is exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from vidgen.cli import main


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder`: files by content hash, folders and others by kind."""
    seen = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            seen[os.path.relpath(os.path.join(root, name), folder)] = "dir"
        for name in files:
            path = Path(root) / name
            if path.is_fifo():
                seen[str(path.relative_to(folder))] = "fifo"
            elif path.is_symlink() and not path.exists():
                seen[str(path.relative_to(folder))] = "dangling"
            else:
                seen[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A scratch folder that is also the working directory, holding a user's files."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's notes\n")
    (tmp_path / "mine" / "00000.png").write_bytes(b"the user's picture")
    (tmp_path / "clip.mp4").write_bytes(b"the user's own clip, not vidgen's")
    (tmp_path / "report.json").write_text('{"the user": "data"}\n')
    (tmp_path / "a_file").write_text("in the way\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 prompt\n".encode("latin-1"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "manifest.jsonl").write_text('{"path": "nowhere.mp4"}\n')
    return tmp_path


def refused(argv: list, workdir: Path, capsys, said: str) -> str:
    before = snapshot(workdir)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err  # one line, no traceback
    assert said in lines[0], lines[0]
    assert snapshot(workdir) == before  # nothing written, nothing deleted
    return lines[0]


# --- generate ------------------------------------------------------------------------------------

GENERATE = [
    (["--steps", "0"], "--steps: must be at least 1, got 0"),
    (["--steps", "-1"], "--steps: must be at least 1, got -1"),
    (["--steps", "many"], "'many' is not a whole number"),
    (["--guidance", "nan"], "--guidance: must be a finite number"),
    (["--guidance", "inf"], "--guidance: must be a finite number"),
    (["--guidance", "-2"], "--guidance: must be at least 0"),
    (["--seed", str(2**64)], "--seed: must be at most 18446744073709551615"),
    (["--seed", "-1"], "--seed: must be at least 0"),
    (["--eta", "2"], "--eta: must be at most 1"),
    (["--fps", "0"], "--fps: must be above 0"),
    (["--frames", "0"], "--frames: must be at least 1"),
    (["--frames", "500"], "500 frames asked for, but this model takes 1 to"),
    (["--height", "31"], "height 31 is not a positive multiple of"),
    (["--height", "4096000", "--width", "4096000"], "GiB and this machine has"),
    (["--stages", "sr"], "must start with 'base'"),
    (["--scheduler", "nonsense"], "unknown scheduler 'nonsense'"),
    (["--motion-guidance", "nan"], "--motion-guidance: must be a finite number"),
    (["--choose-by", "luck"], "invalid choice: 'luck'"),
    (["-o", "mine"], "holding files vidgen did not write"),
    (["-o", "clip.mp4"], "was not written by vidgen"),
    (["-o", "."], "-o .: name the clip to write"),
    (["-o", "a_file/clip.mp4"], "output folder a_file is a file, not a folder"),
    (["-o", "/proc/vidgen-test/clip.mp4"], "cannot write into /proc"),
    (["-o", "clip.avi"], "cannot tell the format of clip.avi"),
    (["-o", "mine", "--format", "mp4"], "mine is a folder: name a .mp4 file"),
    (["--model", "nowhere"], "--model nowhere is not a folder"),
    (["--model", "mine"], "is not a vidgen model folder"),
    (["--prompts", "latin1.txt"], "--prompts latin1.txt is not UTF-8 text"),
    (["--prompts", "missing.txt"], "cannot read --prompts missing.txt"),
    (["--prompts", "mine"], "--prompts mine is a folder"),
    (["--set", "candidatez=2"], "--set: bad config key 'candidatez'"),
    (["--set", "candidates=two"], "could not be converted to Integer"),
    (["--set", "candidates"], "is not of the form key=value"),
    (["--set", "num_inference_steps=0"], "steps must be at least 1"),
    (["--prompt-and-prompts"], "give a PROMPT or --prompts FILE"),
    (["--empty-prompt"], "the prompt is empty"),
]


@pytest.mark.parametrize("args, said", GENERATE, ids=[" ".join(a) for a, _ in GENERATE])
def test_generate_refuses(args, said, workdir, capsys):
    prompt = ["a red circle moving left"]
    if args == ["--prompt-and-prompts"]:
        prompt, args = ["a red circle", "--prompts", "latin1.txt"], []
    elif args == ["--empty-prompt"]:
        prompt, args = ["  "], []
    elif "--prompts" in args:
        prompt = []
    output = [] if "-o" in args else ["-o", "new.mp4"]
    refused(["generate", *prompt, *output, *args], workdir, capsys, said)


def test_generate_refuses_a_model_index_that_is_not_a_mapping(workdir, capsys):
    (workdir / "model").mkdir()
    (workdir / "model" / "vidgen.json").write_text("[1, 2]\n")
    refused(["generate", "x", "-o", "new.mp4", "--model", "model"], workdir, capsys, "must hold a mapping")


# --- train ---------------------------------------------------------------------------------------

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny" / "video.yaml"

TRAIN = [
    (["train.lr=-1"], "train.lr must be a finite number in (0, 1000], got -1.0"),
    (["train.lr=1e38"], "train.lr must be a finite number in (0, 1000]"),
    (["train.lr=nan"], "train.lr must be a finite number in (0, 1000]"),
    (["train.ema_decay=1.0"], "train.ema_decay must be a finite number in [0, 1)"),
    (["train.batch_size=0"], "train.batch_size must be at least 1"),
    (["train.warmup_steps=-5"], "train.warmup_steps must be at least 0"),
    (["data.caption_dropout=1.5"], "data.caption_dropout must be a finite number in [0, 1]"),
    (["data.short_clip=wrap"], "data.short_clip must be 'loop' or 'skip'"),
    (["data.fps_range=[24,8]"], "data.fps_range must be [low, high]"),
    (["train.mixed_precision=fp8"], "train.mixed_precision must be"),
    (["train.max_stepz=3"], "train.max_stepz"),
    (["stage=audio"], "stage must be one of"),
    (["train.output_dir=a_file"], "train.output_dir a_file is a file"),
    (["train.output_dir=mine"], "holds files that are not a vidgen run's"),
    (["data.manifest=missing.jsonl"], "data.manifest=missing.jsonl does not exist"),
    (["train.resume=nowhere"], "train.resume=nowhere: no such checkpoint folder"),
]


@pytest.mark.parametrize("overrides, said", TRAIN, ids=[" ".join(o) for o, _ in TRAIN])
def test_train_refuses_before_creating_anything(overrides, said, workdir, capsys):
    base = ["data.manifest=manifest.jsonl", "train.output_dir=runs/new", "model.pretrained=mine"]
    keys = {o.split("=")[0] for o in overrides}
    refused(["train", TINY, *[b for b in base if b.split("=")[0] not in keys], *overrides], workdir, capsys, said)
    assert not (workdir / "runs").exists()


def test_train_refuses_a_config_file_that_is_not_a_mapping(workdir, capsys):
    refused(["train", "list.yaml"], workdir, capsys, "list.yaml must hold a mapping")


# --- inflate -------------------------------------------------------------------------------------

INFLATE = [
    (["--image-model", "nowhere", "--out", "new"], "--image-model nowhere is not a folder"),
    (["--image-model", "mine", "--out", "new"], "is not a diffusers text-to-image folder"),
    (["--image-model", "mine", "--out", "mine"], "mine exists and is not a vidgen model folder"),
    (["--image-model", "mine", "--out", "mine", "--overwrite"], "mine exists and is not a vidgen model folder"),
    (["--image-model", "mine", "--out", "new", "--max-frames", "0"], "--max-frames: must be at least 1"),
    (["--image-model", "mine", "--out", "new", "--frames", "32", "--max-frames", "16"], "--frames 32 is more than"),
    (["--image-model", "mine", "--out", "new", "--fps", "-3"], "--fps: must be above 0"),
]


@pytest.mark.parametrize("args, said", INFLATE, ids=[" ".join(a) for a, _ in INFLATE])
def test_inflate_refuses(args, said, workdir, capsys):
    refused(["inflate", *args], workdir, capsys, said)


# --- data index and data shapes --------------------------------------------------------------------

DATA = [
    (["index", "nowhere", "-o", "new.jsonl"], "nowhere is not a folder"),
    (["index", "mine", "-o", "report.json"], "report.json exists and is not a manifest"),
    (["index", "mine", "-o", "mine"], "-o mine is a folder"),
    (["shapes", "--out", "mine"], "--out mine holds files that are not a shapes corpus"),
    (["shapes", "--out", "a_file"], "--out a_file is a file"),
    (["shapes", "--out", "new", "--videos", "0"], "--videos: must be at least 1"),
    (["shapes", "--out", "new", "--size", "-8"], "--size: must be at least 1"),
    (["shapes", "--out", "new", "colours=3"], "bad config key 'colours'"),
    (["shapes", "--out", "new", "fps=0"], "fps must be positive"),
]


@pytest.mark.parametrize("args, said", DATA, ids=[" ".join(a) for a, _ in DATA])
def test_data_refuses(args, said, workdir, capsys):
    refused(["data", *args], workdir, capsys, said)


# --- eval ----------------------------------------------------------------------------------------

EVAL = [
    (["--n", "0"], "--n: must be at least 1"),
    (["--batch-size", "0"], "--batch-size: must be at least 1"),
    (["--seed", "-1"], "--seed: must be at least 0"),
    (["--steps", "0"], "--steps: must be at least 1"),
    (["--guidance", "nan"], "--guidance: must be a finite number"),
    (["-o", "report.json"], "report.json exists and is not a vidgen eval report"),
    (["-o", "mine"], "-o mine is a folder"),
    (["--save-clips", "mine"], "mine holds files vidgen did not write"),
    (["--frames", "500"], "500 frames asked for"),
    (["--model", "mine"], "is not a vidgen model folder"),
]


@pytest.mark.parametrize("args, said", EVAL, ids=[" ".join(a) for a, _ in EVAL])
def test_eval_refuses(args, said, workdir, capsys):
    output = [] if "-o" in args else ["-o", "new.json"]
    refused(["eval", "shapes", *output, *args], workdir, capsys, said)


def test_a_refusal_report_is_strict_json_and_no_sidecar_holds_nan(workdir):
    """The guidance that once wrote a NaN sidecar cannot reach the writer: the writer refuses it too."""
    from vidgen.video_io import save_video
    import numpy as np

    with pytest.raises(ValueError):
        save_video(np.zeros((2, 8, 8, 3), np.uint8), workdir / "x.mp4", fps=8, metadata={"guidance": float("nan")})
    assert not (workdir / "x.mp4").exists() and not (workdir / "x.mp4.json").exists()
    json.loads((workdir / "report.json").read_text())  # untouched
