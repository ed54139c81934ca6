"""The preference and distill stages: their objectives' math, and that each trains a tiny model
and does what it is for (DPO moves its loss; a distilled model in k steps is closer to its
teacher's many-step samples than the undistilled model in k steps)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler

from vidgen.cli import main
from vidgen.diffusion.distill import ddim_step, distillation_target, eps_between, student_grid
from vidgen.diffusion.preference import diffusion_dpo_loss
from vidgen.diffusion.sampler import sample
from vidgen.models.inflate import TEMPORAL_PREFIXES

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny"
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                clip_sample=False, set_alpha_to_one=False, steps_offset=1)


# --- the math --------------------------------------------------------------------------------------

def test_dpo_loss_starts_at_log_2_and_falls_as_the_policy_prefers_the_preferred_sample():
    torch.manual_seed(0)
    scheduler = DDIMScheduler(**SCHEDULE)
    x_win, x_lose = torch.randn(4, 2, 3, 4, 4), torch.randn(4, 2, 3, 4, 4)  # (b c f h w)
    weight = torch.zeros(2, 2, requires_grad=True)  # a linear map over channels, zero at the start
    reference = lambda x, t: torch.zeros_like(x)  # noqa: E731
    policy = lambda x, t: reference(x, t) + torch.einsum("dc,bc...->bd...", weight, x)  # noqa: E731
    generator = torch.Generator().manual_seed(0)
    first = diffusion_dpo_loss(policy, reference, scheduler, x_win, x_lose, generator, beta=50.0)
    assert first.loss.item() == pytest.approx(math.log(2)) and first.margin == 0.0
    optimizer = torch.optim.SGD([weight], lr=0.05)
    for _ in range(20):
        stats = diffusion_dpo_loss(policy, reference, scheduler, x_win, x_lose, torch.Generator().manual_seed(0),
                                   beta=50.0)
        optimizer.zero_grad()
        stats.loss.backward()
        optimizer.step()
    assert stats.loss.item() < 0.6 * math.log(2) and stats.margin > 0 and stats.accuracy >= 0.75


def test_one_ddim_step_with_the_derived_eps_lands_on_the_target():
    scheduler = DDIMScheduler(**SCHEDULE)
    x_t, x_s = torch.randn(3, 4, 2, 5, 5), torch.randn(3, 4, 2, 5, 5)
    t, s = torch.tensor([901, 500, 77]), torch.tensor([800, 1, -1])
    torch.testing.assert_close(ddim_step(scheduler, x_t, eps_between(scheduler, x_t, x_s, t, s), t, s), x_s,
                               rtol=1e-4, atol=1e-4)


def test_the_ddim_step_and_grid_are_the_samplers():
    torch.manual_seed(1)
    scheduler = DDIMScheduler(**SCHEDULE)
    weight = torch.randn(4, 4) * 0.3

    def denoise(x, t, cond):  # a fixed linear "network" over channels, t-dependent
        return torch.einsum("dc,bc...->bd...", weight, x) * (1 + t.float().reshape(-1, 1, 1, 1, 1) / 1000)

    noise = torch.randn(2, 4, 3, 6, 6)
    expected = sample(denoise, scheduler, noise, torch.zeros(2, 1), num_inference_steps=5, guidance_scale=1.0)
    grid, following = student_grid(scheduler, 5)
    x = noise
    for t, s in zip(grid, following):
        t, s = t.expand(2), s.expand(2)
        x = ddim_step(scheduler, x, denoise(x, t, None), t, s)
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-4)


def test_a_step_between_equal_noise_levels_teaches_the_teachers_own_eps():
    scheduler = DDIMScheduler(**{**SCHEDULE, "steps_offset": 0})  # the grid ends at t = 0, then alpha_bar_0 again
    teacher = lambda x, t: 0.5 * x  # noqa: E731
    x_t = torch.randn(2, 4, 2, 3, 3)
    target = distillation_target(teacher, scheduler, x_t, torch.tensor([0, 166]), torch.tensor([-1, 0]))
    assert torch.isfinite(target).all() and torch.equal(target[0], teacher(x_t, None)[0])


def test_the_distillation_target_is_two_teacher_steps_in_one():
    scheduler = DDIMScheduler(**SCHEDULE)
    teacher = lambda x, t: 0.5 * x + 0.1 * t.float().view(-1, 1, 1, 1, 1) / 1000  # noqa: E731
    x_t, t, s = torch.randn(2, 4, 2, 3, 3), torch.tensor([801, 401]), torch.tensor([601, -1])
    m = torch.tensor([701, 200])
    two_steps = ddim_step(scheduler, ddim_step(scheduler, x_t, teacher(x_t, t), t, m),
                          teacher(ddim_step(scheduler, x_t, teacher(x_t, t), t, m), m), m, s)
    one_step = ddim_step(scheduler, x_t, distillation_target(teacher, scheduler, x_t, t, s), t, s)
    torch.testing.assert_close(one_step, two_steps, rtol=1e-4, atol=1e-4)


# --- the stages on a tiny model -------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_world(sd_image_model, tmp_path_factory) -> tuple[Path, Path]:
    """(an inflated tiny video model, a manifest of 8 captioned shapes clips of 32 px)."""
    root = tmp_path_factory.mktemp("stages")
    model = root / "inflated"
    assert main(["inflate", "--image-model", str(sd_image_model), "--out", str(model), "--max-frames", "16",
                 "--frames", "8", "--fps", "8"]) == 0
    assert main(["data", "shapes", "--out", str(root / "corpus"), "--videos", "8", "--size", "32", "--no-progress",
                 "frames=16", "caption_drop=0.0"]) == 0
    return model, root / "corpus" / "manifest.jsonl"


def losses(run: Path) -> list[float]:
    with open(run / "log.csv", newline="", encoding="utf-8") as rows:
        return [float(row["loss"]) for row in csv.DictReader(rows)]


def test_the_preference_stage_trains_and_its_dpo_loss_falls_from_log_2(tiny_world, tmp_path):
    from safetensors.torch import load_file

    from vidgen.config import load_config
    from vidgen.data.dataset import collate_clips
    from vidgen.training.config import RunConfig
    from vidgen.training.stages import build_stage

    model, manifest = tiny_world
    run = tmp_path / "preference"
    overrides = [f"data.manifest={manifest}", f"model.pretrained={model}", f"train.output_dir={run}"]
    assert main(["train", "--no-progress", str(TINY / "preference.yaml"), *overrides]) == 0
    assert losses(run)[0] == pytest.approx(math.log(2), abs=1e-3)  # the policy starts as its reference
    before, after = load_file(model / "unet" / "model.safetensors"), load_file(run / "model" / "unet" / "model.safetensors")
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all(k.startswith(TEMPORAL_PREFIXES) for k in moved)  # the image U-Net stays frozen

    # The stage's objective, followed down on one batch and draw: the pairs, the reference and the
    # gradient are wired so that the policy learns to prefer the clip to its reversal.
    stage = build_stage(load_config(RunConfig, TINY / "preference.yaml", overrides), torch.device("cpu"))
    data = stage.dataset()
    batch = collate_clips([data[i] for i in range(len(data))])
    optimizer = torch.optim.Adam([p for p in stage.model.parameters() if p.requires_grad], lr=1e-3)
    values = []
    for _ in range(10):
        loss = stage.loss(stage.model, batch, torch.Generator().manual_seed(0))
        values.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert values[0] == pytest.approx(math.log(2), abs=1e-6) and values[-1] < 0.5 * math.log(2)


def test_the_preference_stage_needs_the_motion_words(tiny_world, tmp_path, capsys):
    model, manifest = tiny_world
    assert main(["train", "--no-progress", str(TINY / "video.yaml"), "stage=preference", f"data.manifest={manifest}",
                 f"model.pretrained={model}", f"train.output_dir={tmp_path / 'run'}"]) == 2
    assert "set data.time_reverse" in capsys.readouterr().err


def frames(model: Path, out: Path, *args: str) -> torch.Tensor:
    """The frames `vidgen generate` writes for one prompt and seed, as float (f h w c)."""
    import numpy as np
    from PIL import Image

    assert main(["generate", "a red circle moving left", "--model", str(model), "--seed", "5", "--format", "png",
                 "-o", str(out), "--no-progress", *args]) == 0
    return torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))])).float()


def test_a_distilled_model_in_k_steps_is_closer_to_its_teacher_than_the_undistilled_one(tiny_world, tmp_path):
    model, manifest = tiny_world
    run = tmp_path / "distill"
    assert main(["train", "--no-progress", str(TINY / "distill.yaml"), f"data.manifest={manifest}",
                 f"model.pretrained={model}", f"train.output_dir={run}", "train.max_steps=40"]) == 0
    student = run / "model"
    from vidgen.model_index import read_model_index

    defaults = read_model_index(student).defaults
    assert defaults.num_inference_steps == 2 and defaults.guidance_scale == 1.0
    teacher = frames(model, tmp_path / "teacher", "--steps", "16", "--guidance", "3")
    undistilled = frames(model, tmp_path / "undistilled", "--steps", "2", "--guidance", "3")
    distilled = frames(student, tmp_path / "distilled")  # its own defaults: 2 steps, one call each
    error = lambda clip: float(((clip - teacher) ** 2).mean())  # noqa: E731
    assert error(distilled) < error(undistilled)
