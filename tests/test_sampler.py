import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from vidgen.diffusion.sampler import sample
from vidgen.diffusion.schedulers import load_scheduler, scheduler_class
from vidgen.errors import VidgenError


def linear_denoiser(calls: list | None = None):
    """A stand-in model, linear in its conditioning: 0.1 x + mean(cond), per batch item."""
    def denoise(x, t, cond):
        if calls is not None:
            calls.append((x.shape[0], cond.clone()))
        return 0.1 * x + cond.mean(dim=(1, 2)).view(-1, *[1] * (x.ndim - 1))
    return denoise


def ddim():
    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def noise(seed: int = 0, shape=(2, 4, 3, 8, 8)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))  # (b c f h w)


def conds(seed: int = 0):
    g = torch.Generator().manual_seed(seed + 100)
    return torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)  # (b n d) cond, uncond


def run(seed=0, eta=0.5, guidance=3.0, scheduler=None, **kwargs):
    cond, uncond = conds()
    return sample(linear_denoiser(), scheduler or ddim(), noise(), cond, uncond, guidance_scale=guidance,
                  num_inference_steps=4, eta=eta, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_same_seed_same_bits_different_seed_different_sample():
    assert torch.equal(run(seed=1), run(seed=1))
    assert not torch.allclose(run(seed=1), run(seed=2))  # eta > 0: the generator drives the DDIM noise


def test_guidance_extrapolates_from_the_unconditional_branch_in_one_batch():
    cond, uncond = conds()
    calls = []
    guided = sample(linear_denoiser(calls), ddim(), noise(), cond, uncond, guidance_scale=4.0, num_inference_steps=3)
    assert [batch for batch, _ in calls] == [4, 4, 4]  # both branches, one call per step
    assert torch.equal(calls[0][1], torch.cat([uncond, cond]))  # unconditional first
    # The denoiser is linear in its conditioning, so guidance equals conditioning on u + w (c - u).
    direct = sample(linear_denoiser(), ddim(), noise(), uncond + 4.0 * (cond - uncond), num_inference_steps=3)
    torch.testing.assert_close(guided, direct)


@pytest.mark.parametrize("guidance, uncond", [(1.0, True), (7.5, False)])
def test_without_guidance_only_the_conditional_branch_runs(guidance, uncond):
    cond, null = conds()
    calls = []
    sample(linear_denoiser(calls), ddim(), noise(), cond, null if uncond else None, guidance_scale=guidance,
           num_inference_steps=2)
    assert [batch for batch, _ in calls] == [2, 2]


def test_guidance_interval_guides_only_its_steps_and_the_rest_call_the_network_once():
    cond, uncond = conds()
    calls = []
    partly = sample(linear_denoiser(calls), ddim(), noise(), cond, uncond, guidance_scale=4.0, num_inference_steps=5,
                    guidance_interval=(1, 3))
    assert [batch for batch, _ in calls] == [2, 4, 4, 2, 2]  # steps 1 and 2 guided: 7 rows of calls, not 10
    assert torch.equal(calls[0][1], cond) and torch.equal(calls[1][1], torch.cat([uncond, cond]))
    everywhere = sample(linear_denoiser(), ddim(), noise(), cond, uncond, guidance_scale=4.0, num_inference_steps=5)
    whole = sample(linear_denoiser(), ddim(), noise(), cond, uncond, guidance_scale=4.0, num_inference_steps=5,
                   guidance_interval=(0, 5))
    torch.testing.assert_close(whole, everywhere)
    assert not torch.allclose(partly, everywhere)


def test_latents_of_any_rank_are_never_reshaped():
    video = run(eta=0.0)
    flat = noise().flatten(2, 3)  # (b c (f h) w): the same numbers as a 4-D image batch
    cond, uncond = conds()
    image = sample(linear_denoiser(), ddim(), flat, cond, uncond, guidance_scale=3.0, num_inference_steps=4)
    assert video.shape == noise().shape
    torch.testing.assert_close(image, video.flatten(2, 3))


def test_callback_sees_every_step():
    seen = []
    run(callback=lambda i, t, latents: seen.append((i, int(t), latents.shape)))
    assert [i for i, _, _ in seen] == [0, 1, 2, 3]
    assert seen[0][1] > seen[-1][1] and seen[0][2] == noise().shape


def test_strength_runs_the_end_of_the_schedule_from_the_noised_start():
    start = torch.full(noise().shape, 2.0)
    seen = []
    out = run(start=start, strength=0.5, eta=0.0, callback=lambda i, t, latents: seen.append(int(t)))
    full = ddim()
    full.set_timesteps(4)
    assert seen == full.timesteps[2:].tolist()  # the last half of the 4 steps
    assert torch.allclose(run(start=start, strength=0.25, eta=0.0), _one_step(start))  # 1 of 4 steps
    assert (out - start).abs().mean() < (run(eta=0.0) - start).abs().mean()  # it stays nearer its start
    with pytest.raises(ValueError, match="start"):
        run(strength=0.5)
    with pytest.raises(ValueError, match="strength"):
        run(start=start, strength=0.0)


def test_known_entries_are_replaced_by_their_noised_values_before_every_step():
    values = torch.full((2, 4, 1, 8, 8), 2.0)  # (b c 1 h w): broadcast over the frames
    mask = torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 3, 1, 1)  # the first of 3 frames known
    seen = []

    def frame_mixing(x, t, cond):  # a stand-in whose frames see each other, as temporal layers do
        seen.append((x.clone(), int(t)))
        return 0.1 * x + 0.1 * x.mean(dim=2, keepdim=True) + cond.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)

    cond, uncond = conds()
    steps = dict(guidance_scale=3.0, num_inference_steps=4, eta=0.0)
    out = sample(frame_mixing, ddim(), noise(), cond, uncond, known=(values, mask), **steps)
    assert len(seen) == 4
    for x, t in seen:  # both guidance branches see the known frame noised to the step's level
        expected = ddim().add_noise(values, noise()[:, :, :1], torch.tensor([t, t]))
        assert torch.allclose(x[:2, :, :1], expected, atol=1e-6) and torch.allclose(x[2:, :, :1], expected, atol=1e-6)
    seen.clear()
    free = sample(frame_mixing, ddim(), noise(), cond, uncond, **steps)
    assert not torch.allclose(out[:, :, 1:], free[:, :, 1:])  # the frames around it follow the known one


