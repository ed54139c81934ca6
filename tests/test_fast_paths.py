"""Each fast path gives the plain path's outputs within a stated tolerance, float32 unless said.

Tolerances are relative to the output's scale: max |fast - plain| / max |plain|.

| fast path                                                    | tolerance                        |
|--------------------------------------------------------------|----------------------------------|
| temporal attention by SDPA vs softmax(QK^T / sqrt d) V       | 1e-6                             |
| spatial attention by SDPA vs diffusers' AttnProcessor        | 1e-5                             |
| temporal attention over chunks of sequences                  | 1e-6                             |
| temporal attention and spatial feed-forward in chunks (U-Net)| 1e-5 (gradients: 1e-4)           |
| guidance: both branches in one batch vs one call each        | 1e-5 a prediction, 1e-4 a sample |
| torch.inference_mode vs torch.no_grad                        | bit-identical                    |
| channels-last weights                                        | 1e-5                             |
| bfloat16 autocast vs float32                                 | 3e-2 (relative L2 error)         |
| VAE decode a chunk of frames at a time                       | 1e-5                             |
| torch.compile (aot_eager backend: the graph capture)         | 1e-5                             |

A guided sample's tolerance is wider than a prediction's: guidance at scale w multiplies the
difference of the branches' rounding errors by up to 2w + 1.
"""

import copy

import pytest
import torch
from diffusers import DDIMScheduler
from diffusers.models.attention_processor import AttnProcessor
from einops import rearrange

from conftest import make_vae
from vidgen import inflate_unet
from vidgen.diffusion.sampler import sample
from vidgen.errors import VidgenError
from vidgen.models.temporal import TemporalAttention
from vidgen.models.vae import decode_latents
from vidgen.precision import autocast

TEXT_DIM = 32


