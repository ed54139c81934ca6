import copy

import pytest
import torch
from einops import rearrange
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from vidgen import VideoUNet, inflate_unet
from vidgen.checkpoint import CheckpointError, save_tensors
from vidgen.errors import VidgenError
from vidgen.models.inflate import TEMPORAL_PREFIXES, _FrameContext, _TemporalHook
from vidgen.models.temporal import TemporalAttention

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
    if option == "temporal_text":  # one cross-attention per temporal attention
        assert added == {f"temporal_text.{site}.{name}" for site in plain.temporal_attns
                         for name in ("norm.weight", "norm.bias", "to_q.weight", "to_kv.weight", "to_out.weight",
                                      "to_out.bias", "position")}
        last = next(iter(model.temporal_text.values())).to_out.weight
    elif option == "motion_attention":  # one per temporal attention below the full latent resolution
        assert {k.split(".")[1] for k in added} == {site for site in plain.temporal_attns
                                                    if not site.startswith(("down_blocks_0_", "up_blocks_3_"))}
        last = next(iter(model.motion_attns.values())).to_out.weight
    elif option == "text_bag":
        assert added == {f"text_bag.{name}" for name in ("word.weight", "word.bias", "norm.weight", "norm.bias",
                                                          "linear_1.weight", "linear_1.bias", "linear_2.weight",
                                                          "linear_2.bias")}
        last = model.text_bag.linear_2.weight
    elif option == "text_queries":
        assert added == {f"text_queries.{name}" for name in ("queries", "keys.weight", "linear_1.weight", "linear_1.bias",
                                                              "linear_2.weight", "linear_2.bias")}
        last = model.text_queries.linear_2.weight
    else:
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


@torch.no_grad()
def test_text_queries_start_at_nothing_and_once_trained_can_read_one_word_alone(tiny_unet, tmp_path):
    plain = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8, text_embedding=True))
    model, (sample, timestep, text) = add_at_zero(plain, "text_queries", 3)
    assert model.text_embedding is not None  # the mean-pooled embedding stays beside it
    clip = model(sample, timestep, text, fps=8)
    assert (clip - plain(sample, timestep, text, fps=8)).abs().mean() > 1e-3
    assert (model(sample, timestep, text.flip(0), fps=8) - clip).abs().mean() > 1e-3  # the prompt decides
    embedding = model.text_queries
    word = 3
    embedding.keys.weight.copy_(torch.eye(text.shape[-1]))
    embedding.queries.copy_(20.0 * text[:1, word].expand_as(embedding.queries))  # every query seeks one token
    weights = embedding.weights(text[:1])  # (1 q n)
    assert torch.allclose(weights.sum(-1), torch.ones(1, weights.shape[1]))
    assert (weights[..., word] > 0.99).all()
    others_changed = text[:1].clone()
    others_changed[:, [i for i in range(text.shape[1]) if i != word]] += torch.randn_like(others_changed[:, 1:])
    word_changed = text[:1].clone()
    word_changed[:, word] += torch.randn_like(word_changed[:, word])
    reference = embedding(text[:1])
    # The other tokens barely move what it reads; a mean over tokens would move with them.
    assert (embedding(others_changed) - reference).abs().max() < 0.05 * (embedding(word_changed) - reference).abs().max()
    clip = model(sample, timestep, text, fps=8)  # with the queries set above
    check_images_untouched_and_reload(model, plain, (sample, timestep, text), clip, "text_queries", tmp_path / "m")


