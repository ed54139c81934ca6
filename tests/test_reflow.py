"""The reflow stage and its pairs: the judge captions a sample with the direction it shows and its
reversal with the opposite one; `vidgen data pairs` writes resumable shards; the stage trains a
tiny model on its own pairs, moves its loss, and its few unguided steps then land nearer the
guided many-step samples than the model's own few guided steps do."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidgen.cli import main
from vidgen.data.shapes import parse_prompt, render_clip, sample_scene
from vidgen.model_index import read_model_index
from vidgen.pipeline import VideoPipeline
from vidgen.training.reflow_pairs import PairDataset, judged_captions, pair_totals, seen_prompts, write_pairs

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny"


def clip_of(prompt: str, seed: int = 0) -> np.ndarray:
    scene = sample_scene(np.random.default_rng(seed), slots=parse_prompt(prompt))
    return render_clip(scene, size=64, frames=16)  # (f h w 3)


def test_the_judge_captions_a_sample_with_the_way_it_moved_and_its_reversal_with_the_other():
    frames = clip_of("a large blue square moving up on a black background")
    assert judged_captions(frames, "a large blue square moving left") == [
        ("a large blue square moving up", False), ("a large blue square moving down", True)]
    assert judged_captions(frames, "a red square moving up") == []  # the asked color is not what it shows
    assert judged_captions(frames, "a small blue square moving up") == []  # nor the size
    assert judged_captions(np.zeros_like(frames), "a blue square moving up") == []  # no object
    # a held-out triple (docs/shapes-world.md) never becomes a caption: red triangle moving up is one
    labels = judged_captions(clip_of("a red triangle moving down", seed=3), "a red triangle moving down")
    assert labels == [("a red triangle moving down", False)]


def test_pair_prompts_are_seen_triples_and_depend_on_seed_and_shard_alone():
    first = seen_prompts(8, seed=1, shard=0)
    assert first == seen_prompts(8, seed=1, shard=0) and first != seen_prompts(8, seed=1, shard=1)
    from vidgen.data.shapes import HELDOUT

    assert all((p["color"], p["shape"], p["direction"]) not in HELDOUT for p in map(parse_prompt, first))


def test_data_pairs_writes_a_shard_per_batch_and_a_rerun_resumes(video_model, tmp_path, capsys):
    out = tmp_path / "pairs"
    argv = ["data", "pairs", "--model", str(video_model), "--out", str(out), "--clips", "3", "--batch-size", "2",
            "--steps", "2", "--no-progress"]
    assert main(argv) == 0
    shards = sorted(out.glob("pairs-*.safetensors"))
    assert [p.name for p in shards] == ["pairs-00000.safetensors", "pairs-00001.safetensors"]
    assert pair_totals(out)["drawn"] == 3  # a random tiny model draws no shapes: the judge keeps none
    assert "from 0 of 3 sampled clips" in capsys.readouterr().out
    before = [p.stat().st_mtime_ns for p in shards]
    shards[1].unlink()
    assert main(argv) == 0  # only the missing shard is sampled again
    assert shards[0].stat().st_mtime_ns == before[0] and shards[1].exists()
    assert main([*argv[:-1], "--seed", "4", "--no-progress"]) == 2  # other settings would mix two draws
    assert "other settings (seed: 0)" in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")
    assert main(argv) == 2
    assert "not pairs shards" in capsys.readouterr().err


def test_the_reflow_stage_refuses_a_run_without_pairs(video_model, tmp_path, capsys):
    assert main(["train", "--no-progress", str(TINY / "reflow.yaml"), f"model.pretrained={video_model}",
                 f"train.output_dir={tmp_path / 'run'}"]) == 2
    assert "data.pairs" in capsys.readouterr().err


def keep_as_asked(frames: np.ndarray, prompt: str) -> list[tuple[str, bool]]:
    return [(prompt, False)]


def test_pairs_keep_each_sample_with_the_noise_it_came_from(video_model, tmp_path):
    pipe = VideoPipeline.from_pretrained(video_model)
    totals = write_pairs(pipe, tmp_path / "pairs", clips=3, batch_size=2, seed=0, label=keep_as_asked,
                         progress=False, num_inference_steps=2, guidance_scale=3.0)
    assert totals == {"shards": 2, "drawn": 3, "kept": 3, "pairs": 3}
    data = PairDataset(tmp_path / "pairs")
    again = pipe(data.captions[:2], output_type="latent", progress=False, stages=["base"], latents=data.noise[:2],
                 num_inference_steps=2, guidance_scale=3.0).frames
    torch.testing.assert_close(again, data.latents[:2])  # the noise given back gives the sample back


def test_reflow_trains_a_tiny_model_to_carry_each_noise_to_its_own_sample_in_few_steps(video_model, tmp_path):
    """A random tiny U-Net's own samples are far outside any data (latents of std ~8), so the pairs
    here are a fixed coupling of its noise with clips of unit scale: after training, its 2 unguided
    steps carry each noise near its own clip, nearer than to the other pairs' clips."""
    from vidgen.models.vae import latent_factor
    from vidgen.weights import save_tensors

    pipe = VideoPipeline.from_pretrained(video_model)
    s = pipe.settings(["base"])
    shape = (4, pipe.model.vae.config.latent_channels, s.num_frames, s.height // latent_factor(pipe.model.vae),
             s.width // latent_factor(pipe.model.vae))
    generator = torch.Generator().manual_seed(0)
    noise, clips = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)  # (b c f h w)
    prompts = ["a red circle moving left", "a blue square moving up", "a green star moving right", "a red circle"]
    save_tensors({"noise": noise, "latents": clips}, tmp_path / "pairs" / "pairs-00000.safetensors",
                 metadata={"captions": json.dumps(prompts), "fps": str(s.fps), "drawn": "4", "kept": "4"})
    run = tmp_path / "reflow"
    assert main(["train", "--no-progress", str(TINY / "reflow.yaml"), f"data.pairs={tmp_path / 'pairs'}",
                 f"model.pretrained={video_model}", f"train.output_dir={run}", "train.max_steps=60"]) == 0
    with open(run / "log.csv", newline="", encoding="utf-8") as rows:
        losses = [float(row["loss"]) for row in csv.DictReader(rows)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    defaults = read_model_index(run / "model").defaults
    assert (defaults.num_inference_steps, defaults.guidance_scale, defaults.candidates) == (2, 1.0, 1)

    few = dict(output_type="latent", progress=False, stages=["base"], latents=noise)
    reflowed = VideoPipeline.from_pretrained(run / "model")(prompts, **few).frames  # its defaults: 2 steps, guidance 1
    before = pipe(prompts, num_inference_steps=2, guidance_scale=1.0, **few).frames
    distances = ((reflowed[:, None] - clips[None]) ** 2).flatten(2).mean(2)  # (made, paired clip)
    own = distances.diagonal()
    assert float(own.mean()) < 0.5 * float(((before - clips) ** 2).mean())
    assert bool((own < distances.masked_fill(torch.eye(4, dtype=torch.bool), float("inf")).min(1).values).all())


def test_latents_given_to_the_pipeline_must_have_the_base_stage_shape(video_model):
    from vidgen.errors import VidgenError

    pipe = VideoPipeline.from_pretrained(video_model)
    with pytest.raises(VidgenError, match="latents of shape"):
        pipe("a red circle moving left", latents=torch.zeros(1, 4, 3, 4, 4), progress=False, num_inference_steps=1)
