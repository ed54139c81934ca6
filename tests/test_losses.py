import pytest
import torch
from diffusers import DDPMScheduler

from vidgen.diffusion.losses import diffusion_loss, timestep_weights
from vidgen.training.stages import NOISE_SCHEDULE


def test_v_weighting_of_epsilon_errors_is_the_v_objective_up_to_a_constant():
    scheduler = DDPMScheduler(**NOISE_SCHEDULE)
    x0 = torch.randn(6, 4, 3, 8, 8)  # (b c f h w)
    guess = torch.randn(6, 4, 3, 8, 8)  # what a model predicts for the noise

    def denoise(x_t, t):
        denoise.seen = (x_t, t)
        return guess

    loss = diffusion_loss(denoise, scheduler, x0, torch.Generator().manual_seed(0), weighting="v")
    x_t, t = denoise.seen
    alpha_bar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    noise = (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
    v_hat = (guess - (1 - alpha_bar).sqrt() * x_t) / alpha_bar.sqrt()  # v implied by the guess
    v_loss = ((scheduler.get_velocity(x0, noise, t) - v_hat) ** 2).mean()
    normaliser = (1.0 / scheduler.alphas_cumprod).mean()
    assert torch.allclose(loss, v_loss / normaliser, rtol=1e-3)
    uniform = diffusion_loss(denoise, scheduler, x0, torch.Generator().manual_seed(0))
    assert not torch.allclose(loss, uniform)


def test_v_weights_grow_with_noise_and_average_one():
    scheduler = DDPMScheduler(**NOISE_SCHEDULE)
    weights = timestep_weights(scheduler, torch.arange(1000), "v")
    assert torch.all(weights[1:] > weights[:-1]) and abs(weights.mean().item() - 1) < 1e-4
    assert timestep_weights(scheduler, torch.arange(3), "uniform") is None
    with pytest.raises(ValueError, match="epsilon"):
        diffusion_loss(lambda x, t: x, scheduler, torch.zeros(1, 4, 8, 8), torch.Generator(), "v_prediction",
                       weighting="v")