@torch.no_grad()
def test_text_bag_starts_at_nothing_and_keeps_one_words_change_whole_whatever_the_prompts_length(tiny_unet, tmp_path):
    plain = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8))
    model, (sample, timestep, text) = add_at_zero(plain, "text_bag", 3)
    clip = model(sample, timestep, text, fps=8)
    assert (clip - plain(sample, timestep, text, fps=8)).abs().mean() > 1e-3
    assert (model(sample, timestep, text.flip(0), fps=8) - clip).abs().mean() > 1e-3  # the prompt decides
    # Summed after a per-token nonlinearity: one word changed moves the bag by that word's own
    # features alone, however many other tokens the prompt has (a mean would shrink it by n).
    bag = model.text_bag
    features = lambda t: bag.act(bag.word(t)).sum(dim=1)  # (b w), what linear_1 reads
    short, word = text[:1], 2
    long = torch.cat([short, torch.randn(1, 3 * short.shape[1], short.shape[2])], dim=1)  # the same words and more
    for prompt in (short, long):
        changed = prompt.clone()
        changed[:, word] = torch.randn(short.shape[-1], generator=torch.Generator().manual_seed(3))
        expected = bag.act(bag.word(changed[:, word])) - bag.act(bag.word(prompt[:, word]))
        assert torch.allclose(features(changed) - features(prompt), expected, atol=1e-5)
    # The MLP reads the bag at unit scale, however long the prompt and large its tokens: summed
    # raw, MiniLM-sized tokens drove every hidden unit far negative (dead) in training.
    for scale in (1.0, 30.0):
        hidden_input = bag.linear_1(bag.norm(features(scale * long)))
        assert hidden_input.std() < 3 and (hidden_input > 0).float().mean() > 0.2
    check_images_untouched_and_reload(model, plain, (sample, timestep, text), clip, "text_bag", tmp_path / "m")


@torch.no_grad()
def test_text_words_send_the_second_half_of_the_prompt_to_the_queries_and_the_first_to_cross_attention(tiny_unet,
                                                                                                    tmp_path):
    from vidgen.models.inflate import with_options

    plain = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8, text_embedding=True))
    with pytest.raises(VidgenError, match="set text_queries or text_bag too"):
        with_options(plain, text_words=True)
    model = with_options(plain, text_queries=True, text_words=True)
    torch.nn.init.normal_(model.text_queries.linear_2.weight, std=0.1)  # as if trained
    sample, timestep, tokens = inputs(3)
    words = torch.randn_like(tokens)
    clip = model(sample, timestep, torch.cat([tokens, words], dim=1), fps=8)  # (b 2n d): in context, then word by word
    # Cross-attention and the mean-pooled embedding read the tokens in context: with the queries
    # back at zero the model is `plain` on the first half, whatever the second holds.
    queries_off = copy.deepcopy(model)
    queries_off.text_queries.linear_2.weight.zero_()
    assert torch.allclose(queries_off(sample, timestep, torch.cat([tokens, words.flip(0)], dim=1), fps=8),
                          plain(sample, timestep, tokens, fps=8), atol=1e-5)
    # The queries read the second half: other words change the clip, through them alone.
    other_words = model(sample, timestep, torch.cat([tokens, words.flip(0)], dim=1), fps=8)
    assert (other_words - clip).abs().mean() > 1e-3
    weights_seen = model.text_queries.weights(words)
    assert torch.allclose(weights_seen.sum(-1), torch.ones_like(weights_seen.sum(-1)))
    one_frame = sample[:, :, :1]  # images: no text embeddings, so the word half is unused
    assert torch.allclose(model(one_frame, timestep, torch.cat([tokens, words], dim=1)),
                          plain(one_frame, timestep, tokens), atol=1e-5)
    model.save_pretrained(tmp_path / "m")
    loaded = VideoUNet.from_pretrained(tmp_path / "m")
    assert loaded.options.text_words and loaded.options.text_queries
    assert torch.allclose(loaded(sample, timestep, torch.cat([tokens, words], dim=1), fps=8), clip, atol=1e-5)


