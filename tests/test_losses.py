import pytest
import torch
from diffusers import DDPMScheduler

from vidgen.diffusion.losses import caption_contrast, diffusion_loss, timestep_weights
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


def test_caption_contrast_is_the_pair_cross_entropy_of_relative_error_gaps():
    true_error = torch.tensor([0.1, 2.0, 0.5])
    assert torch.allclose(caption_contrast(true_error, true_error.clone(), 0.02), torch.log(torch.tensor(2.0)))
    # The same relative gap costs the same at every noise level (error size), and a clear gap costs ~nothing.
    gap = caption_contrast(true_error, true_error * 1.02, 0.02)
    assert torch.allclose(gap, torch.nn.functional.softplus(torch.tensor(-1.0)))
    assert caption_contrast(true_error, true_error * 1.5, 0.02) < 1e-6
    # Its gradient lowers the true caption's error and raises the negative's.
    t, n = true_error.clone().requires_grad_(), true_error.clone().requires_grad_()
    caption_contrast(t, n, 0.02).backward()
    assert torch.all(t.grad > 0) and torch.all(n.grad < 0)
