"""An image-to-video base stage (`image_base` in vidgen.json): a base stage trained around each
clip's first frame, which image-to-video runs with the user's picture as that anchor; saved,
loaded and packaged with the model, refused where it cannot serve."""

import json

import numpy as np
import pytest
import torch

from vidgen.errors import VidgenError
from vidgen.model_folder import VideoModel
from vidgen.models import cascade
from vidgen.pipeline import VideoPipeline
from vidgen.shipping import package_model
from vidgen.weights import CheckpointError

RUN = dict(num_frames=3, height=16, width=16, fps=8, num_inference_steps=2, progress=False, candidates=1,
           stages=["base"])


def anchored(base, seed: int = 0):
    """An anchored copy of `base` whose anchor input is not zero (a trained one reads its anchor)."""
    unet = cascade.anchored_unet(base).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for name, p in unet.named_parameters():
            if name.startswith("input_extension."):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return unet


@pytest.fixture(scope="module")
def pipe(sd_image_model):
    pipe = VideoPipeline.from_image_model(sd_image_model)
    pipe.model.index.defaults.height = pipe.model.index.defaults.width = 16
    return pipe


def calls_of(module, calls: list):
    return module.register_forward_hook(lambda m, args, output: calls.append(args[0].shape[1]))


def test_image_to_video_runs_the_image_base_around_the_picture(pipe):
    picture = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    other = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    without = pipe("a red circle", image=picture, seed=3, output_type="latent", **RUN).frames
    base = pipe.model.stages["base"]
    pipe.model.set_image_base(anchored(base))
    base_calls, image_calls = [], []
    hooks = [calls_of(base, base_calls), calls_of(pipe.model.image_base, image_calls)]
    try:
        out = pipe("a red circle", image=picture, seed=3, output_type="latent", **RUN)
        from_other = pipe("a red circle", image=other, seed=3, output_type="latent", **RUN).frames
        image_calls_of_two, image_calls[:] = len(image_calls), []
        text_only = pipe("a red circle", seed=3, output_type="latent", **RUN).frames
    finally:
        for hook in hooks:
            hook.remove()
        pipe.model.set_image_base(None)
    c = without.shape[1]
    # the picture's call ran the image base alone, reading latents + anchor + offset; text alone the base stage
    assert image_calls_of_two == 4 and set(base_calls) == {c} and len(base_calls) == 2 and image_calls == []
    assert torch.equal(out.frames[:, :, :1], without[:, :, :1])  # the first frame is the picture
    assert not torch.allclose(out.frames[:, :, 1:], without[:, :, 1:], atol=1e-4)
    assert not torch.allclose(out.frames[:, :, 1:], from_other[:, :, 1:], atol=1e-4)  # every frame reads it
    assert text_only.shape == out.frames.shape


def test_a_base_anchored_at_its_first_frame_takes_the_picture_as_its_anchor(pipe, tmp_path):
    """A picture-first model (its base anchored at frame 0, the anchor drawn by an image U-Net): with
    --image the picture is the anchor and the image U-Net does not run; a base anchored elsewhere,
    or a clip to start from, is refused with the reason."""
    from vidgen.media.inputs import Clip

    model = VideoModel.from_pretrained(pipe.save_pretrained(tmp_path / "plain"))
    image_unet = model.stages["base"].unet
    model.set_stage("base", anchored(model.stages["base"]))
    model.set_anchor(image_unet, 0.0)
    first = VideoPipeline(model)
    picture = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    other = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    drawn, anchors = [], []
    hook = image_unet.register_forward_hook(lambda m, args, output: drawn.append(1))
    plain_anchor_input = cascade.anchor_input

    def anchor_input(latents, anchor, index):
        anchors.append(anchor.clone())
        return plain_anchor_input(latents, anchor, index)

    cascade.anchor_input = anchor_input
    try:
        out = first("a red circle", image=picture, seed=3, output_type="latent", **RUN)
        read, anchors[:] = list(anchors), []
        from_other = first("a red circle", image=other, seed=3, output_type="latent", **RUN).frames
        assert drawn == []  # no anchor drawn: the picture is it
        # every step read one anchor per row, the same all along, and another picture's is another
        assert read and all(torch.equal(a[0], read[0][0]) for a in read) and not torch.equal(anchors[0][0], read[0][0])
        first("a red circle", seed=3, output_type="latent", **RUN)
        assert drawn  # text alone: the image U-Net draws the anchor as before
    finally:
        hook.remove()
        cascade.anchor_input = plain_anchor_input
    assert not torch.allclose(out.frames[:, :, 1:], from_other[:, :, 1:], atol=1e-4)
    clip = Clip(np.zeros((4, 16, 16, 3), dtype=np.uint8), 8.0, "clip.mp4", {})
    with pytest.raises(VidgenError, match="starting from a video needs a base stage without one"):
        first("a red circle", video=clip, seed=3, **RUN)
    with pytest.raises(VidgenError, match="starting from a clip to extend needs a base stage without one"):
        first.extend(clip, seconds=1.0, progress=False)
    with pytest.raises(VidgenError, match="leave seconds out"):
        first("a red circle", seconds=4.0, **RUN)
    assert first.supports_input("image") and not first.supports_input("video")
    model.index.anchor.position = 0.5
    with pytest.raises(VidgenError, match="at 0.5 of the clip, not at its start"):
        first("a red circle", image=picture, seed=3, **RUN)
    assert not first.supports_input("image")