@torch.no_grad()
def test_word_table_starts_at_nothing_and_gives_each_word_its_own_vector_whatever_the_others(tiny_unet, tmp_path):
    from vidgen.models.inflate import with_options
    from vidgen.text import residue_moduli

    plain = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8))
    with pytest.raises(VidgenError, match="set one of them"):
        with_options(plain, word_table=True, text_words=True, text_queries=True)
    model = with_options(plain, word_table=True)
    assert model.options.words == "ids"
    assert set(model.temporal_state_dict()) - set(plain.temporal_state_dict()) == {"word_table.table.weight"}
    assert any(p is model.word_table.table.weight for p in model.temporal_parameters())
    sample, timestep, tokens = inputs(3)
    n, d = tokens.shape[1:]

    p, q = residue_moduli(d)  # 15 and 17

    def codes(*ids):  # (b n d): the codes of TextEncoder.word_codes, zeros past the words
        out = torch.zeros(len(ids), n, d)
        for row, words in enumerate(ids):
            for place, word in enumerate(words):
                out[row, place, word % p] = out[row, place, p + word % q] = 1
        return out

    red = codes([3, 7, 40], [3, 7, 41])  # "a red ... left", "a red ... right"
    blue = codes([3, 9, 40], [3, 9, 41])  # the same with another color word
    clip = model(sample, timestep, torch.cat([tokens, red], dim=1), fps=8)
    assert torch.allclose(clip, plain(sample, timestep, tokens, fps=8), atol=1e-5)  # zero at the start
    torch.nn.init.normal_(model.word_table.table.weight, std=0.3)  # as if trained
    clip = model(sample, timestep, torch.cat([tokens, red], dim=1), fps=8)
    assert (model(sample, timestep, torch.cat([tokens, red.flip(0)], dim=1), fps=8) - clip).abs().mean() > 1e-3
    # A bag of the words' own vectors: changing one word moves it by that word's vector alone,
    # whatever the other words are and wherever it stands.
    table = model.word_table
    left_minus_right = table(red) - table(red.flip(0))  # rows: [..., 40] - [..., 41], then the reverse
    assert torch.allclose(table(blue) - table(blue.flip(0)), left_minus_right, atol=1e-6)
    assert torch.allclose(table(codes([40, 3, 7], [41, 7, 3])), table(red), atol=1e-6)
    weight = table.table.weight  # (e d): a word's vector is its two columns
    assert torch.allclose(left_minus_right[0], weight[:, 40 % p] + weight[:, p + 40 % q]
                          - weight[:, 41 % p] - weight[:, p + 41 % q], atol=1e-6)
    with pytest.raises(VidgenError, match="takes \\(b, 2n, d\\)"):  # the tokens alone: nothing to split
        model(sample, timestep, tokens, fps=8)
    one_frame = sample[:, :, :1]  # images: no text embeddings, so the codes are unused
    assert torch.allclose(model(one_frame, timestep, torch.cat([tokens, red], dim=1)),
                          plain(one_frame, timestep, tokens), atol=1e-5)
    model.save_pretrained(tmp_path / "m")
    loaded = VideoUNet.from_pretrained(tmp_path / "m")
    assert loaded.options.word_table
    assert torch.allclose(loaded(sample, timestep, torch.cat([tokens, red], dim=1), fps=8), clip, atol=1e-5)


@torch.no_grad()
def test_frame_prompt_starts_at_nothing_and_once_trained_gives_each_frame_its_own_prompt(tiny_unet, tmp_path):
    plain = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8))
    model, (sample, timestep, text) = add_at_zero(plain, "frame_prompt", 4)
    prompts = model.frame_prompt(text, 4)  # (b f n d)
    assert prompts.shape == (2, 4, *text.shape[1:])
    offsets = prompts - text[:, None]
    assert (offsets[:, 0] - offsets[:, 3]).abs().mean() > 1e-3  # the first and last frame read different prompts
    token_to_token = offsets[:, :, 0] - offsets[:, :, 1]  # two tokens of one frame
    assert token_to_token.abs().mean() > 1e-3  # not one shift for all tokens (that would change no attention weight)
    clip = model(sample, timestep, text, fps=8)
    assert (clip - plain(sample, timestep, text, fps=8)).abs().mean() > 1e-3
    check_images_untouched_and_reload(model, plain, (sample, timestep, text), clip, "frame_prompt", tmp_path / "m")


@torch.no_grad()
def test_temporal_text_starts_at_nothing_and_once_trained_reads_each_prompt_token_at_each_frame(tiny_unet, tmp_path):
    plain = perturb_temporal_(inflate_unet(tiny_unet, max_frames=8))
    model, (sample, timestep, text) = add_at_zero(plain, "temporal_text", 4)
    for layer in model.temporal_text.values():  # every site as if trained, queries included
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    clip = model(sample, timestep, text, fps=8)
    assert (clip - plain(sample, timestep, text, fps=8)).abs().mean() > 1e-3
    one_token_changed = text.clone()
    one_token_changed[:, 3] = torch.randn_like(text[:, 3])  # the tokens themselves, not a pooled vector, are read
    assert (model(sample, timestep, one_token_changed, fps=8) - clip).abs().mean() > 1e-4
    layer = next(iter(model.temporal_text.values()))
    x = torch.randn(2, 4, 5, layer.to_q.in_features)  # (b f p c): one pixel row in every frame
    still = x[:, :1].expand(-1, 4, -1, -1)  # the same features at every frame
    added = layer(still, text) - still
    assert (added[:, 0] - added[:, 3]).abs().mean() > 1e-3  # the queries know the frame
    assert torch.allclose(layer(x[:1], text[:1]), layer(x, text)[:1], atol=1e-6)  # a clip reads only its own prompt
    check_images_untouched_and_reload(model, plain, (sample, timestep, text), clip, "temporal_text", tmp_path / "m")


