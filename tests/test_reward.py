"""The reward stage: the early prediction it backpropagates through is the sampler's, the
finished clip carries that step's gradient, which reaches the network through the conditional
branch alone; and on a tiny model with a critic the stage trains, logs its reward and, followed
on one batch and draw, raises it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler

from vidgen.cli import main
from vidgen.diffusion.reward import early_prediction
from vidgen.diffusion.sampler import sample

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny"
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                clip_sample=False, set_alpha_to_one=False, steps_offset=0)


@pytest.mark.parametrize("step", [0, 2])
def test_the_early_prediction_is_the_guided_samplers_clean_estimate_at_that_step(step):
    torch.manual_seed(0)
    weight = (torch.randn(4, 4) * 0.3).requires_grad_()

    def denoise(x, t, cond):  # a linear "network" over channels that reads its condition
        return torch.einsum("dc,bc...->bd...", weight, x) * (1 + t.float().reshape(-1, 1, 1, 1, 1) / 1000) + cond

    noise = torch.randn(2, 4, 3, 5, 5)  # (b c f h w)
    cond, uncond = torch.full((2, 1, 1, 1, 1), 0.2), torch.zeros(2, 1, 1, 1, 1)
    seen = {}

    def select(x0):
        seen["x0"] = x0
        return torch.arange(x0.shape[0])

    with torch.no_grad():
        sample(denoise, DDIMScheduler(**SCHEDULE), noise, cond, uncond, guidance_scale=3.0, num_inference_steps=6,
               prune=(step + 1, select))
    predicted, t = early_prediction(denoise, DDIMScheduler(**SCHEDULE), noise, cond, uncond, 3.0, 6, step)
    torch.testing.assert_close(predicted, seen["x0"], rtol=1e-4, atol=1e-4)
    gradient, = torch.autograd.grad(predicted.square().sum(), weight)
    assert gradient.abs().sum() > 0


def test_the_finished_sample_carries_the_early_steps_gradient():
    torch.manual_seed(0)
    weight = (torch.randn(4, 4) * 0.3).requires_grad_()

    def denoise(x, t, cond):
        return torch.einsum("dc,bc...->bd...", weight, x) + cond

    noise = torch.randn(2, 4, 3, 5, 5)  # (b c f h w)
    cond, uncond = torch.full((2, 1, 1, 1, 1), 0.2), torch.zeros(2, 1, 1, 1, 1)
    with torch.no_grad():
        finished = sample(denoise, DDIMScheduler(**SCHEDULE), noise, cond, uncond, guidance_scale=3.0,
                          num_inference_steps=6)
    read, _ = early_prediction(denoise, DDIMScheduler(**SCHEDULE), noise, cond, uncond, 3.0, 6, 1, finish=True)
    early, _ = early_prediction(denoise, DDIMScheduler(**SCHEDULE), noise, cond, uncond, 3.0, 6, 1)
    torch.testing.assert_close(read, finished, rtol=1e-4, atol=1e-4)  # the value: the sampler's finished clip
    gradient, = torch.autograd.grad((read * finished.sign()).sum(), weight)
    through_early, = torch.autograd.grad((early * finished.sign()).sum(), weight)
    torch.testing.assert_close(gradient, through_early)  # the gradient: that of step 1's clean prediction


def test_only_the_conditional_branch_of_the_last_step_carries_the_gradient():
    calls = []

    def denoise(x, t, cond):
        calls.append(torch.is_grad_enabled())
        return x * 0.1 + cond * scale

    scale = torch.tensor(1.0, requires_grad=True)
    noise = torch.randn(1, 4, 2, 3, 3)
    cond, uncond = torch.ones(1, 1, 1, 1, 1), torch.zeros(1, 1, 1, 1, 1)
    predicted, _ = early_prediction(denoise, DDIMScheduler(**SCHEDULE), noise, cond, uncond, 7.5, 4, 2)
    assert calls == [False, False, False, False, False, True]  # 2 steps x 2 branches, then null, then conditional
    gradient, = torch.autograd.grad(predicted.sum(), scale)
    assert gradient != 0


@pytest.fixture(scope="module")
def tiny_world_with_critic(sd_image_model, tmp_path_factory) -> tuple[Path, Path]:
    """(a tiny video model with an arrow critic, a manifest of 8 captioned shapes clips of 32 px)."""
    root = tmp_path_factory.mktemp("reward")
    assert main(["inflate", "--image-model", str(sd_image_model), "--out", str(root / "inflated"), "--max-frames",
                 "16", "--frames", "8", "--fps", "8"]) == 0
    assert main(["data", "shapes", "--out", str(root / "corpus"), "--videos", "8", "--size", "32", "--no-progress",
                 "frames=16", "caption_drop=0.0"]) == 0
    manifest = root / "corpus" / "manifest.jsonl"
    assert main(["train", "--no-progress", str(TINY / "critic.yaml"), f"data.manifest={manifest}",
                 f"model.pretrained={root / 'inflated'}", f"train.output_dir={root / 'critic'}",
                 "model.critic_swap_slots=[direction]"]) == 0
    return root / "critic" / "model", manifest


def test_the_reward_stage_trains_logs_its_reward_and_raises_it(tiny_world_with_critic, tmp_path):
    from safetensors.torch import load_file

    from vidgen.config import load_config
    from vidgen.data.dataset import collate_clips
    from vidgen.training.config import RunConfig
    from vidgen.training.stages import build_stage

    model, manifest = tiny_world_with_critic
    run = tmp_path / "reward"
    overrides = [f"data.manifest={manifest}", f"model.pretrained={model}", f"train.output_dir={run}"]
    assert main(["train", "--no-progress", str(TINY / "reward.yaml"), *overrides]) == 0
    with open(run / "log.csv", newline="", encoding="utf-8") as rows:
        logged = [float(row["reward"]) for row in csv.DictReader(rows)]
    assert len(logged) == 4 and all(v >= 0 for v in logged)
    before, after = load_file(model / "unet" / "model.safetensors"), load_file(run / "model" / "unet" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)

    # Followed on one batch and draw (the denoising loss off), the reward of the finished clips rises.
    stage = build_stage(load_config(RunConfig, TINY / "reward.yaml", overrides), torch.device("cpu"))
    stage.denoising_loss = lambda *args: torch.zeros(())
    data = stage.dataset()
    batch = collate_clips([data[i] for i in range(4)])
    optimizer = torch.optim.Adam([p for p in stage.model.parameters() if p.requires_grad], lr=1e-3)
    critic = {k: v.clone() for k, v in stage.critic.state_dict().items()}
    values = []
    for _ in range(8):
        loss = stage.loss(stage.model, batch, torch.Generator().manual_seed(0))
        values.append(stage.log_values()["reward"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert values[0] > 0 and values[-1] > 1.5 * values[0]
    assert all(p.grad is None for p in stage.critic.parameters())  # the critic is read, never trained
    assert all(torch.equal(v, critic[k]) for k, v in stage.critic.state_dict().items())


def test_a_resumed_log_keeps_the_columns_of_both_runs(tmp_path):
    from vidgen.training.loop import RunLog

    (tmp_path / "log.csv").write_text("step,loss,lr,samples_per_s,skipped_clips,elapsed_s,critic_loss\n"
                                      "1,0.5,0.1,1.0,0,1.0,-3.0\n2,0.4,0.1,1.0,0,2.0,-4.0\n")
    log = RunLog(tmp_path, enabled=True, resumed_step=1, extra_fields=("reward",))
    log.write({"step": 2, "loss": 0.3, "lr": 0.1, "samples_per_s": 1.0, "skipped_clips": 0, "elapsed_s": 2.0,
               "reward": 5.0})
    log.close()
    with open(tmp_path / "log.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["critic_loss"], r["reward"]) for r in rows] == [("1", "-3.0", ""), ("2", "", "5.0")]


def test_the_reward_stage_needs_a_critic(tiny_world_with_critic, sd_image_model, tmp_path, capsys):
    _, manifest = tiny_world_with_critic
    inflated = tmp_path / "inflated"
    assert main(["inflate", "--image-model", str(sd_image_model), "--out", str(inflated), "--max-frames", "16",
                 "--frames", "8", "--fps", "8"]) == 0
    assert main(["train", "--no-progress", str(TINY / "reward.yaml"), f"data.manifest={manifest}",
                 f"model.pretrained={inflated}", f"train.output_dir={tmp_path / 'run'}"]) == 2
    assert "has none: train one first" in capsys.readouterr().err
    assert not (tmp_path / "run" / "model").exists()


def test_a_reward_weight_of_zero_is_refused_before_loading(tiny_world_with_critic, tmp_path, capsys):
    model, manifest = tiny_world_with_critic
    assert main(["train", "--no-progress", str(TINY / "reward.yaml"), f"data.manifest={manifest}",
                 f"model.pretrained={model}", f"train.output_dir={tmp_path / 'run'}", "model.reward_weight=0"]) == 2
    assert "model.reward_weight" in capsys.readouterr().err
