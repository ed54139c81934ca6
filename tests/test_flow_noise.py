"""Noise that moves with the clip (vidgen.diffusion.flow_noise): its statistics, the shifts it is
told and measures, the motion-word table, and the pipeline drawing it from the prompt's words."""

import numpy as np
import pytest
import torch

from vidgen.diffusion.flow_noise import continued_shifts, estimate_shifts, motion_words, moving_noise, word_shifts
from vidgen.errors import VidgenError
from vidgen.pipeline import VideoPipeline
from vidgen.sampling_call import Call


def test_moving_noise_is_a_unit_gaussian_whose_shared_part_moves_by_the_shifts():
    g = torch.Generator().manual_seed(0)
    shifts = torch.zeros(2, 6, 2)
    shifts[0, :, 1] = torch.arange(6.0)  # one latent cell a frame to the right
    shifts[1, :, 0] = -torch.arange(6.0) * 0.5  # half a cell a frame up
    noise = moving_noise((2, 4, 6, 16, 16), g, 0.98, shifts)
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05

    def corr(a, b):
        return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])

    right, up = noise[0], noise[1]
    assert corr(right[:, 5], torch.roll(right[:, 0], 5, dims=2)) > 0.95  # whole cells: the same noise, moved
    assert corr(right[:, 5], right[:, 0]) < 0.2
    assert corr(up[:, 2], torch.roll(up[:, 0], -1, dims=1)) > 0.95
    assert 0.4 < corr(up[:, 1], up[:, 0]) < 0.6  # half a cell apart: half of each cell's fine noise shared
    still = moving_noise((1, 4, 6, 16, 16), g, 0.5, torch.zeros(1, 6, 2))
    assert 0.4 < corr(still[:, :, 0], still[:, :, 5]) < 0.6  # no motion: the static prior's correlation