@torch.no_grad()
def test_motion_attention_starts_at_nothing_and_once_trained_mixes_pixels_across_frames_as_the_prompt_says(
        sd15_layout_unet, tmp_path):
    plain = perturb_temporal_(inflate_unet(sd15_layout_unet, max_frames=8))
    model, (sample, timestep, text) = add_at_zero(plain, "motion_attention", 3)
    assert len(model.motion_attns) == 11  # levels 1-3 of the SD 1.5 layout; none at the full latent size
    for layer in model.motion_attns.values():  # as if trained: the coefficients too
        torch.nn.init.normal_(layer.linear_2.weight, std=0.5)
    clip = model(sample, timestep, text, fps=8)
    assert (clip - plain(sample, timestep, text, fps=8)).abs().mean() > 1e-3
    layer = next(iter(model.motion_attns.values()))
    x = torch.randn(2, 3, 2, 2, layer.to_out.in_features)  # (b f h w c)
    moved = x.clone()
    moved[:, 2, 0, 0] += torch.randn_like(x[:, 2, 0, 0])  # one pixel of the last frame changes ...
    assert (layer(moved, text) - layer(x, text))[:, 0].abs().amax() > 1e-4  # ... and the first frame reads it
    assert (layer(x, text) - layer(x, text.flip(0))).abs().mean() > 1e-4  # the prompt sets the mixing
    assert torch.allclose(layer(x[:1], text[:1]), layer(x, text)[:1], atol=1e-6)  # a clip reads only its own prompt
    check_images_untouched_and_reload(model, plain, (sample, timestep, text), clip, "motion_attention", tmp_path / "m")


def test_motion_attention_bias_is_the_prompts_quadratic_form_in_each_keys_offset_from_its_query():
    from vidgen.models.temporal import MotionAttention

    layer = MotionAttention(channels=16, text_dim=8, attention_head_dim=8)  # 2 heads
    basis = MotionAttention.BASIS
    with torch.no_grad():  # coefficients that ignore the prompt: head 0 weighs dt*dx, head 1 dx
        layer.linear_2.bias.zero_()
        layer.linear_2.bias[basis.index("dt_dx")] = 1.0
        layer.linear_2.bias[len(basis) + basis.index("dx")] = 1.0
    bias = layer.bias(torch.randn(1, 5, 8), f=3, h=4, w=4)  # (1 heads N N), tokens in (f h w) order
    assert bias.shape == (1, 2, 48, 48)
    query, key = 0 * 16 + 1 * 4 + 1, 2 * 16 + 1 * 4 + 3  # (t y x) = (0 1 1) and (2 1 3)
    dt, dx = 2 / MotionAttention.FRAMES_PER_UNIT, 2 / (4 / MotionAttention.SIDE_UNITS)  # key minus query, in units
    assert torch.allclose(bias[0, :, query, key], torch.tensor([dt * dx, dx]))
    assert torch.allclose(bias[0, :, key, query], torch.tensor([dt * dx, -dx]))  # the reverse offset
    assert torch.equal(bias[0, :, query, query], torch.zeros(2))


def test_motion_attention_is_refused_where_the_unet_has_no_attention_below_full_size():
    from conftest import TINY_UNET, make_unet

    no_coarse_attention = make_unet({**TINY_UNET, "mid_block_type": "UNetMidBlock2D"})  # attention at level 0 only
    with pytest.raises(VidgenError, match="motion_attention adds a layer .* this U-Net has none"):
        inflate_unet(no_coarse_attention, max_frames=8, motion_attention=True)


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
    hook = _TemporalHook(layer, _FrameContext(num_frames=2))
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