def _one_step(start):
    """What the sampler's single last step gives, spelled out: noise `start` to the last timestep of
    4, predict with the stand-in model (guidance 3), step to the end."""
    scheduler = ddim()
    scheduler.set_timesteps(4)
    t = scheduler.timesteps[-1]
    cond, uncond = conds()
    latents = scheduler.add_noise(start, noise(), t.expand(2))
    denoise = linear_denoiser()
    pred_uncond, pred_cond = denoise(torch.cat([latents, latents]), t, torch.cat([uncond, cond])).chunk(2)
    return scheduler.step(pred_uncond + 3.0 * (pred_cond - pred_uncond), t, latents).prev_sample


def test_other_diffusers_schedulers_run_deterministically():
    dpm = DPMSolverMultistepScheduler.from_config(ddim().config)
    first = run(eta=0.0, scheduler=dpm)
    assert torch.equal(first, run(eta=0.0, scheduler=DPMSolverMultistepScheduler.from_config(ddim().config)))
    assert not torch.allclose(first, run(eta=0.0))


def test_eta_on_a_scheduler_without_it_is_refused():
    with pytest.raises(VidgenError, match="eta=0.5 is a DDIM setting"):
        run(eta=0.5, scheduler=DPMSolverMultistepScheduler.from_config(ddim().config))


def test_schedulers_by_alias_or_class_name(tmp_path):
    assert scheduler_class("dpm++") is DPMSolverMultistepScheduler
    assert scheduler_class("DDIMScheduler") is DDIMScheduler
    ddim().save_pretrained(tmp_path)
    loaded = load_scheduler("dpm++", tmp_path)
    assert isinstance(loaded, DPMSolverMultistepScheduler) and loaded.config.beta_end == 0.012
    with pytest.raises(VidgenError, match=r"unknown scheduler 'dpm\+'.*ddim, ddpm, dpm\+\+"):
        scheduler_class("dpm+")


def test_the_base_stage_is_guided_from_the_step_asked_and_the_steps_before_call_the_network_once(sd_image_model):
    from vidgen.pipeline import VideoPipeline

    pipe = VideoPipeline.from_image_model(sd_image_model)
    rows = []
    pipe.model.stages["base"].register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    small = dict(num_frames=2, height=16, width=16, num_inference_steps=4, stages=["base"], progress=False, seed=0)
    out = pipe("a red circle", guidance_from_step=3, **small)
    assert rows == [1, 1, 1, 2] and out.settings.guidance_from_step == 3  # the last step guided: both branches
    rows.clear()
    pipe("a red circle", **small)
    assert rows == [2, 2, 2, 2]  # the default: every step guided
    with pytest.raises(VidgenError, match="guidance_from_step"):
        pipe("a red circle", guidance_from_step=-1, **small)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_the_prediction_for_a_clean_sample_is_the_inverse_of_the_clean_sample_a_prediction_implies(kind):
    from vidgen.diffusion.sampler import predicted_clean, prediction_for_clean

    scheduler = DDIMScheduler(prediction_type=kind)
    x_t, prediction, t = noise(1), noise(2), torch.tensor(600)
    x0 = predicted_clean(scheduler, prediction, x_t, t)
    torch.testing.assert_close(prediction_for_clean(scheduler, x0, x_t, t), prediction, atol=1e-4, rtol=1e-4)


def test_a_clean_edit_replaces_the_clean_sample_of_the_first_steps_only():
    cond, uncond = conds()
    told = []

    def keep(x0):
        told.append(x0.clone())
        return x0

    kept = run(eta=0.0, clean_edit=(2, keep))
    assert len(told) == 2 and told[0].shape == noise().shape
    torch.testing.assert_close(kept, run(eta=0.0), atol=1e-5, rtol=1e-5)  # an edit that changes nothing
    to_one = DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=True)
    zeroed = run(eta=0.0, scheduler=to_one, clean_edit=(4, torch.zeros_like))
    assert zeroed.abs().max() < 1e-5  # every step's clean sample 0: the last step lands on it
    assert not torch.allclose(run(eta=0.0, clean_edit=(1, torch.zeros_like)), kept)


def test_a_clean_edit_with_a_scheduler_that_scales_its_latents_is_refused():
    from diffusers import EulerDiscreteScheduler

    with pytest.raises(VidgenError, match="--motion-projection 0"):
        run(eta=0.0, scheduler=EulerDiscreteScheduler(), clean_edit=(2, lambda x0: x0))


def test_the_guidance_interval_counts_the_steps_a_strength_below_one_leaves_out():
    cond, uncond = conds()
    calls = []
    sample(linear_denoiser(calls), ddim(), noise(), cond, uncond, guidance_scale=4.0, num_inference_steps=6,
           start=noise(3), strength=0.5, guidance_interval=(4, 6))
    assert [batch for batch, _ in calls] == [2, 4, 4]  # steps 3, 4, 5 of 6 run: 4 and 5 guided