def blob_clip(path: list[tuple[float, float]], size: int = 16) -> torch.Tensor:
    """(1 4 f size size) latents of a bright square blob at each (row, column) centre, on a flat ground."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = [np.exp(-(((yy - r) / 2.0) ** 8 + ((xx - c) / 2.0) ** 8)) for r, c in path]
    clip = torch.tensor(np.stack(frames))[None, None].repeat(1, 4, 1, 1, 1)
    return clip * torch.tensor([1.0, -0.5, 0.3, 0.8]).view(1, 4, 1, 1, 1) + 0.2


def test_the_displacement_of_each_frame_is_measured_to_a_quarter_cell():
    path = [(8.0 - 0.3 * k, 5.0 + 0.7 * k) for k in range(8)]  # up and to the right, off the grid
    measured = estimate_shifts(blob_clip(path))[0]  # (f 2)
    truth = torch.tensor([[r - path[0][0], c - path[0][1]] for r, c in path])
    assert measured.shape == (8, 2) and (measured - truth).abs().max() <= 0.26


def test_prompts_move_the_noise_as_their_words_say_and_others_not_at_all():
    table = {"left": [0.0, -0.2], "up": [-0.1, 0.0]}
    shifts = word_shifts(["a red circle moving left", "Moving up, left.", "a blue square"], table, 9, 8.0, (16, 32))
    assert torch.allclose(shifts[0, :, 1], -0.2 * torch.arange(9) / 8 * 32) and not shifts[0, :, 0].any()
    assert torch.allclose(shifts[1, -1], torch.tensor([-0.1 * 16, -0.2 * 32]))  # the words' velocities add up
    assert not shifts[2].any()


def test_the_table_keeps_words_whose_clips_agree_on_a_direction():
    rng = np.random.default_rng(0)
    clips = []
    for i in range(48):
        way = ["left", "right", "up", "down"][i % 4]
        color = ["red", "green"][i // 24]
        v = {"left": (0, -0.2), "right": (0, 0.2), "up": (-0.2, 0), "down": (0.2, 0)}[way]
        t = torch.arange(16) / 8.0
        shifts = torch.stack([t * v[0], t * v[1]], 1) + torch.tensor(rng.normal(0, 0.002, (16, 2)), dtype=torch.float32)
        clips.append((f"a {color} circle moving {way}", shifts, 8.0))
    table = motion_words(clips)
    assert sorted(table) == ["down", "left", "right", "up"]  # not "moving", "red", "circle": they go every way
    assert table["left"] == pytest.approx([0.0, -0.2], abs=0.005) and table["down"][0] == pytest.approx(0.2, abs=0.005)
    assert motion_words(clips, min_clips=13) == {}  # 12 clips a direction are too few to count


def test_the_pipeline_moves_its_noise_with_the_prompt_where_the_model_has_motion_words(sd_image_model):
    pipe = VideoPipeline.from_image_model(sd_image_model)
    index = pipe.model.index
    index.frame_noise_correlation, index.motion_words = 0.9, {"right": [0.0, 0.25]}
    s = pipe.settings(num_frames=8, fps=4.0, height=64, width=64, motion_noise=True)
    call = Call(s, 0.0, torch.Generator().manual_seed(0), False, None, torch.device("cpu"))
    noise = pipe._initial_noise(call, 2, ["a red circle moving right", "a red circle"])  # (b c f h w)
    side = noise.shape[-1]
    moved = estimate_shifts(noise)
    assert torch.allclose(moved[0, :, 1], 0.25 * torch.arange(8) / 4 * side, atol=0.3)  # within half the side
    assert moved[1].abs().max() < 0.3 and not moved[:, :, 0].any()
    index.motion_words = {}
    with pytest.raises(VidgenError, match="has no motion words"):
        pipe("a red circle moving right", num_frames=2, height=16, width=16, num_inference_steps=1, stages=["base"],
             motion_noise=True, progress=False)


def test_continued_shifts_go_on_at_the_velocity_the_frames_move_at():
    blob = torch.zeros(2, 4, 1, 16, 16)
    blob[..., 4:8, 4:8] = 1.0
    right = torch.cat([torch.roll(blob[:1], k, dims=-1) for k in range(4)], dim=2)  # one cell a frame
    up = torch.cat([torch.roll(blob[1:], -k // 2, dims=-2) for k in range(0, 8, 2)], dim=2)  # one cell a frame up
    shifts = continued_shifts(torch.cat([right, up]), 6)  # (b 6 2)
    torch.testing.assert_close(shifts[0], torch.stack([torch.zeros(6), torch.arange(6.0)], dim=1), atol=0.1, rtol=0)
    torch.testing.assert_close(shifts[1], torch.stack([-torch.arange(6.0), torch.zeros(6)], dim=1), atol=0.1, rtol=0)


def test_the_first_window_moves_its_noise_with_the_words_and_each_later_one_as_the_clip_moves(sd_image_model):
    pipe = VideoPipeline.from_image_model(sd_image_model)
    pipe.model.index.frame_noise_correlation, pipe.model.index.motion_words = 0.5, {"left": [0.0, -0.2]}
    told, plain = [], pipe._initial_noise

    def initial_noise(call, batch, prompts=None, shifts=None):
        told.append((prompts, shifts))
        return plain(call, batch, prompts, shifts)

    pipe._initial_noise = initial_noise
    small = dict(num_frames=4, height=16, width=16, fps=4.0, num_inference_steps=1, stages=["base"], progress=False,
                 motion_noise=True)
    pipe("a red circle moving left", seconds=2.0, seed=0, **small)
    assert told[0] == (["a red circle moving left"], None) and len(told) >= 3
    assert all(prompts is None and tuple(shifts.shape) == (1, 4, 2) for prompts, shifts in told[1:])
    told.clear()
    clip = (np.zeros((4, 16, 16, 3)) + 128).astype(np.uint8)
    small.pop("stages"), small.pop("fps")
    pipe.model.stages = {"base": pipe.model.stages["base"]}  # keyframes only: the clip at the keyframes' rate
    pipe.extend(clip, prompt="a red circle moving left", seconds=1.0, fps=4.0, seed=0, **small)
    assert told and all(prompts is None and shifts.abs().max() < 0.5 for prompts, shifts in told)  # a still clip
    told.clear()
    pipe.extend(clip, prompt="a red circle moving left", seconds=1.0, fps=4.0, seed=0, **{**small, "motion_noise": False})
    assert told and all(shifts is None for _, shifts in told)  # still noise where motion noise is off


def test_motion_noise_on_a_model_without_motion_words_is_refused_before_it_loads(sd_image_model, tmp_path,
                                                                                   monkeypatch, capsys):
    from vidgen.cli import main

    folder = VideoPipeline.from_image_model(sd_image_model).save_pretrained(tmp_path / "plain")
    monkeypatch.setattr(VideoPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded before the refusal"))
    assert main(["generate", "a red circle moving left", "-o", str(tmp_path / "out.mp4"), "--model", str(folder),
                 "--motion-noise"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no motion words" in err and "--no-motion-noise" in err
    assert not (tmp_path / "out.mp4").exists()
