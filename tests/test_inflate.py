import copy
import json

import pytest
import torch
from einops import rearrange
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from vidgen import VideoUNet, inflate_unet
from vidgen.errors import VidgenError
from vidgen.models.hooks import FrameContext, TemporalHook
from vidgen.models.inflate import TEMPORAL_PREFIXES
from vidgen.models.temporal import TemporalAttention
from vidgen.weights import CheckpointError, load_tensors, save_tensors

TEXT_DIM = 32


def inputs(frames: int, batch: int = 2, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, frames, size, size, generator=g)  # (b c f h w)
    timestep = torch.tensor([10, 700])[:batch]
    text = torch.randn(batch, 7, TEXT_DIM, generator=g)  # (b n d)
    return sample, timestep, text


def per_frame(unet2d, sample, timestep, text):
    """The image U-Net applied to every frame on its own: the reference an inflated U-Net starts at."""
    frames = [unet2d(sample[:, :, i], timestep, text).sample for i in range(sample.shape[2])]
    return torch.stack(frames, dim=2)  # (b c f h w)


def perturb_temporal_(model: VideoUNet) -> VideoUNet:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.temporal_parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("frames", [1, 2, 5])
@torch.no_grad()
def test_inflated_unet_equals_image_unet_frame_by_frame(tiny_unet, frames):
    model = inflate_unet(tiny_unet, max_frames=8)
    sample, timestep, text = inputs(frames)
    out = model(sample, timestep, text, fps=8)
    assert out.shape == sample.shape
    assert (out - per_frame(tiny_unet, sample, timestep, text)).abs().max() < 1e-5


def add_at_zero(plain: VideoUNet, option: str, frames: int):
    """`plain` with the conditioning layer `option` added; checks it is new, trainable and adds nothing yet."""
    from vidgen.models.inflate import with_options

    model = with_options(plain, **{option: True})
    added = {k for k in model.temporal_state_dict()} - set(plain.temporal_state_dict())
    assert added == {f"{option}.linear_{i}.{kind}" for i in (1, 2) for kind in ("weight", "bias")}
    last = getattr(model, option).linear_2.weight
    assert last.requires_grad and any(p is last for p in model.temporal_parameters())
    sample, timestep, text = inputs(frames)
    assert (model(sample, timestep, text, fps=8) - plain(sample, timestep, text, fps=8)).abs().max() < 1e-5
    torch.nn.init.normal_(last, std=0.1)  # as if trained
    return model, (sample, timestep, text)


def check_images_untouched_and_reload(model: VideoUNet, plain: VideoUNet, inputs_, clip, option: str, folder) -> None:
    sample, timestep, text = inputs_
    one_frame = sample[:, :, :1]
    assert torch.allclose(model(one_frame, timestep, text), plain(one_frame, timestep, text), atol=1e-5)  # images: no
    model.save_pretrained(folder)
    loaded = VideoUNet.from_pretrained(folder)
    assert getattr(loaded.options, option)
    assert torch.allclose(loaded(sample, timestep, text, fps=8), clip, atol=1e-5)


@torch.no_grad()
def test_text_embedding_starts_at_nothing_and_once_trained_tells_prompts_apart_in_clips_only(tiny_unet, tmp_path):
    plain = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8))
    model, (sample, timestep, text) = add_at_zero(plain, "text_embedding", 3)
    other_text = text.flip(0)  # the two prompts swapped
    clips = model(sample, timestep, text, fps=8), model(sample, timestep, other_text, fps=8)
    added = [clip - plain(sample, timestep, t, fps=8) for clip, t in zip(clips, (text, other_text))]
    assert added[0].abs().mean() > 1e-3  # the embedding changes clips ...
    assert (added[0] - added[1]).abs().mean() > 1e-3  # ... by what the prompt says
    check_images_untouched_and_reload(model, plain, (sample, timestep, text), clips[0], "text_embedding", tmp_path / "m")


def test_sd15_layout_inflates_with_a_temporal_layer_after_every_resnet_and_transformer(sd15_layout_unet):
    model = inflate_unet(sd15_layout_unet, max_frames=8)
    resnets = sum(isinstance(m, ResnetBlock2D) for m in sd15_layout_unet.modules())
    transformers = sum(isinstance(m, Transformer2DModel) for m in sd15_layout_unet.modules())
    assert (len(model.temporal_convs), len(model.temporal_attns)) == (resnets, transformers) == (22, 16)
    sample, timestep, text = inputs(3)
    out = model(sample, timestep, text, fps=torch.tensor([4.0, 24.0]))
    assert (out - per_frame(sd15_layout_unet, sample, timestep, text)).abs().max() < 1e-5


