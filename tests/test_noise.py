import pytest
import torch

from vidgen.diffusion.noise import frame_noise


def test_no_correlation_draws_exactly_what_randn_draws():
    shape = (2, 4, 6, 8, 8)
    assert torch.equal(frame_noise(shape, torch.Generator().manual_seed(3)),
                       torch.randn(shape, generator=torch.Generator().manual_seed(3)))
    images = (2, 4, 8, 8)  # no frame axis: plain noise whatever the correlation
    assert torch.equal(frame_noise(images, torch.Generator().manual_seed(3), 0.5),
                       torch.randn(images, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("rho", [0.3, 0.7])
def test_correlated_noise_is_unit_gaussian_per_frame_with_the_asked_correlation_between_frames(rho):
    noise = frame_noise((64, 4, 5, 16, 16), torch.Generator().manual_seed(0), rho)  # (b c f h w)
    assert abs(noise.var().item() - 1) < 0.02 and abs(noise.mean().item()) < 0.02
    between = (noise[:, :, 0] * noise[:, :, 3]).mean().item()  # E[n_f n_g] for f != g
    assert abs(between - rho) < 0.02


def test_correlation_must_be_below_one():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        frame_noise((1, 4, 2, 8, 8), None, 1.0)
