"""The embedded default model: it ships inside the package, loads offline with no --model, and
makes a clip through its whole cascade."""

from __future__ import annotations

import json

from safetensors import safe_open

from vidgen.cli import main
from vidgen.data.reader import probe_video, read_frames
from vidgen.packaged import DEFAULT_MODEL, default_model
from vidgen.pipeline import VideoPipeline


def test_the_default_model_ships_in_half_precision_under_60_mb():
    folder = default_model()
    assert folder == DEFAULT_MODEL
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 60 * 2**20
    weights = [f for f in files if f.suffix == ".safetensors"]
    assert weights
    for path in weights:
        with safe_open(path, "pt") as f:
            assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}, path
    index = json.loads((folder / "vidgen.json").read_text())
    assert list(index["stages"]) == ["base", "interp", "sr"] and index["text_encoder"] == "minilm"
    # One candidate, nothing played backwards: the base stage's noise moves as the prompt's motion words
    # say, and its first 7 clean clips are held to them; the critic ships as an option, off by default.
    d = index["defaults"]
    assert d["motion_noise"] is True and d["arrow_check"] is False and d["candidates"] == 1
    assert d["motion_projection"] == 7 and d["continue_strength"] == 0.6
    assert d["choose_at_step"] == 7  # `--candidates 4` works as it is: the critic chooses after the held steps
    assert d["guidance_from_step"] == 4  # the first 4 steps unguided: one network call each
    assert index["image_base_motion_noise"] is True  # its image base was fine-tuned on moving noise too
    assert sorted(index["motion_words"]) == ["down", "left", "right", "up"] and index["frame_noise_correlation"] > 0
    assert index["motion_words"]["left"][1] < 0 < index["motion_words"]["right"][1]
    assert index["motion_words"]["up"][0] < 0 < index["motion_words"]["down"][0]
    assert index["critic"] == "critic" and (folder / "critic" / "critic.safetensors").is_file()


def test_the_critic_stays_an_option_of_the_default_model():
    pipe = VideoPipeline.from_pretrained(default_model())
    s = pipe.settings(candidates=4)  # checked as `vidgen generate --candidates 4` is
    assert (s.candidates, s.choose_at_step, s.motion_projection) == (4, 7, 7)


def test_generate_with_no_model_runs_the_shipped_cascade(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert main(["generate", "a red circle moving left", "-o", str(out), "--steps", "2", "--frames", "4",
                 "--seed", "0", "--no-progress"]) == 0
    pipe = VideoPipeline.from_pretrained(default_model())
    frames, height, width, fps = pipe.output_size(pipe.settings(num_frames=4))
    info = probe_video(out)
    assert (info.num_frames, info.height, info.width, info.fps) == (frames, height, width, fps)
    assert (frames, height, width) == (12, 128, 128)  # 3x the keyframes, twice the base size
    clip = read_frames(out)
    assert clip.std() > 5  # a picture, not a flat frame
    meta = json.loads(out.with_name("clip.mp4.json").read_text())
    assert meta["model"] == str(DEFAULT_MODEL) and meta["arrow_check"] is pipe.model.index.defaults.arrow_check is False
    assert meta["motion_noise"] is True and meta["guidance_from_step"] == 4 and meta["motion_projection"] == 7
    assert meta["motion_guidance"] == pipe.model.index.defaults.motion_guidance and isinstance(meta["reversed"], bool)
    assert "wrote" in capsys.readouterr().out