@torch.no_grad()
def test_sd2_layout_with_linear_projections_and_per_block_heads_inflates_exactly(sd2_layout_unet):
    model = inflate_unet(sd2_layout_unet, max_frames=8)
    sample, timestep, text = inputs(2)
    assert (model(sample, timestep, text) - per_frame(sd2_layout_unet, sample, timestep, text)).abs().max() < 1e-5


@pytest.mark.parametrize("wrap, unwrap", [
    (lambda x: x, lambda out: out),
    (lambda x: (x,), lambda out: out[0]),  # what Transformer2DModel returns inside the U-Net's blocks
    (lambda x: Transformer2DModelOutput(sample=x), lambda out: out.sample),
])
def test_hooks_take_a_tensor_a_tuple_or_an_output_object(wrap, unwrap):
    torch.manual_seed(0)
    layer = TemporalAttention(8, max_frames=4)
    torch.nn.init.normal_(layer.to_out.weight)
    hook = TemporalHook(layer, FrameContext(num_frames=2))
    hidden = torch.randn(2 * 2, 8, 3, 3)  # ((b f) c h w)
    expected = rearrange(layer(rearrange(hidden, "(b f) c h w -> (b h w) f c", f=2)),
                         "(b h w) f c -> (b f) c h w", h=3, w=3)
    assert torch.equal(unwrap(hook(None, (), wrap(hidden))), expected)


@torch.no_grad()
def test_one_frame_or_enable_time_false_skips_the_temporal_layers(tiny_unet):
    model = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8))
    sample, timestep, text = inputs(4)
    reference = per_frame(tiny_unet, sample, timestep, text)
    assert (model(sample, timestep, text, fps=8) - reference).abs().max() > 1e-3  # trained layers act
    assert (model(sample, timestep, text, fps=8, enable_time=False) - reference).abs().max() < 1e-5
    single = sample[:, :, :1]
    assert (model(single, timestep, text, fps=8) - reference[:, :, :1]).abs().max() < 1e-5


@torch.no_grad()
def test_spatial_modules_are_reused_and_the_image_unet_stays_2d_outside_forward(tiny_unet):
    model = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8))
    assert model.unet is tiny_unet
    sample, timestep, text = inputs(3)
    before = per_frame(tiny_unet, sample, timestep, text)
    model(sample, timestep, text)
    assert torch.equal(per_frame(tiny_unet, sample, timestep, text), before)
    with pytest.raises(VidgenError, match="already inside a VideoUNet"):
        inflate_unet(tiny_unet)


def test_weights_copy_strictly_only_temporal_keys_are_new(tiny_unet):
    image_keys = set(tiny_unet.state_dict())
    model = inflate_unet(tiny_unet)
    keys = set(model.state_dict())
    assert {k for k in keys if k.startswith("unet.")} == {f"unet.{k}" for k in image_keys}
    assert all(k.startswith(TEMPORAL_PREFIXES) for k in keys if not k.startswith("unet."))
    n_spatial = sum(p.numel() for p in model.spatial_parameters())
    n_temporal = sum(p.numel() for p in model.temporal_parameters())
    assert n_spatial == sum(p.numel() for p in tiny_unet.parameters())
    assert n_spatial + n_temporal == sum(p.numel() for p in model.parameters())


def test_frozen_spatial_part_leaves_gradients_to_temporal_parameters_only(tiny_unet):
    model = inflate_unet(tiny_unet, max_frames=8).freeze_spatial()
    perturb_temporal_(model)  # non-zero output projections, so gradients reach every temporal weight
    sample, timestep, text = inputs(3)
    model(sample, timestep, text, fps=8).square().mean().backward()
    assert all(p.grad is None for p in model.spatial_parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.temporal_parameters())


def test_gradient_checkpointing_gives_the_same_gradients(tiny_unet):
    model = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8))
    sample, timestep, text = inputs(3)

    def grads():
        model.zero_grad()
        model(sample, timestep, text, fps=8).square().mean().backward()
        return [p.grad.clone() for p in model.temporal_parameters()]

    plain = grads()
    model.enable_gradient_checkpointing()
    model.train()
    for a, b in zip(plain, grads()):
        torch.testing.assert_close(a, b)


@torch.no_grad()
def test_deepcopy_is_an_independent_model(tiny_unet):
    model = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8))
    twin = copy.deepcopy(model)
    sample, timestep, text = inputs(3)
    out = model(sample, timestep, text)
    assert torch.equal(twin(sample, timestep, text), out)
    for p in twin.temporal_parameters():
        p.zero_()
    assert torch.equal(model(sample, timestep, text), out)


def test_more_frames_than_the_position_table_is_refused_with_the_limit(tiny_unet):
    model = inflate_unet(tiny_unet, max_frames=4)
    sample, timestep, text = inputs(5)
    with pytest.raises(VidgenError, match="max_frames=4"):
        model(sample, timestep, text)


