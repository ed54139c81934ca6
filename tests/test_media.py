"""The user's media in (vidgen.media): image-to-video, video-to-video, extension, interpolation,
upscaling and long clips on a tiny random cascade; the given frames kept where each method
promises; refusals before any sampling; the commands end to end."""

import json

import numpy as np
import pytest
import torch

from vidgen.cli import main
from vidgen.destinations import sidecar_path
from vidgen.errors import VidgenError
from vidgen.media.frames import encode_frames
from vidgen.media.inputs import fit_frames
from vidgen.models import cascade
from vidgen.models.vae import decode_latents
from vidgen.pipeline import VideoPipeline
from vidgen.video_io import save_video, to_uint8_frames

RUN = dict(num_frames=3, height=16, width=16, fps=8, num_inference_steps=2, progress=False, candidates=1)


@pytest.fixture(scope="module")
def pipe(sd_image_model):
    pipe = VideoPipeline.from_image_model(sd_image_model)
    base = pipe.model.stages["base"]
    pipe.model.set_stage("interp", cascade.interpolation_unet(base).eval())
    pipe.model.set_stage("sr", cascade.super_resolution_unet(base).eval())
    index = pipe.model.index
    index.interp.num_inference_steps = index.sr.num_inference_steps = 2
    index.interp.strength = 0.4  # as the shipped model: from the known frames blended
    index.defaults.height = index.defaults.width = 16
    index.defaults.num_frames, index.defaults.num_inference_steps = 3, 2
    return pipe


