"""Reconstruction guidance (Ho et al. 2022, eq. 7): the frames drawn are steered by the gradient of
the given frames' reconstruction error, through the network."""

import pytest
import torch
from diffusers import DDIMScheduler

from vidgen.diffusion.sampler import predicted_clean, reconstruction_gradient, sample


def ddim(prediction_type="epsilon"):
    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)


def clip_mean_model(scheduler):
    """A stand-in epsilon model whose clean estimate of every frame is the mean over frames of
    x_t / sqrt(alpha_bar): frames see each other, as temporal layers do."""
    def denoise(x, t, cond):  # (b c f h w)
        alpha_bar = scheduler.alphas_cumprod[int(t)]
        x0 = (x / alpha_bar ** 0.5).mean(dim=2, keepdim=True).expand_as(x)
        return (x - alpha_bar ** 0.5 * x0) / (1 - alpha_bar) ** 0.5
    return denoise


def setting():
    noise = torch.randn(1, 2, 4, 3, 3, generator=torch.Generator().manual_seed(0))  # (b c f h w)
    values = torch.full((1, 2, 4, 3, 3), 3.0)
    mask = torch.tensor([1.0, 0, 0, 0]).view(1, 1, 4, 1, 1)  # the first of 4 frames given
    return noise, (values, mask), torch.zeros(1, 5, 6)


def test_the_gradient_reaches_only_the_frames_drawn_and_pulls_the_estimate_toward_the_given_frame():
    scheduler = ddim()
    scheduler.set_timesteps(10)
    noise, known, cond = setting()
    t = scheduler.timesteps[2]
    denoise = clip_mean_model(scheduler)
    prediction, g = reconstruction_gradient(denoise, scheduler, noise, t, cond, known, weight=1.0)
    assert torch.allclose(prediction, denoise(noise, t, cond))  # the step's conditional branch, read once
    assert torch.all(g[:, :, 0] == 0) and g[:, :, 1:].abs().sum() > 0
    # a small step up this gradient (it is grad log p) lowers the given frame's reconstruction error
    values, mask = known

    def error(x):
        return (mask * (predicted_clean(scheduler, denoise(x, t, cond), x, t) - values)).square().sum()

    assert error(noise + 1e-3 * g / g.norm()) < error(noise)


def test_sampling_with_it_draws_frames_that_agree_more_with_the_given_one():
    scheduler = ddim()
    noise, known, cond = setting()
    values, mask = known
    runs = {w: sample(clip_mean_model(scheduler), scheduler, noise, cond, num_inference_steps=10, known=known,
                      reconstruction=w) for w in (0.0, 1.0)}
    gap = {w: (out[:, :, 1:] - values[:, :, 1:]).abs().mean() for w, out in runs.items()}
    assert gap[1.0] < 0.5 * gap[0.0]


def test_a_scheduler_whose_latents_are_scaled_otherwise_is_refused_before_any_network_call():
    from diffusers import EulerDiscreteScheduler

    from vidgen.errors import VidgenError

    noise, known, cond = setting()
    calls = []
    with pytest.raises(VidgenError, match="--reconstruction-guidance 0"):
        sample(lambda x, t, c: calls.append(1) or x, EulerDiscreteScheduler(), noise, cond, num_inference_steps=2,
               known=known, reconstruction=10.0)
    assert calls == []


def test_clean_estimates_of_each_prediction_type_agree():
    scheduler = ddim()
    t = torch.tensor(500)
    alpha_bar = scheduler.alphas_cumprod[500]
    x0, eps = torch.randn(2, 3), torch.randn(2, 3)
    x_t = alpha_bar ** 0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps
    v = alpha_bar ** 0.5 * eps - (1 - alpha_bar) ** 0.5 * x0
    assert torch.allclose(predicted_clean(ddim("epsilon"), eps, x_t, t), x0, atol=1e-5)
    assert torch.allclose(predicted_clean(ddim("v_prediction"), v, x_t, t), x0, atol=1e-5)
    assert torch.allclose(predicted_clean(ddim("sample"), x0, x_t, t), x0)