def inputs(frames: int = 4, batch: int = 2, size: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sample_ = torch.randn(batch, 4, frames, size, size, generator=g)  # (b c f h w)
    timestep = torch.tensor([10, 700])[:batch]
    text = torch.randn(batch, 7, TEXT_DIM, generator=g)  # (b n d)
    return sample_, timestep, text


def trained_(module: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """Move the temporal layers off the identity, so that they act on the outputs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.temporal_parameters() if hasattr(module, "temporal_parameters") else module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


@pytest.fixture
def video_unet(tiny_unet):
    return trained_(inflate_unet(tiny_unet, max_frames=8, attention_head_dim=8)).eval()


def max_diff(fast: torch.Tensor, plain: torch.Tensor) -> float:
    """max |fast - plain| relative to max |plain|."""
    return ((fast.float() - plain.float()).abs().max() / plain.float().abs().max()).item()


def test_temporal_attention_by_sdpa_equals_the_textbook_formula():
    torch.manual_seed(0)
    layer = trained_(TemporalAttention(32, max_frames=8, attention_head_dim=8), scale=0.5)
    x = torch.randn(6, 5, 32)  # (n f c)
    layer.requires_grad_(False)
    h = layer.norm(x) + layer.position[:5]
    q, k, v = rearrange(layer.to_qkv(h), "n f (three heads d) -> three n heads f d", three=3, heads=layer.heads)
    weights = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(dim=-1)  # (n heads f f)
    expected = x + layer.to_out(rearrange(weights @ v, "n heads f d -> n f (heads d)"))
    assert max_diff(layer(x), expected) < 1e-6


@torch.no_grad()
def test_spatial_attention_by_sdpa_equals_diffusers_plain_processor(video_unet):
    assert {type(p).__name__ for p in video_unet.unet.attn_processors.values()} == {"AttnProcessor2_0"}  # SDPA
    plain = copy.deepcopy(video_unet)
    plain.unet.set_attn_processor(AttnProcessor())  # baddbmm, softmax, bmm
    x, t, text = inputs()
    assert max_diff(video_unet(x, t, text, fps=8), plain(x, t, text, fps=8)) < 1e-5


@torch.no_grad()
def test_temporal_attention_in_chunks_equals_all_at_once():
    torch.manual_seed(0)
    layer = trained_(TemporalAttention(16, max_frames=8, attention_head_dim=8), scale=0.5)
    x = torch.randn(10, 6, 16)  # (n f c)
    whole = layer(x)
    for chunk in (1, 3, 10, 64):
        layer.chunk_size = chunk
        assert max_diff(layer(x), whole) < 1e-6


@torch.no_grad()
def test_chunked_temporal_attention_and_feed_forward_equal_the_plain_unet(video_unet):
    x, t, text = inputs(frames=3)
    plain = video_unet(x, t, text, fps=8)
    video_unet.set_chunk_size(temporal=5, feed_forward=1)
    assert all(layer.chunk_size == 5 for layer in video_unet.temporal_attns.values())
    assert max_diff(video_unet(x, t, text, fps=8), plain) < 1e-5
    video_unet.set_chunk_size()  # off again
    assert torch.equal(video_unet(x, t, text, fps=8), plain)


def test_chunk_sizes_must_be_positive(video_unet):
    with pytest.raises(VidgenError, match="temporal chunk size must be a positive number"):
        video_unet.set_chunk_size(temporal=0)


def test_chunked_path_still_trains_the_temporal_layers(video_unet):
    x, t, text = inputs(frames=3)

    def grads():
        video_unet.zero_grad()
        video_unet(x, t, text, fps=8).square().mean().backward()
        return [p.grad.clone() for p in video_unet.temporal_parameters()]

    plain = grads()
    video_unet.set_chunk_size(temporal=7, feed_forward=2)
    for a, b in zip(plain, grads()):
        assert max_diff(b, a) < 1e-4


@torch.no_grad()
def test_guidance_in_one_batch_equals_two_calls(video_unet):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 4, 3, 8, 8, generator=g)
    cond, uncond = torch.randn(2, 1, 7, TEXT_DIM, generator=g)
    calls = []

    def batched(x, t, c):
        calls.append(x.shape[0])
        return video_unet(x, t, c, fps=8)

    def one_branch_at_a_time(x, t, c):
        return torch.cat([video_unet(xi, t, ci, fps=8) for xi, ci in zip(x.split(1), c.split(1))])

    x, t, both = torch.cat([noise, noise]), torch.tensor(500), torch.cat([uncond, cond])
    assert max_diff(batched(x, t, both), one_branch_at_a_time(x, t, both)) < 1e-5
    calls.clear()
    run = lambda denoise: sample(denoise, DDIMScheduler(), noise, cond, uncond, guidance_scale=5.0,  # noqa: E731
                                 num_inference_steps=2)
    fast = run(batched)
    assert calls == [2, 2]  # one model call a step, both branches in it
    assert max_diff(fast, run(one_branch_at_a_time)) < 1e-4


def test_inference_mode_gives_the_same_bits_as_no_grad(video_unet):
    x, t, text = inputs()
    with torch.no_grad():
        plain = video_unet(x, t, text, fps=8)
    with torch.inference_mode():
        assert torch.equal(video_unet(x, t, text, fps=8), plain)


@torch.no_grad()
def test_channels_last_weights_give_the_same_outputs(video_unet):
    x, t, text = inputs()
    plain = video_unet(x, t, text, fps=8)
    video_unet.to(memory_format=torch.channels_last)
    assert video_unet.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert max_diff(video_unet(x, t, text, fps=8), plain) < 1e-5


@torch.no_grad()
def test_bfloat16_autocast_stays_close_to_float32(video_unet):
    x, t, text = inputs()
    plain = video_unet(x, t, text, fps=8)
    with autocast("cpu", torch.bfloat16):
        fast = video_unet(x, t, text, fps=8)
    assert fast.dtype == torch.bfloat16  # the output convolution ran in bfloat16
    assert ((fast.float() - plain).norm() / plain.norm()).item() < 3e-2


def test_autocast_is_a_no_op_for_float32_and_takes_only_half_precisions():
    with autocast("cpu", torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(VidgenError, match="bfloat16 or float16"):
        autocast("cpu", torch.float64)


@torch.no_grad()
def test_vae_decode_in_chunks_of_frames_equals_one_batch():
    vae = make_vae()
    latents = torch.randn(2, 4, 5, 8, 8, generator=torch.Generator().manual_seed(0))  # (b c f h w)
    whole = decode_latents(vae, latents, chunk_size=10)
    assert whole.shape == (2, 3, 5, 16, 16)
    for chunk in (1, 3):
        assert max_diff(decode_latents(vae, latents, chunk_size=chunk), whole) < 1e-5


@torch.no_grad()
def test_torch_compile_captures_the_hooked_unet(video_unet):
    x, t, text = inputs(frames=3)
    plain = video_unet(x, t, text, fps=8)
    compiled = torch.compile(video_unet, backend="aot_eager")
    assert max_diff(compiled(x, t, text, fps=8), plain) < 1e-5


def test_pipeline_autocast_stays_close_to_float32(sd_image_model):
    from vidgen.pipeline import VideoPipeline

    pipe = VideoPipeline.from_image_model(sd_image_model)
    run = dict(num_frames=3, height=32, width=32, num_inference_steps=2, seed=0, progress=False, output_type="pt")
    plain = pipe("a red circle", **run)
    assert plain.autocast == "float32"  # the model's default: off
    fast = pipe("a red circle", **run, autocast="bfloat16")
    assert fast.autocast == "bfloat16"
    plain, fast = plain.frames, fast.frames
    assert not torch.equal(fast, plain)  # autocast did run
    assert (fast - plain).abs().max() < 0.1  # frames in [-1, 1]: bf16 rounding of 2 steps
    pipe.model.index.defaults.autocast = "bfloat16"  # a model that ships bfloat16 as its default
    assert torch.equal(pipe("a red circle", **run).frames, fast)
    assert torch.equal(pipe("a red circle", **run, autocast="off").frames, plain)
    with pytest.raises(VidgenError, match="autocast must be one of off, auto, bfloat16, float16, got 'fp8'"):
        pipe("a red circle", **run, autocast="fp8")


@pytest.mark.parametrize("flags, native", [("fpu avx512f avx512_bf16 sse", True), ("fpu amx_bf16", True),
                                           ("fpu avx2 avx512f avx512bw", False)])
def test_auto_autocast_is_bfloat16_only_on_a_cpu_that_computes_it(flags, native, tmp_path, monkeypatch):
    from vidgen import precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path,
                                                                         *a, **k))
    assert precision.cpu_computes_bfloat16() is native
    assert precision.autocast_dtype("auto", "cpu") == (torch.bfloat16 if native else None)
    assert precision.autocast_dtype("off", "cpu") is None
    assert precision.autocast_dtype("float16", "cpu") == torch.float16


def test_auto_autocast_is_float32_where_the_cpu_does_not_say(monkeypatch):
    from vidgen import precision

    def no_cpuinfo(path, *args, **kwargs):
        raise FileNotFoundError(path)

    monkeypatch.setattr("builtins.open", no_cpuinfo)
    assert not precision.cpu_computes_bfloat16() and precision.autocast_dtype("auto", "cpu") is None