def clip_frames(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def roundtrip(pipe, frames: np.ndarray) -> np.ndarray:
    """What the VAE makes of frames: the first keyframe of an animated picture decodes to this."""
    with torch.inference_mode():
        video = decode_latents(pipe.model.vae, encode_frames(pipe, frames))[0]
    return to_uint8_frames(video)


def test_image_to_video_starts_from_the_picture_fitted_to_the_models_size(pipe):
    picture = np.random.default_rng(1).integers(0, 256, (20, 28, 3), dtype=np.uint8)  # cropped at the sides
    out = pipe("a red circle", image=picture, stages=["base"], seed=3, **RUN)
    assert out.frames.shape == (1, 3, 16, 16, 3) and out.settings.arrow_check is False
    assert np.array_equal(out.frames[0, :1], roundtrip(pipe, fit_frames(picture[None], (16, 16))))
    full = pipe("a red circle", image=picture, seed=3, **RUN)
    assert full.frames.shape == (1, 9, 32, 32, 3) and full.stages == ["base", "interp", "sr"]
    other = pipe("a red circle", image=picture[::-1].copy(), stages=["base"], seed=3, **RUN)
    assert not np.array_equal(other.frames, out.frames)  # the picture reaches the frames after it


def test_reconstruction_guidance_steers_the_frames_drawn_and_keeps_the_picture(sd_image_model):
    pipe = VideoPipeline.from_image_model(sd_image_model)
    base = pipe.model.stages["base"]
    with torch.no_grad():  # temporal layers that mix frames (an inflated network starts without)
        g = torch.Generator().manual_seed(0)
        for name, p in base.named_parameters():
            if "temporal" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    picture = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    calls = []
    hook = base.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        plain = pipe("a red circle", image=picture, stages=["base"], seed=3, output_type="latent", **RUN)
        plain_calls, calls[:] = list(calls), []
        steered = pipe("a red circle", image=picture, stages=["base"], seed=3, reconstruction_guidance=50.0,
                       output_type="latent", **RUN)
        without_image = pipe("a red circle", stages=["base"], seed=3, reconstruction_guidance=50.0,
                             output_type="latent", **RUN)
    finally:
        hook.remove()
    # per step, the conditional branch (read with its gradient) and then the unconditional one: the same rows as
    # without the guidance, none computed twice; and the picture is still the first frame
    assert plain_calls == [2, 2] and calls[:4] == [1, 1, 1, 1]
    assert steered.settings.reconstruction_guidance == 50.0
    assert torch.equal(steered.frames[:, :, :1], plain.frames[:, :, :1])  # (b c f h w) latents
    assert not torch.allclose(steered.frames[:, :, 1:], plain.frames[:, :, 1:], atol=1e-4)
    assert without_image.frames.shape == plain.frames.shape  # nothing given: nothing to steer toward
    with pytest.raises(VidgenError, match="reconstruction guidance must be 0"):
        pipe("a red circle", image=picture, reconstruction_guidance=-1.0, **RUN)


def test_video_to_video_redraws_the_clips_keyframes_by_strength(pipe):
    clip = clip_frames(9)  # 9 frames at 24 fps: keyframes 0, 3, 6 at 8 fps
    light = pipe("a red circle", video=clip, strength=0.1, stages=["base"], seed=0, **dict(RUN, fps=8))
    heavy = pipe("a red circle", video=clip, strength=1.0, stages=["base"], seed=0, **RUN)
    assert light.frames.shape == heavy.frames.shape == (1, 3, 16, 16, 3)
    with pytest.raises(VidgenError, match="strength"):
        pipe("a red circle", video=clip, strength=1.5, **RUN)
    # `video` as an array plays at the call's fps (8): every frame is a keyframe, so 3 of 9 are used
    target = roundtrip(pipe, clip[:3]).astype(float)
    assert np.abs(light.frames[0] - target).mean() < np.abs(heavy.frames[0] - target).mean()


def test_extend_keeps_the_clips_frames_and_adds_the_seconds_asked(pipe):
    clip = clip_frames(7)
    out = pipe.extend(clip, prompt="a red circle", seconds=0.5, fps=24, seed=0, progress=False)
    assert out.frames.shape == (1, 7 + 12, 16, 16, 3) and out.fps == 24
    assert np.array_equal(out.frames[0, :7], clip)  # the clip's own frames, untouched
    at_keyframe_rate = pipe.extend(clip, prompt="a red circle", seconds=1, fps=8, seed=0, progress=False)
    assert at_keyframe_rate.frames.shape == (1, 7 + 8, 16, 16, 3)


def test_interpolate_keeps_every_kth_frame_and_fills_between(pipe):
    clip = clip_frames(4)
    out = pipe.interpolate(clip, factor=3, fps=8, seed=0, progress=False)
    assert out.frames.shape == (1, 10, 16, 16, 3) and out.fps == 24
    assert np.array_equal(out.frames[0, ::3], clip)
    two = pipe.interpolate(clip, factor=2, fps=8, seed=0, progress=False)
    assert two.frames.shape == (1, 7, 16, 16, 3) and np.array_equal(two.frames[0, ::2], clip)
    with pytest.raises(VidgenError, match="factor"):
        pipe.interpolate(clip, factor=4, fps=8)


def test_upscale_runs_super_resolution_on_the_clip(pipe):
    out = pipe.upscale(clip_frames(3, size=24), fps=8, seed=0, progress=False)  # fitted to 16, then x2
    assert out.frames.shape == (1, 3, 32, 32, 3) and out.stages == ["sr"]


def test_long_clips_run_windows_to_the_length_asked(pipe):
    out = pipe("a red circle", seconds=0.5, seed=0, stages=["base", "interp"],
               **dict(RUN, num_frames=2))  # windows of 2 keyframes, each knowing the last keyframe made
    assert out.frames.shape == (1, 12, 16, 16, 3) and out.fps == 24
    assert len(out.timings) > 0


def test_continued_keyframes_keep_the_ones_given(pipe):
    from vidgen.media.long_clips import continue_keyframes
    from vidgen.sampling_call import Call, new_generator

    s = pipe.settings(num_frames=4, num_inference_steps=2, candidates=1)
    call = Call(s, 0.0, new_generator(0, None), False, None, pipe.model.device)
    with torch.inference_mode():
        cond, uncond = pipe._text(["a red circle"], None)
        given = torch.randn(1, 4, 3, 8, 8)
        out = continue_keyframes(pipe, call, given, cond, uncond, 9)  # windows of 4 knowing 2: 3 -> 5 -> 7 -> 9
    assert out.shape == (1, 4, 9, 8, 8) and torch.equal(out[:, :, :3], given)


def test_a_continued_window_starts_from_its_last_known_keyframe_moved_on_at_the_clips_velocity(pipe, monkeypatch):
    from vidgen.diffusion.flow_noise import translated
    from vidgen.media.long_clips import continue_keyframes
    from vidgen.sampling_call import Call, new_generator

    told, plain = [], pipe._base_stage

    def base_stage(call, noise, cond, uncond, anchor, given=None, **options):
        told.append(options)
        return plain(call, noise, cond, uncond, anchor, given, **options)

    monkeypatch.setattr(pipe, "_base_stage", base_stage)
    given = torch.full((1, 4, 2, 8, 8), -0.5)
    given[:, :, 0, 2:5, 1:4] = 1.0
    given[:, :, 1, 2:5, 2:5] = 1.0  # a square moving a cell a keyframe to the right
    with torch.inference_mode():
        cond, uncond = pipe._text(["a red circle"], None)
        for strength in (0.5, 1.0):
            s = pipe.settings(num_frames=4, num_inference_steps=4, candidates=1, continue_strength=strength)
            call = Call(s, 0.0, new_generator(0, None), False, None, pipe.model.device)
            out = continue_keyframes(pipe, call, given, cond, uncond, 4)  # one window of 4 knowing 2
            assert torch.equal(out[:, :, :2], given)
    start, strength = told[0]["start"], told[0]["strength"]  # (1 c 4 h w)
    assert strength == 0.5 and torch.equal(start[:, :, :2], given)
    onward = translated(given[:, :, 1], torch.tensor([[[0.0, 1.0], [0.0, 2.0]]]))  # a cell, two cells further
    torch.testing.assert_close(start[:, :, 2:], onward, atol=0.05, rtol=0)
    assert "start" not in told[1]  # strength 1: from noise alone, as before
    with pytest.raises(VidgenError, match=r"continue_strength must be in \(0, 1\]"):
        pipe.extend(clip_frames(4), seconds=0.5, continue_strength=0.0, **RUN)


def test_what_the_model_cannot_do_is_refused_before_sampling(pipe, sd_image_model):
    base_only = VideoPipeline.from_image_model(sd_image_model)
    with pytest.raises(VidgenError, match="no interp stage"):
        base_only.interpolate(clip_frames(3), fps=8)
    with pytest.raises(VidgenError, match="no sr stage"):
        base_only.upscale(clip_frames(3), fps=8)
    with pytest.raises(VidgenError, match="drop"):
        pipe("a red circle", image=np.zeros((10, 100, 3), np.uint8), **RUN)
    with pytest.raises(VidgenError, match="too small"):
        pipe("a red circle", image=np.zeros((4, 4, 3), np.uint8), **RUN)
    with pytest.raises(VidgenError, match="not both"):
        pipe("a red circle", image=np.zeros((32, 32, 3), np.uint8), video=clip_frames(3), **RUN)
    with pytest.raises(VidgenError, match="strength"):
        pipe("a red circle", strength=0.5, **RUN)
    with pytest.raises(VidgenError, match="still picture"):
        pipe("a red circle", image=np.zeros((16, 16, 3), np.uint8), strength=1.5, **RUN)


@pytest.fixture(scope="module")
def model_folder(pipe, tmp_path_factory):
    return pipe.save_pretrained(tmp_path_factory.mktemp("media") / "model")


def test_commands_write_clips_with_sidecars_and_keep_the_given_frames(model_folder, tmp_path, capsys):
    clip = clip_frames(4)
    save_video(clip, tmp_path / "in", fps=8, metadata={"prompt": "a red circle"})  # PNG frames: exact
    common = ["--model", str(model_folder), "--steps", "2", "--seed", "1", "--no-progress"]
    assert main(["interpolate", str(tmp_path / "in"), "-o", str(tmp_path / "x3"), "--factor", "3", *common]) == 0
    side = json.loads(sidecar_path(tmp_path / "x3").read_text())
    assert side["frames"] == 10 and side["fps"] == 24 and side["factor"] == 3 and side["prompt"] == "a red circle"
    from vidgen.media.inputs import read_clip

    assert np.array_equal(read_clip(tmp_path / "x3").frames[::3], clip)
    assert main(["extend", str(tmp_path / "in"), "-o", str(tmp_path / "ext"), "--seconds", "0.5",
                 "--reconstruction-guidance", "5", *common]) == 0
    extended = read_clip(tmp_path / "ext")
    assert len(extended.frames) == 8 and np.array_equal(extended.frames[:4], clip)
    assert json.loads(sidecar_path(tmp_path / "ext").read_text())["reconstruction_guidance"] == 5
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "up.mp4"), *common]) == 0
    assert json.loads(sidecar_path(tmp_path / "up.mp4").read_text())["width"] == 32
    picture = tmp_path / "pic.png"
    from PIL import Image

    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(picture)
    assert main(["generate", "a red circle", "--image", str(picture), "-o", str(tmp_path / "anim.gif"),
                 "--candidates", "1", *common]) == 0
    animated = json.loads(sidecar_path(tmp_path / "anim.gif").read_text())
    assert "scaled" in animated["image"] and animated["image_base_stage"] is False  # this model has no image base