def test_unknown_inflation_option_names_the_known_ones(tiny_unet):
    with pytest.raises(VidgenError, match="max_frames, attention_head_dim"):
        inflate_unet(tiny_unet, max_frame=8)


@torch.no_grad()
def test_save_and_load_round_trip_gives_identical_outputs(tiny_unet, tmp_path):
    model = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8))
    model.save_pretrained(tmp_path / "unet")
    files = sorted(p.name for p in (tmp_path / "unet").iterdir())
    assert files == ["config.json", "model.safetensors", "temporal.json"]
    loaded = VideoUNet.from_pretrained(tmp_path / "unet").eval()
    sample, timestep, text = inputs(3)
    assert torch.equal(loaded(sample, timestep, text, fps=12), model(sample, timestep, text, fps=12))
    assert loaded.options == model.options


def test_loading_a_folder_that_does_not_match_names_the_keys(tiny_unet, tmp_path):
    inflate_unet(tiny_unet, max_frames=8).save_pretrained(tmp_path / "unet")
    (tmp_path / "unet" / "temporal.json").write_text('{"max_frames": 16, "attention_head_dim": 64}')
    shape_mismatch = r"different shape: temporal_attns\..*position \(file \(8, \d+\), model \(16"
    with pytest.raises(CheckpointError, match=shape_mismatch):
        VideoUNet.from_pretrained(tmp_path / "unet")


OLD_SWITCHES = ("an_old_layer", "another_old_layer")  # switches an earlier vidgen wrote, which this one lacks


@torch.no_grad()
def test_removed_options_are_ignored_where_off_and_refused_where_on(tiny_unet, tmp_path):
    """Folders written before the experiments were removed list their switches as false."""
    fresh = copy.deepcopy(tiny_unet)
    model = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8, text_embedding=True))
    model.save_pretrained(tmp_path / "unet")
    path = model.save_motion_module(tmp_path / "motion.safetensors")
    temporal = tmp_path / "unet" / "temporal.json"
    written = json.loads(temporal.read_text())
    temporal.write_text(json.dumps({**written, **{name: False for name in OLD_SWITCHES}}))
    loaded = VideoUNet.from_pretrained(tmp_path / "unet")
    assert loaded.options == model.options
    sample, timestep, text = inputs(3)
    assert torch.equal(loaded(sample, timestep, text, fps=8), model(sample, timestep, text, fps=8))
    first, last = OLD_SWITCHES
    temporal.write_text(json.dumps({**written, last: True}))
    with pytest.raises(CheckpointError, match=f"{last} is on, and this version of vidgen has no such option.*"
                                              "docs/experiments.md.*experiments-before-cleanup"):
        VideoUNet.from_pretrained(tmp_path / "unet")
    tensors, metadata = load_tensors(path)
    save_tensors(tensors, path, {**metadata, "options": json.dumps({**written, first: True})})
    with pytest.raises(CheckpointError, match=f"{first} is on, and this version of vidgen has no such option"):
        VideoUNet.from_motion_module(fresh, path)
    with pytest.raises(VidgenError, match=f"unknown inflation options \\['{first}'\\]"):
        inflate_unet(fresh, **{first: True})


def test_loading_image_weights_as_a_video_unet_lists_the_missing_temporal_keys(tiny_unet, tmp_path):
    model = inflate_unet(tiny_unet)
    model.save_pretrained(tmp_path / "unet")
    save_tensors({f"unet.{k}": v for k, v in tiny_unet.state_dict().items()}, tmp_path / "unet" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"keys the model has but the file lacks: fps_embedding\..*more\)"):
        VideoUNet.from_pretrained(tmp_path / "unet")


@torch.no_grad()
def test_motion_module_loads_on_top_of_a_compatible_image_unet(tiny_unet, tmp_path):
    fresh = copy.deepcopy(tiny_unet)
    model = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8, attention_head_dim=8))
    path = model.save_motion_module(tmp_path / "motion.safetensors")
    model.save_pretrained(tmp_path / "full")
    assert path.stat().st_size < 0.5 * (tmp_path / "full" / "model.safetensors").stat().st_size
    loaded = VideoUNet.from_motion_module(fresh, path)
    assert loaded.options == model.options and loaded.unet is fresh
    sample, timestep, text = inputs(3)
    assert torch.equal(loaded(sample, timestep, text, fps=8), model(sample, timestep, text, fps=8))


def test_motion_module_refuses_an_image_unet_of_another_layout(tiny_unet, sd15_layout_unet, tmp_path):
    path = inflate_unet(tiny_unet).save_motion_module(tmp_path / "motion.safetensors")
    with pytest.raises(CheckpointError, match="keys the model has but the file lacks"):
        VideoUNet.from_motion_module(sd15_layout_unet, path)
