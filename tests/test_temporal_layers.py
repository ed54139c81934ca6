import pytest
import torch

from vidgen.errors import VidgenError
from vidgen.models.temporal import FpsEmbedding, TemporalAttention, TemporalConv, init_identity_


def perturb_(module: torch.nn.Module, scale: float = 0.5) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def test_temporal_conv_starts_as_identity():
    torch.manual_seed(0)
    x = torch.randn(6, 16, 5)  # (n c f)
    assert torch.equal(TemporalConv(16)(x), x)


def test_temporal_conv_mixes_only_neighbouring_frames():
    torch.manual_seed(0)
    conv = perturb_(TemporalConv(8))
    x = torch.randn(2, 8, 6)
    y = x.clone()
    y[..., 0] += 1.0  # change the first frame
    delta = (conv(x) - conv(y)).abs().amax(dim=(0, 1))
    assert delta[0] > 0 and delta[1] > 0  # kernel 3: frame 0 reaches frames 0 and 1
    assert torch.all(delta[2:] == 0)


def test_temporal_attention_starts_as_identity_and_attends_over_frames_once_trained():
    torch.manual_seed(0)
    attn = TemporalAttention(32, max_frames=8, attention_head_dim=16)
    x = torch.randn(4, 5, 32)  # (n f c)
    assert torch.equal(attn(x), x)
    perturb_(attn)
    y = x.clone()
    y[:, 0] += 1.0
    delta = (attn(x) - attn(y)).abs().amax(dim=(0, 2))
    assert torch.all(delta[1:] > 0)  # every frame sees the changed first frame


def test_temporal_attention_knows_frame_order():
    torch.manual_seed(0)
    attn = perturb_(TemporalAttention(16, max_frames=8))
    x = torch.randn(3, 4, 16)
    order = torch.tensor([3, 1, 0, 2])
    # Without a position encoding attention would be permutation-equivariant.
    assert not torch.allclose(attn(x[:, order]), attn(x)[:, order], atol=1e-5)


@pytest.mark.parametrize("channels, head_dim, heads", [(320, 64, 5), (1280, 64, 20), (32, 16, 2), (48, 64, 1)])
def test_attention_heads_are_head_dim_wide_where_the_width_divides(channels, head_dim, heads):
    assert TemporalAttention(channels, max_frames=4, attention_head_dim=head_dim).heads == heads


def test_temporal_attention_takes_up_to_max_frames_and_names_the_limit_beyond():
    attn = TemporalAttention(8, max_frames=6)
    assert attn(torch.randn(2, 6, 8)).shape == (2, 6, 8)
    with pytest.raises(VidgenError, match="at most|1 to 6 frames") as err:
        attn(torch.randn(2, 7, 8))
    assert "max_frames=6" in str(err.value) and "7 frames" in str(err.value)


def test_fps_embedding_adds_nothing_at_init():
    emb = FpsEmbedding(time_embed_dim=24, frequency_dim=16)
    out = emb(torch.tensor([8.0, 24.0]))
    assert out.shape == (2, 24) and torch.all(out == 0)


def test_init_identity_restores_every_temporal_layer():
    torch.manual_seed(0)
    layers = torch.nn.ModuleList([TemporalConv(8), TemporalAttention(8, max_frames=4), FpsEmbedding(8, 8)])
    init_identity_(perturb_(layers))
    conv, attn, fps = layers
    x = torch.randn(2, 8, 4)
    assert torch.equal(conv(x), x)
    assert torch.equal(attn(x.transpose(1, 2)), x.transpose(1, 2))
    assert torch.all(fps(torch.tensor([12.0])) == 0)
