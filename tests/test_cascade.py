"""Frame interpolation and super-resolution: networks that start as the base model, their inputs,
and the pipeline running base -> interp -> sr."""

import json

import numpy as np
import pytest
import torch

from vidgen.errors import VidgenError
from vidgen.models import cascade
from vidgen.models.inflate import inflate_unet
from vidgen.pipeline import VideoPipeline

from conftest import TEXT_DIM, TINY_UNET, make_unet, make_vae


@pytest.fixture
def base():
    torch.manual_seed(0)
    model = inflate_unet(make_unet())
    for p in model.temporal_parameters():  # a trained-looking base: temporal layers away from the identity
        p.data.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("build, extra, condition", [
    (cascade.interpolation_unet, 5, cascade.INTERP_CONDITION),
    (cascade.super_resolution_unet, 4, cascade.SR_CONDITION),
])
def test_extended_unets_start_as_the_base_model(base, build, extra, condition):
    model = build(base).eval()
    assert model.options.extra_in_channels == extra and model.options.extra_conditions == (condition,)
    x, text = torch.randn(2, 4, 6, 16, 16), torch.randn(2, 7, TEXT_DIM)
    given = torch.randn(2, extra, 6, 16, 16)
    with torch.no_grad():
        expected = base(x, 10, text, fps=8)
        out = model(torch.cat([x, given], 1), 10, text, fps=8, conditions={condition: torch.tensor([2.0, 3.0])})
    assert (out - expected).abs().max() < 1e-5
    base_keys = set(base.state_dict())
    assert base_keys < set(model.state_dict())  # every base weight kept, under the same name
    new = set(model.state_dict()) - base_keys
    assert new and all(k.startswith(("condition_embeddings.", "input_extension.")) for k in new)


def test_extended_unet_refuses_missing_inputs_or_conditions(base):
    model = cascade.interpolation_unet(base)
    x, text = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 7, TEXT_DIM)
    with pytest.raises(VidgenError, match="4 latent \\+ 5 extra"):
        model(x, 1, text, conditions={cascade.INTERP_CONDITION: 2})
    with pytest.raises(VidgenError, match="frame_skip"):
        model(torch.randn(1, 9, 3, 16, 16), 1, text)


def test_keyframes_are_spread_every_skip_frames_and_the_tail_is_extrapolated():
    keyframes = torch.arange(3.0).view(1, 1, 3, 1, 1).expand(2, 4, 3, 2, 2)
    known, mask = cascade.spread_keyframes(keyframes, skip=3)
    assert known.shape == (2, 4, 9, 2, 2) and mask.shape == (2, 1, 9, 2, 2)
    assert mask[0, 0, :, 0, 0].tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 0]
    assert known[0, 0, :, 0, 0].tolist() == [0, 0, 0, 1, 0, 0, 2, 0, 0]
    inputs = cascade.interpolation_input(torch.zeros_like(known), known, mask)
    assert inputs.shape == (2, 9, 9, 2, 2)
    assert cascade.upsample_latents(keyframes, 2).shape == (2, 4, 3, 4, 4)


def test_blended_keyframes_are_linear_between_keyframes_and_hold_the_last():
    keyframes = torch.tensor([0.0, 3.0, 9.0]).view(1, 1, 3, 1, 1).expand(2, 4, 3, 2, 2)
    blend = cascade.blend_keyframes(keyframes, skip=3)  # (b c 9 h w)
    assert blend.shape == (2, 4, 9, 2, 2)
    assert torch.allclose(blend[1, 3, :, 1, 0], torch.tensor([0.0, 1, 2, 3, 5, 7, 9, 9, 9]))
    known, mask = cascade.spread_keyframes(keyframes, skip=3)
    assert torch.equal(blend * mask, known * mask)  # the keyframes themselves unchanged