@pytest.mark.parametrize("argv, reason", [
    (["extend", "{clip}", "-o", "{out}"], "starting from a clip to extend needs a base stage without one"),
    (["generate", "a red circle", "--seconds", "4", "-o", "{out}"], "leave seconds out"),
    (["generate", "a red circle", "--video", "{clip}", "-o", "{out}"], "starting from --video"),
])
def test_a_picture_first_model_refuses_clips_before_it_loads(pipe, tmp_path, monkeypatch, capsys, argv, reason):
    from vidgen.cli import main
    from vidgen.video_io import save_video

    model = VideoModel.from_pretrained(pipe.save_pretrained(tmp_path / "plain"))
    image_unet = model.stages["base"].unet
    model.set_stage("base", anchored(model.stages["base"]))
    model.set_anchor(image_unet, 0.0)
    folder = model.save_pretrained(tmp_path / "first")
    save_video(np.zeros((4, 16, 16, 3), dtype=np.uint8), tmp_path / "clip.gif", fps=8)

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(VideoPipeline, "from_pretrained", no_loading)
    names = dict(clip=tmp_path / "clip.gif", out=tmp_path / "out.mp4")
    assert main([part.format(**names) for part in argv] + ["--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and reason in err and str(folder) in err
    assert not (tmp_path / "out.mp4").exists()


def test_the_image_base_is_saved_and_loaded_with_the_model(pipe, tmp_path):
    pipe.model.set_image_base(anchored(pipe.model.stages["base"], seed=1))
    try:
        pipe.save_pretrained(tmp_path / "model")
        expected = {k: v.clone() for k, v in pipe.model.image_base.state_dict().items()}
    finally:
        pipe.model.set_image_base(None)
    assert json.loads((tmp_path / "model" / "vidgen.json").read_text())["image_base"] == "image_base"
    loaded = VideoModel.from_pretrained(tmp_path / "model")
    state = loaded.image_base.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)
    loaded.set_image_base(None)
    loaded.save_pretrained(tmp_path / "without")
    assert not (tmp_path / "without" / "image_base").exists()
    assert VideoModel.from_pretrained(tmp_path / "without").image_base is None


def test_a_base_stage_without_an_anchor_input_is_refused_as_image_base(pipe):
    with pytest.raises(CheckpointError, match="model.image_conditioning=true model.anchor_position=0"):
        pipe.model.set_image_base(pipe.model.stages["base"])
    assert pipe.model.image_base is None


@pytest.mark.parametrize("position", [0.0, 0.5])
def test_packaging_adds_an_image_base_only_from_a_run_anchored_at_the_first_frame(pipe, tmp_path, position):
    run = VideoModel.from_pretrained(pipe.save_pretrained(tmp_path / "plain"))
    image_unet = run.stages["base"].unet
    run.set_stage("base", anchored(run.stages["base"]))
    run.set_anchor(image_unet, position)
    run.save_pretrained(tmp_path / "run")
    if position:
        with pytest.raises(VidgenError, match="anchor_position=0"):
            package_model(tmp_path / "plain", tmp_path / "out", text_encoder="", image_base=tmp_path / "run")
        assert not (tmp_path / "out").exists()
        return
    folder = package_model(tmp_path / "plain", tmp_path / "out", text_encoder="", image_base=tmp_path / "run")
    shipped = VideoModel.from_pretrained(folder)
    assert shipped.image_base is not None and shipped.image_unet is None  # the picture is the anchor
    assert shipped.image_base.unet.conv_in.weight.dtype == torch.float32  # loaded in the dtype asked for
    assert not (folder / "anchor").exists()
    assert shipped.index.image_base_motion_noise is False  # a run on still noise
    run.index.motion_words, run.index.defaults.motion_noise = {"left": [0.0, -0.2]}, True  # a model.flow_noise run
    run.save_pretrained(tmp_path / "flow-run")
    flow = package_model(tmp_path / "plain", tmp_path / "flow", text_encoder="", image_base=tmp_path / "flow-run")
    assert VideoModel.from_pretrained(flow).index.image_base_motion_noise is True


def test_the_image_base_gets_still_noise_where_the_base_stage_gets_noise_moving_with_the_words(pipe):
    """An image base trained on still noise: a picture's clip is drawn from it, while a prompt alone
    gets noise that moves as its motion words say (vidgen.diffusion.flow_noise); one trained on
    moving noise (index.image_base_motion_noise) gets moving noise too."""
    index = pipe.model.index
    index.frame_noise_correlation, index.motion_words = 0.5, {"left": [0.0, -0.2]}
    asked, plain = [], pipe._initial_noise
    pipe._initial_noise = lambda call, batch, prompts=None: asked.append(prompts) or plain(call, batch, prompts)
    pipe.model.set_image_base(anchored(pipe.model.stages["base"]))
    picture = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    try:
        pipe("a red circle moving left", image=picture, seed=3, output_type="latent", motion_noise=True, **RUN)
        pipe("a red circle moving left", seed=3, output_type="latent", motion_noise=True, **RUN)
        index.image_base_motion_noise = True  # an image base trained on moving noise (model.flow_noise)
        pipe("a red circle moving left", image=picture, seed=3, output_type="latent", motion_noise=True, **RUN)
    finally:
        pipe.model.set_image_base(None)
        del pipe._initial_noise
        index.frame_noise_correlation, index.motion_words = 0.0, {}
    assert asked == [None, ["a red circle moving left"], ["a red circle moving left"]]
    assert index.image_base_motion_noise is False  # cleared with the image base