@pytest.mark.parametrize("argv, reason", [
    (["interpolate", "{missing}", "-o", "{out}"], "does not exist"),
    (["extend", "{bad}", "-o", "{out}"], "cannot be read as video"),
    (["upscale", "{good}", "-o", "{good}"], "the clip itself"),
    (["generate", "a red circle", "--image", "{bad}", "-o", "{out}"], "cannot be read as a picture"),
    (["generate", "a red circle", "--strength", "0.5", "-o", "{out}"], "--strength goes with --video or --image"),
    (["extend", "{good}", "-o", "{out}", "--reconstruction-guidance", "-1"], "-1"),
    (["extend", "{good}", "-o", "{out}", "--continue-strength", "0"], "must be above 0"),
    (["upscale", "{frames}", "-o", "{out}"], "00001.png cannot be read as a frame"),
    (["generate", "a red circle", "--lora", "{lora}", "-o", "{out}"], "not a readable safetensors file"),
])
def test_commands_refuse_with_one_line_and_exit_2(argv, reason, tmp_path, capsys):
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    save_video(clip_frames(2), tmp_path / "frames", fps=8, fmt="png")  # a frames folder with one damaged frame
    (tmp_path / "frames" / "00001.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 64)  # a damaged header
    save_video(clip_frames(2), tmp_path / "good.gif", fps=8)
    names = dict(missing=tmp_path / "none.mp4", bad=tmp_path / "bad.mp4", good=tmp_path / "good.gif",
                 out=tmp_path / "out.mp4", frames=tmp_path / "frames", lora=tmp_path / "bad.safetensors")
    assert main([part.format(**names) for part in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and reason in err and err.startswith(f"vidgen {argv[0]}: error:")
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("name", ["extend", "interpolate", "upscale"])
def test_media_commands_are_listed_with_help(name, capsys):
    assert main(["--help"]) == 0 and name in capsys.readouterr().out
    assert main([name, "--help"]) == 0 and f"vidgen {name}" in capsys.readouterr().out


def test_a_clip_of_another_shape_is_cropped_to_the_models_and_its_frames_kept_in_that_crop(pipe):
    """A wide clip on a square model: interpolation and extension crop it to the model's aspect at
    its own resolution, so the kept frames are the crop's exact pixels and the drawn ones the same
    region (not a zoomed part of it)."""
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 255, (3, 32, 40, 3), dtype=np.uint8)  # (f h w 3), the model is 32x32
    out = pipe.interpolate(wide, factor=2, fps=8, num_inference_steps=2, progress=False)
    assert out.frames.shape[2:4] == (32, 32)
    assert np.array_equal(out.frames[0, ::2], wide[:, :, 4:36])
    longer = pipe.extend(wide, seconds=0.25, fps=8, num_inference_steps=2, progress=False)
    assert longer.frames.shape[2:4] == (32, 32) and np.array_equal(longer.frames[0, :3], wide[:, :, 4:36])