@pytest.fixture(scope="module")
def cascade_pipe(sd_image_model):
    pipe = VideoPipeline.from_image_model(sd_image_model)
    base = pipe.model.stages["base"]
    pipe.model.set_stage("sr", cascade.super_resolution_unet(base).eval())  # out of order on purpose
    pipe.model.set_stage("interp", cascade.interpolation_unet(base).eval())
    pipe.model.index.interp.num_inference_steps = pipe.model.index.sr.num_inference_steps = 2
    return pipe


def test_pipeline_runs_base_interp_sr_with_the_sizes_each_stage_makes(cascade_pipe, tmp_path):
    assert list(cascade_pipe.model.stages) == list(cascade_pipe.model.index.stages) == ["base", "interp", "sr"]
    settings = cascade_pipe.settings(num_frames=3, height=32, width=32, fps=8, num_inference_steps=2)
    assert cascade_pipe.output_size(settings) == (9, 64, 64, 24)
    assert cascade_pipe.output_size(settings, ["base"]) == (3, 32, 32, 8)
    run = dict(num_frames=3, height=32, width=32, num_inference_steps=2, seed=5, progress=False)
    out = cascade_pipe("a red circle", **run)
    full = out.frames
    assert full.shape == (1, 9, 64, 64, 3) and full.dtype == np.uint8
    assert out.stages == ["base", "interp", "sr"] and out.fps == 24
    assert list(out.timings) == ["text", "base", "interp", "sr", "decode"]
    assert all(seconds > 0 for seconds in out.timings.values())
    out = cascade_pipe("a red circle", stages=["base"], **run)
    base_only = out.frames
    assert list(out.timings) == ["text", "base", "decode"] and out.fps == 8  # the parts this call ran
    interpolated = cascade_pipe("a red circle", stages=["base", "interp"], **run).frames
    assert base_only.shape == (1, 3, 32, 32, 3) and interpolated.shape == (1, 9, 32, 32, 3)
    assert np.array_equal(interpolated[:, ::3], base_only)  # the keyframes stay as the base stage made them
    assert np.array_equal(cascade_pipe("a red circle", **run).frames, full)  # same seed, same clip

    cascade_pipe.save_pretrained(tmp_path / "model")
    loaded = VideoPipeline.from_pretrained(tmp_path / "model")
    assert list(loaded.model.stages) == ["base", "interp", "sr"]
    assert np.array_equal(loaded("a red circle", **run).frames, full)


def _at_strength(pipe, section: str, strength: float, run: dict, folder) -> torch.Tensor:
    """A clip with `section`'s (interp or sr) strength set and its steps raised from 2 to 4, and
    the model saved to `folder` with that setting; the fixture's settings restored afterwards."""
    settings = getattr(pipe.model.index, section)
    settings.strength, settings.num_inference_steps = strength, 4
    try:
        clip = pipe("a red circle", **run).frames
        pipe.save_pretrained(folder)
    finally:
        settings.strength, settings.num_inference_steps = 1.0, 2
    return clip


def test_super_resolution_below_full_strength_starts_from_the_upsampled_base_latents(cascade_pipe, tmp_path):
    run = dict(num_frames=2, height=32, width=32, num_inference_steps=2, seed=5, progress=False, stages=["base", "sr"],
               output_type="pt")
    base = cascade_pipe(**{**run, "stages": ["base"]}, prompt="a red circle").frames
    full = cascade_pipe("a red circle", **run).frames
    partial = _at_strength(cascade_pipe, "sr", 0.25, run, tmp_path / "model")
    assert partial.shape == full.shape == (1, 3, 2, 64, 64)
    upsampled = torch.nn.functional.interpolate(base[0].transpose(0, 1), scale_factor=2, mode="bilinear")
    nearer = (partial[0].transpose(0, 1) - upsampled).abs().mean(), (full[0].transpose(0, 1) - upsampled).abs().mean()
    assert nearer[0] < nearer[1]  # it keeps the base stage's picture
    assert VideoPipeline.from_pretrained(tmp_path / "model").model.index.sr.strength == 0.25  # saved in vidgen.json


