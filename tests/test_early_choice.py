"""Choosing among candidates part-way through the base stage (`choose_at_step`): the critic reads
the clean clips the first steps predict, keeps one candidate per prompt, and only that one is
finished, along the same path it takes when every candidate is finished."""

from __future__ import annotations

import pytest
import torch

from vidgen import VideoPipeline
from vidgen.cli import main
from vidgen.errors import VidgenError
from vidgen.models import critic_choice
from vidgen.models.critic import ArrowCritic, CriticConfig

PROMPTS = ["a red circle moving right", "a green triangle moving left"]


@pytest.fixture(scope="module")
def pipe(video_model) -> VideoPipeline:
    pipe = VideoPipeline.from_pretrained(video_model)
    torch.manual_seed(0)
    pipe.model.set_critic(ArrowCritic(CriticConfig(latent_channels=4, text_dim=pipe.model.text_encoder.hidden_size,
                                                   widths=(8, 16), embed_dim=16)))
    return pipe


def base_rows(pipe: VideoPipeline) -> list[int]:
    """Rows of every base U-Net call from now on (a forward hook on the base stage)."""
    rows: list[int] = []
    pipe.model.stages["base"].register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    return rows


def test_the_kept_candidate_is_finished_as_it_would_be_among_all_and_the_others_stop_early(pipe, monkeypatch):
    common = dict(num_inference_steps=4, seed=3, output_type="pt", progress=False, arrow_check=True, candidates=3)
    everything = pipe(PROMPTS, **common)  # the choice after the last step
    pool = pipe([p for p in PROMPTS for _ in range(3)], num_inference_steps=4, seed=3, output_type="pt",
                progress=False)  # every candidate finished, no check: (6 3 f h w)
    scores = []
    real = critic_choice.candidate_scores
    monkeypatch.setattr(critic_choice, "candidate_scores", lambda *a: scores.append(real(*a)) or scores[-1])
    rows = base_rows(pipe)
    early = pipe(PROMPTS, choose_at_step=2, **common)
    assert rows == [12, 12, 4, 4]  # guided: 2 x 6 candidates for two steps, then 2 x 2 kept clips
    assert early.kept_candidates == scores[-1].argmax(dim=1).tolist()
    for i, (clip, j) in enumerate(zip(early.frames, early.kept_candidates)):
        drawn = pool.frames[3 * i + j]
        torch.testing.assert_close(clip, drawn.flip(1) if early.reversed[i] else drawn, atol=1e-4, rtol=1e-4)
    assert early.frames.shape == everything.frames.shape


def test_choose_at_step_is_checked_before_sampling(pipe, video_model, capsys):
    with pytest.raises(VidgenError, match="choose_at_step must be 0"):
        pipe(PROMPTS, num_inference_steps=4, candidates=2, choose_at_step=-1, progress=False)
    late = pipe(PROMPTS, num_inference_steps=2, seed=1, candidates=2, choose_at_step=5, progress=False)
    last = pipe(PROMPTS, num_inference_steps=2, seed=1, candidates=2, progress=False)
    assert (late.frames == last.frames).all()  # past the last step: the choice after it, as with 0
    with pytest.raises(VidgenError, match="do not go together"):
        pipe(PROMPTS, num_inference_steps=4, candidates=2, choose_at_step=1, motion_guidance=1.0, progress=False)
    one = pipe(PROMPTS[:1], num_inference_steps=2, seed=1, choose_at_step=1, progress=False, output_type="pt")
    plain = pipe(PROMPTS[:1], num_inference_steps=2, seed=1, progress=False, output_type="pt")
    torch.testing.assert_close(one.frames, plain.frames)  # one candidate: nothing to choose, nothing changes
    assert main(["generate", "a red circle", "--model", str(video_model), "--choose-at-step", "-1",
                 "-o", "x.mp4"]) == 2
    assert "--choose-at-step" in capsys.readouterr().err
