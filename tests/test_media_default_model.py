"""Every media command on the embedded default model, with 2 steps and a few frames: the shapes of
what they write and the frames they keep (quality is judged by tools/eval_media.py)."""

import json

import numpy as np
from PIL import Image

from vidgen.cli import main
from vidgen.data.shapes import clip_rng, render_clip, sample_scene
from vidgen.destinations import sidecar_path
from vidgen.media.inputs import read_clip
from vidgen.video_io import save_video

FAST = ["--steps", "2", "--seed", "0", "--no-progress"]
SMALL = ["--frames", "2", "--candidates", "1", *FAST]


def test_each_media_command_runs_on_the_default_model(tmp_path):
    scene = sample_scene(clip_rng(0, 0), slots={"color": "red", "direction": "left"})
    frames = render_clip(scene, 64, 4)  # (4 64 64 3)
    save_video(frames, tmp_path / "in", fps=8, metadata={"prompt": "a red circle moving left"})  # PNG: exact
    Image.fromarray(frames[0]).save(tmp_path / "first.png")
    prompt = "a red circle moving left"

    def written(name):
        return json.loads(sidecar_path(tmp_path / name).read_text())

    assert main(["generate", prompt, "--image", str(tmp_path / "first.png"), "-o", str(tmp_path / "i2v"), *SMALL]) == 0
    assert (written("i2v")["frames"], written("i2v")["width"]) == (6, 128)
    assert written("i2v")["image_base_stage"] is True  # the shipped image-to-video base stage ran
    assert main(["generate", "a blue circle moving left", "--video", str(tmp_path / "in"), "--strength", "0.6",
                 "-o", str(tmp_path / "v2v.mp4"), *SMALL]) == 0
    assert written("v2v.mp4")["frames"] == 6 and written("v2v.mp4")["strength"] == 0.6
    assert main(["generate", prompt, "--seconds", "0.5", "-o", str(tmp_path / "long.mp4"), *SMALL]) == 0
    assert written("long.mp4")["frames"] == 12
    assert main(["extend", str(tmp_path / "in"), "--seconds", "0.25", "-o", str(tmp_path / "ext"), *FAST]) == 0
    assert np.array_equal(read_clip(tmp_path / "ext").frames[:4], frames) and written("ext")["frames"] == 6
    assert main(["interpolate", str(tmp_path / "in"), "--factor", "3", "-o", str(tmp_path / "x3"), *FAST]) == 0
    assert np.array_equal(read_clip(tmp_path / "x3").frames[::3], frames) and written("x3")["frames"] == 10
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "up"), *FAST]) == 0
    assert read_clip(tmp_path / "up").frames.shape == (4, 128, 128, 3)