def test_interpolation_below_full_strength_starts_from_the_blended_keyframes(cascade_pipe, tmp_path):
    run = dict(num_frames=3, height=32, width=32, num_inference_steps=2, seed=5, progress=False,
               stages=["base", "interp"], output_type="pt")
    base = cascade_pipe(**{**run, "stages": ["base"]}, prompt="a red circle").frames  # (1 3 f h w)
    full = cascade_pipe("a red circle", **run).frames
    partial = _at_strength(cascade_pipe, "interp", 0.25, run, tmp_path / "model")
    assert partial.shape == full.shape == (1, 3, 9, 32, 32)
    # the keyframes kept (up to float rounding: the VAE decodes them in other batches)
    assert torch.allclose(partial[:, :, ::3], base, atol=1e-4) and torch.allclose(full[:, :, ::3], base, atol=1e-4)
    between = [i for i in range(9) if i % 3]
    held = base[:, :, [i // 3 for i in between]]  # the keyframe before each frame between
    nearer = (partial[:, :, between] - held).abs().mean(), (full[:, :, between] - held).abs().mean()
    assert nearer[0] < nearer[1]  # frames between look like the keyframes around them
    assert VideoPipeline.from_pretrained(tmp_path / "model").model.index.interp.strength == 0.25  # saved in vidgen.json


def test_a_model_trained_with_correlated_frame_noise_is_sampled_with_it(cascade_pipe, tmp_path):
    run = dict(num_frames=3, height=32, width=32, num_inference_steps=2, seed=5, progress=False, stages=["base"])
    independent = cascade_pipe("a red circle", **run).frames
    cascade_pipe.model.index.frame_noise_correlation = 0.5
    try:
        correlated = cascade_pipe("a red circle", **run).frames
        assert not np.array_equal(correlated, independent)
        assert np.array_equal(cascade_pipe("a red circle", **run).frames, correlated)  # still one clip per seed
        cascade_pipe.save_pretrained(tmp_path / "model")
    finally:
        cascade_pipe.model.index.frame_noise_correlation = 0.0
    loaded = VideoPipeline.from_pretrained(tmp_path / "model")
    assert loaded.model.index.frame_noise_correlation == 0.5
    assert np.array_equal(loaded("a red circle", **run).frames, correlated)


def test_pipeline_refuses_stage_lists_and_frame_counts_it_cannot_run(cascade_pipe):
    with pytest.raises(VidgenError, match="start with 'base'"):
        cascade_pipe("x", stages=["interp"], num_frames=2, progress=False)
    limit = cascade_pipe.model.stages["interp"].options.max_frames // 3
    with pytest.raises(VidgenError, match=f"at most {limit} frames"):
        cascade_pipe.settings(num_frames=limit + 1)


def minilm_pipeline(text_encoder: str = "") -> VideoPipeline:
    """A tiny random model whose text encoder is the packaged MiniLM (12 tokens)."""
    from diffusers import DDIMScheduler

    from vidgen.model_folder import VideoModel
    from vidgen.model_index import GenerationDefaults, ModelIndex
    from vidgen.packaged import minilm_folder
    from vidgen.text import TextEncoder

    text = TextEncoder.from_pretrained(minilm_folder(), max_length=12)
    unet = make_unet(dict(TINY_UNET, cross_attention_dim=text.hidden_size))
    index = ModelIndex(text_encoder=text_encoder, text_max_length=12 if text_encoder else 0,
                       defaults=GenerationDefaults(num_frames=2, height=32, width=32, num_inference_steps=2))
    return VideoPipeline(VideoModel({"base": inflate_unet(unet)}, make_vae(), text, DDIMScheduler(), index))


def test_a_model_can_name_the_packaged_text_encoder_instead_of_shipping_it(tmp_path):
    pipe = minilm_pipeline(text_encoder="minilm")
    pipe.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m" / "text_encoder").exists() and not (tmp_path / "m" / "tokenizer").exists()
    loaded = VideoPipeline.from_pretrained(tmp_path / "m")
    assert loaded.model.text_encoder.max_length == 12
    assert torch.equal(loaded.encode_prompts(["a red circle"]), pipe.encode_prompts(["a red circle"]))
    assert np.array_equal(loaded("a red circle", seed=1, progress=False).frames,
                          pipe("a red circle", seed=1, progress=False).frames)


def test_packaging_halves_the_weights_and_names_the_text_encoder(tmp_path):
    from safetensors import safe_open

    from vidgen.shipping import package_model

    pipe = minilm_pipeline()
    pipe.save_pretrained(tmp_path / "trained")
    assert (tmp_path / "trained" / "text_encoder").is_dir()
    package_model(tmp_path / "trained", tmp_path / "shipped")
    shipped = tmp_path / "shipped"
    assert not (shipped / "text_encoder").exists()
    assert str(tmp_path) not in "".join(f.read_text() for f in shipped.rglob("*.json"))  # no training-machine paths
    with safe_open(str(shipped / "unet" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    loaded = VideoPipeline.from_pretrained(shipped)  # float32 again
    assert loaded.model.index.text_encoder == "minilm" and loaded.model.text_encoder.max_length == 12
    assert next(loaded.model.stages["base"].parameters()).dtype == torch.float32
    before = pipe("a red circle", seed=1, progress=False).frames.astype(int)
    after = loaded("a red circle", seed=1, progress=False).frames.astype(int)
    assert np.abs(before - after).max() <= 8  # half-precision rounding of the weights


def test_sampling_settings_out_of_range_are_refused_when_written_and_when_read(tmp_path):
    import json

    from vidgen.errors import VidgenError
    from vidgen.shipping import package_model

    minilm_pipeline().save_pretrained(tmp_path / "trained")
    with pytest.raises(VidgenError, match=r"sr.strength must be in \(0, 1\], got 2.0"):
        package_model(tmp_path / "trained", tmp_path / "bad", settings={"sr": {"strength": 2.0}})
    assert not (tmp_path / "bad").exists()  # nothing half-written
    with pytest.raises(VidgenError, match=r"interp.strength must be in \(0, 1\], got 0.0"):
        package_model(tmp_path / "trained", tmp_path / "bad", settings={"interp": {"strength": 0.0}})
    index = json.loads((tmp_path / "trained" / "vidgen.json").read_text())
    index["frame_noise_correlation"] = 1.0  # a hand-edited model folder
    (tmp_path / "trained" / "vidgen.json").write_text(json.dumps(index))
    with pytest.raises(VidgenError, match=r"frame_noise_correlation must be in \[0, 1\), got 1.0"):
        VideoPipeline.from_pretrained(tmp_path / "trained")


def test_packaging_sets_the_sampling_settings_it_is_given_and_names_bad_ones(tmp_path):
    from vidgen.errors import VidgenError
    from vidgen.shipping import package_model

    minilm_pipeline().save_pretrained(tmp_path / "trained")
    package_model(tmp_path / "trained", tmp_path / "shipped",
                  settings={"defaults": {"num_inference_steps": 7, "guidance_scale": 5}})
    index = VideoPipeline.from_pretrained(tmp_path / "shipped").model.index
    assert (index.defaults.num_inference_steps, index.defaults.guidance_scale) == (7, 5.0)
    with pytest.raises(VidgenError, match="defaults.steps is not a setting"):
        package_model(tmp_path / "trained", tmp_path / "bad", settings={"defaults": {"steps": 7}})
    with pytest.raises(VidgenError, match="no settings section 'base'"):
        package_model(tmp_path / "trained", tmp_path / "bad", settings={"base": {"steps": 7}})


def test_packaging_can_take_the_base_stage_from_a_later_video_run(tmp_path):
    from vidgen.errors import VidgenError
    from vidgen.shipping import package_model

    first = minilm_pipeline()
    first.save_pretrained(tmp_path / "cascade")
    later = minilm_pipeline()
    with torch.no_grad():  # the later run's weights moved on
        for weight in later.model.stages["base"].parameters():
            weight.add_(0.01 * torch.randn_like(weight))
    later.save_pretrained(tmp_path / "later")
    package_model(tmp_path / "cascade", tmp_path / "shipped", base=tmp_path / "later")
    shipped = VideoPipeline.from_pretrained(tmp_path / "shipped").model.stages["base"].state_dict()
    weights = {key: value.half().float() for key, value in later.model.stages["base"].state_dict().items()}
    assert all(torch.equal(shipped[key], weights[key]) for key in weights)
    assert not all(torch.equal(shipped[k], v.half().float()) for k, v in first.model.stages["base"].state_dict().items())
    later.model.index.frame_noise_correlation = 0.5
    later.save_pretrained(tmp_path / "other-prior")
    with pytest.raises(VidgenError, match="the stages must share one frame-noise prior"):
        package_model(tmp_path / "cascade", tmp_path / "bad", base=tmp_path / "other-prior")
    assert not (tmp_path / "bad").exists()


# --- the anchored base stage (explicit image conditioning) ---------------------------------------

def test_anchored_unet_starts_as_the_base_model_whatever_anchor_it_reads(base):
    model = cascade.anchored_unet(base).eval()
    assert model.options.extra_in_channels == 5 and model.options.extra_conditions == ()
    x, text = torch.randn(2, 4, 6, 16, 16), torch.randn(2, 7, TEXT_DIM)
    with torch.no_grad():
        expected = base(x, 10, text, fps=8)
        out = model(cascade.anchor_input(x, torch.randn(2, 4, 16, 16), 3), 10, text, fps=8)
    assert (out - expected).abs().max() < 1e-5
    with torch.no_grad():  # a trained anchor input ...
        model.input_extension.weight.normal_()
    interp = cascade.interpolation_unet(model)  # ... is not what interpolation reads, though as wide
    assert interp.options.extra_in_channels == model.options.extra_in_channels
    assert interp.input_extension.weight.abs().max() == 0


def test_anchor_input_tiles_the_anchor_over_frames_with_each_frames_offset_from_it():
    assert [cascade.anchor_index(16, p) for p in (0.0, 0.5, 1.0)] == [0, 8, 15]
    assert cascade.anchor_index(1, 0.5) == 0
    latents, anchor = torch.randn(2, 4, 5, 3, 3), torch.randn(2, 4, 3, 3)
    inputs = cascade.anchor_input(latents, anchor, index=1)
    assert inputs.shape == (2, 9, 5, 3, 3)
    assert torch.equal(inputs[:, :4], latents)
    assert all(torch.equal(inputs[:, 4:8, j], anchor) for j in range(5))
    assert inputs[1, 8, :, 2, 0].tolist() == [-0.25, 0.0, 0.25, 0.5, 0.75]  # (j - 1) / (5 - 1)


@pytest.fixture
def anchored_pipe(sd_image_model):
    """A pipeline whose base stage takes an anchor frame drawn by a copy of its own image U-Net."""
    from diffusers import UNet2DConditionModel

    pipe = VideoPipeline.from_image_model(sd_image_model)
    image_unet = UNet2DConditionModel.from_config(pipe.model.stages["base"].unet.config)
    image_unet.load_state_dict(pipe.model.stages["base"].unet.state_dict())
    anchored = cascade.anchored_unet(pipe.model.stages["base"])
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking anchor input
        anchored.input_extension.weight.normal_(std=0.1)
    pipe.model.set_stage("base", anchored.eval())
    pipe.model.set_anchor(image_unet, position=0.5)
    return pipe


def test_an_anchored_base_stage_makes_the_clip_around_a_frame_the_image_unet_draws_first(anchored_pipe, tmp_path,
                                                                                           monkeypatch):
    run = dict(num_frames=5, height=32, width=32, num_inference_steps=2, seed=3, progress=False)
    drawn, seen = [], []
    draw = anchored_pipe._draw_anchor
    monkeypatch.setattr(anchored_pipe, "_draw_anchor", lambda *a: drawn.append(draw(*a)) or drawn[-1])
    forward = anchored_pipe.model.stages["base"].forward
    monkeypatch.setattr(anchored_pipe.model.stages["base"], "forward", lambda x, *a, **k: seen.append(x) or forward(x, *a, **k))
    out = anchored_pipe("a red circle", **run)
    clip = out.frames
    assert clip.shape == (1, 5, 32, 32, 3)
    assert list(out.timings) == ["text", "anchor", "base", "decode"]
    [anchor] = drawn
    assert anchor.shape == (1, 4, 16, 16) and len(seen) == 2  # one call per step, both guidance branches in it
    for x in seen:  # every frame of both branches reads the anchor, and its offset from frame 2
        assert x.shape == (2, 9, 5, 16, 16) and all(torch.equal(x[i, 4:8, j], anchor[0]) for i in range(2) for j in range(5))
        assert x[0, 8, :, 0, 0].tolist() == [-0.5, -0.25, 0.0, 0.25, 0.5]

    anchored_pipe.save_pretrained(tmp_path / "model")
    index = json.loads((tmp_path / "model" / "vidgen.json").read_text())
    assert index["anchor"] == {"image_model": "anchor", "position": 0.5}
    assert (tmp_path / "model" / "anchor" / "config.json").is_file()
    loaded = VideoPipeline.from_pretrained(tmp_path / "model")
    assert np.array_equal(loaded("a red circle", **run).frames, clip)
    with torch.no_grad():  # another anchor image model, another clip
        for weight in loaded.model.image_unet.parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    assert not np.array_equal(loaded("a red circle", **run).frames, clip)


def test_an_anchored_base_stage_without_its_image_model_or_an_image_model_without_one_is_refused(anchored_pipe,
                                                                                                 tmp_path):
    from diffusers import UNet2DConditionModel

    from vidgen.weights import CheckpointError

    with pytest.raises(CheckpointError, match="no text-to-image U-Net to draw it"):
        anchored_pipe.model.set_anchor(None)
    anchored_pipe.save_pretrained(tmp_path / "model")
    index = json.loads((tmp_path / "model" / "vidgen.json").read_text())
    (tmp_path / "model" / "vidgen.json").write_text(json.dumps({**index, "anchor": {"image_model": "", "position": 0.5}}))
    with pytest.raises(CheckpointError, match="no text-to-image U-Net to draw it"):
        VideoPipeline.from_pretrained(tmp_path / "model")
    unanchored = minilm_pipeline()
    with pytest.raises(CheckpointError, match="does not take an anchor frame"):
        unanchored.model.set_anchor(UNet2DConditionModel.from_config(unanchored.model.stages["base"].unet.config))
    (tmp_path / "model" / "vidgen.json").write_text(json.dumps({**index, "anchor": {"image_model": "anchor",
                                                                                     "position": 1.5}}))
    with pytest.raises(CheckpointError, match=r"anchor.position must be in \[0, 1\]"):
        VideoPipeline.from_pretrained(tmp_path / "model")


def test_packaging_takes_a_later_anchored_base_stage_with_its_image_model_in_half_precision(tmp_path):
    from diffusers import UNet2DConditionModel
    from safetensors import safe_open

    from vidgen.shipping import package_model

    minilm_pipeline().save_pretrained(tmp_path / "cascade")
    later = minilm_pipeline()
    image_unet = UNet2DConditionModel.from_config(later.model.stages["base"].unet.config)
    later.model.set_stage("base", cascade.anchored_unet(later.model.stages["base"]))
    later.model.set_anchor(image_unet, position=0.25)
    later.save_pretrained(tmp_path / "later")
    package_model(tmp_path / "cascade", tmp_path / "shipped", base=tmp_path / "later")
    with safe_open(str(tmp_path / "shipped" / "anchor" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_tensor(key).dtype for key in f.keys()} == {torch.float16}
    shipped = VideoPipeline.from_pretrained(tmp_path / "shipped")
    assert shipped.model.image_unet is not None and shipped.model.index.anchor.position == 0.25
    assert shipped("a red circle", seed=0, progress=False).frames.shape == (1, 2, 32, 32, 3)
