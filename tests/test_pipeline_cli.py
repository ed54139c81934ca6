"""End to end: a tiny SD-layout image model -> `vidgen inflate` -> `vidgen generate` -> MP4; and the
pieces between (text encoders, chunked VAE, the pipeline object)."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from vidgen import VideoPipeline
from vidgen.cli import main
from vidgen.data.reader import probe_video, read_frames
from vidgen.errors import VidgenError
from vidgen.models.vae import decode_latents, encode_video, latent_factor
from vidgen.text import TextEncoder

STEPS = "3"
LONG_PROMPT = "a small red circle slowly moving from the left to the right"  # > 30 characters = tokens


@pytest.fixture(scope="module")
def video_model(sd_image_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("video") / "tiny-video"
    assert main(["inflate", "--image-model", str(sd_image_model), "--out", str(out), "--max-frames", "16",
                 "--frames", "8"]) == 0
    return out


@pytest.fixture(scope="module")
def pipe(video_model):
    return VideoPipeline.from_pretrained(video_model)


def generate(model, out, *args):
    assert main(["generate", "-o", str(out), "--model", str(model), "--steps", STEPS, "--no-progress", *args]) == 0
    return read_frames(out)  # (f h w 3)


# --- text encoders and the VAE ------------------------------------------------------------------

def test_clip_text_encoder_from_sd_layout_folder(sd_image_model, caplog):
    text = TextEncoder.from_pretrained(sd_image_model)
    with torch.inference_mode():
        null = text.null(3)  # first asked while sampling
    assert not null.is_inference()  # ... and still a constant that training can use
    with torch.no_grad():
        emb = text.encode(["a red circle", "a blue square"])
        assert emb.shape == (2, text.max_length, 32) == (2, 32, 32)
        assert torch.equal(null, text.encode([""]).expand(3, -1, -1))
        assert caplog.records == []
        with caplog.at_level(logging.WARNING, logger="vidgen.text"):
            text.encode([LONG_PROMPT])
    assert "longer than the 32 tokens" in caplog.text and "cut to" in caplog.text


def test_encoder_only_text_model_through_automodel(bert_text_model, tmp_path):
    text = TextEncoder.from_pretrained(bert_text_model)
    assert text.use_attention_mask and text.max_length == 32
    with torch.no_grad():
        assert text.encode(["a red circle"]).shape == (1, 32, 32)
    TextEncoder.from_pretrained(bert_text_model, max_length=8).save_pretrained(tmp_path)
    assert TextEncoder.from_pretrained(tmp_path).max_length == 8  # the cap travels with the tokenizer


def test_vae_works_in_frame_chunks(sd_image_model):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(sd_image_model / "vae")
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1  # (b c f h w)
    with torch.no_grad():
        latents = encode_video(vae, video, chunk_size=2, generator=torch.Generator().manual_seed(0))
        assert latents.shape == (1, 4, 5, 16, 16) and latent_factor(vae) == 2
        whole = decode_latents(vae, latents, chunk_size=8)
        torch.testing.assert_close(decode_latents(vae, latents, chunk_size=2), whole)
    assert whole.shape == video.shape and whole.abs().max() <= 1


# --- the model folder and the pipeline ----------------------------------------------------------

def test_inflate_writes_a_self_describing_model_folder(video_model):
    index = json.loads((video_model / "vidgen.json").read_text())
    assert index["stages"] == {"base": "unet"}
    assert index["defaults"] | {} == {"num_frames": 8, "fps": 8.0, "height": 32, "width": 32,
                                      "num_inference_steps": 50, "guidance_scale": 7.5, "motion_guidance": 0.0,
                                      "arrow_check": False, "candidates": 1, "choose_by": "arrow", "choose_at_step": 0,
                                      "reconstruction_guidance": 0.0, "autocast": "off", "motion_noise": False,
                                      "guidance_from_step": 0, "continue_strength": 1.0, "motion_projection": 0}
    assert index["critic"] == ""  # no arrow critic until a critic stage adds one
    for sub in ("unet/model.safetensors", "unet/temporal.json", "unet/config.json", "vae", "text_encoder",
                "tokenizer", "scheduler/scheduler_config.json"):
        assert (video_model / sub).exists(), sub
    assert not list(video_model.rglob("*.bin")) and not list(video_model.rglob("*.pt"))


def test_pipeline_call_is_seeded_and_sized(pipe):
    out = pipe("a red circle", num_frames=4, num_inference_steps=2, seed=3, output_type="pt", progress=False)
    clip = out.frames
    assert clip.shape == (1, 3, 4, 32, 32) and clip.dtype == torch.float32 and clip.abs().max() <= 1
    assert (out.settings.num_frames, out.settings.num_inference_steps, out.settings.height) == (4, 2, 32)
    assert out.fps == 8.0 and out.stages == ["base"] and list(out.timings) == ["text", "base", "decode"]
    assert out.reversed == [False] and out.kept_candidates == [0] and out.autocast == "float32"
    again = pipe("a red circle", num_frames=4, num_inference_steps=2, generator=torch.Generator().manual_seed(3),
                 output_type="pt", progress=False)
    assert torch.equal(clip, again.frames)
    frames = pipe(["a", "b"], negative_prompt="c", num_frames=2, num_inference_steps=1, seed=0, progress=False).frames
    assert frames.shape == (2, 2, 32, 32, 3) and frames.dtype == np.uint8


def test_pipeline_runs_another_diffusers_scheduler(video_model):
    dpm = VideoPipeline.from_pretrained(video_model, scheduler="dpm++")
    clip = dpm("a red circle", num_frames=2, num_inference_steps=2, seed=0, progress=False).frames
    assert clip.shape == (1, 2, 32, 32, 3)


# --- the CLI, end to end ------------------------------------------------------------------------

def test_generate_writes_a_deterministic_mp4_that_seed_guidance_and_negative_prompt_change(video_model, tmp_path):
    prompt = ["a red circle moving right", "--seed", "7"]
    first = generate(video_model, tmp_path / "a.mp4", *prompt)
    info = probe_video(tmp_path / "a.mp4")
    assert first.shape == (8, 32, 32, 3) and (info.num_frames, info.width, info.height, info.fps) == (8, 32, 32, 8.0)
    assert np.array_equal(generate(video_model, tmp_path / "b.mp4", *prompt), first)

    def differs(frames):
        return np.abs(frames.astype(int) - first.astype(int)).mean() > 1.0

    assert differs(generate(video_model, tmp_path / "seed.mp4", prompt[0], "--seed", "8"))
    assert differs(generate(video_model, tmp_path / "guidance.mp4", *prompt, "--guidance", "1"))
    assert differs(generate(video_model, tmp_path / "negative.mp4", *prompt, "--negative", "a blue square"))
    meta = json.loads((tmp_path / "negative.mp4.json").read_text())
    assert {k: meta[k] for k in ("prompt", "negative_prompt", "seed", "steps", "guidance", "eta", "frames", "fps")} == {
        "prompt": prompt[0], "negative_prompt": "a blue square", "seed": 7, "steps": 3, "guidance": 7.5, "eta": 0.0,
        "frames": 8, "fps": 8.0}
    assert meta["model"] == str(video_model) and "vidgen_version" in meta


def test_motion_guidance_needs_an_arrow_critic_and_one_steers_the_clip(video_model, tmp_path, capsys):
    from vidgen.model_folder import VideoModel
    from vidgen.models.critic import ArrowCritic, CriticConfig
    from vidgen.shipping import package_model
    from vidgen.weights import CheckpointError

    prompt = ["a red circle moving right", "--seed", "7"]
    assert main(["generate", *prompt, "-o", str(tmp_path / "x.mp4"), "--model", str(video_model),
                 "--motion-guidance", "5"]) == 2
    assert "needs an arrow critic, and this model has none" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()

    model = VideoModel.from_pretrained(video_model)
    with pytest.raises(CheckpointError, match="reads 3-channel latents and 384-wide text"):
        model.set_critic(ArrowCritic(CriticConfig(latent_channels=3, text_dim=384)))
    torch.manual_seed(0)
    model.set_critic(ArrowCritic(CriticConfig(latent_channels=4, text_dim=model.text_encoder.hidden_size,
                                              widths=(8, 16), embed_dim=16)))
    model.save_pretrained(tmp_path / "with-critic")
    assert json.loads((tmp_path / "with-critic" / "vidgen.json").read_text())["critic"] == "critic"
    assert VideoModel.from_pretrained(tmp_path / "with-critic").critic is not None

    plain = generate(video_model, tmp_path / "plain.mp4", *prompt)
    off = generate(tmp_path / "with-critic", tmp_path / "off.mp4", *prompt)  # the folder's default: 0
    guided = generate(tmp_path / "with-critic", tmp_path / "guided.mp4", *prompt, "--motion-guidance", "200")
    assert np.array_equal(off, plain)
    assert np.abs(guided.astype(int) - plain.astype(int)).mean() > 1.0
    assert json.loads((tmp_path / "guided.mp4.json").read_text())["motion_guidance"] == 200.0
    for bad in ("-1", "nan"):
        assert main(["generate", *prompt, "-o", str(tmp_path / "y.mp4"), "--model", str(tmp_path / "with-critic"),
                     "--motion-guidance", bad]) == 2
        assert "argument --motion-guidance: must be" in capsys.readouterr().err  # refused at parsing
    with pytest.raises(VidgenError, match="needs an arrow critic"):  # no folder whose default would fail
        package_model(video_model, tmp_path / "packed", settings={"defaults": {"motion_guidance": 5.0}})
    assert not (tmp_path / "packed").exists()
    half = VideoModel.from_pretrained(tmp_path / "with-critic", dtype=torch.float16)
    assert next(half.critic.parameters()).dtype == torch.float16  # the critic follows the model's dtype
    model.critic.half()
    model.set_critic(model.critic)  # and a critic given in another dtype is brought to it
    assert next(model.critic.parameters()).dtype == torch.float32


def test_arrow_check_plays_backwards_the_clips_the_critic_reads_as_backwards(video_model, tmp_path, capsys,
                                                                              monkeypatch):
    from vidgen.models import critic_choice
    from vidgen.models.critic import ArrowCritic, CriticConfig
    from vidgen.shipping import package_model

    prompt = ["a red circle moving right", "--seed", "7"]
    assert main(["generate", *prompt, "-o", str(tmp_path / "x.mp4"), "--model", str(video_model),
                 "--arrow-check"]) == 2
    assert "the arrow check needs an arrow critic" in capsys.readouterr().err
    with pytest.raises(VidgenError, match="defaults.arrow_check needs an arrow critic"):
        package_model(video_model, tmp_path / "packed", settings={"defaults": {"arrow_check": True}})
    with pytest.raises(VidgenError, match="defaults.arrow_check takes true or false"):
        package_model(video_model, tmp_path / "packed", settings={"defaults": {"arrow_check": "false"}})
    with pytest.raises(VidgenError, match="defaults.candidates takes a number, got 'four'"):
        package_model(video_model, tmp_path / "packed", settings={"defaults": {"candidates": "four"}})
    with pytest.raises(VidgenError, match="defaults.autocast takes a word, got 1"):
        package_model(video_model, tmp_path / "packed", settings={"defaults": {"autocast": 1}})

    pipe = VideoPipeline.from_pretrained(video_model)
    torch.manual_seed(0)
    pipe.model.set_critic(ArrowCritic(CriticConfig(latent_channels=4, text_dim=pipe.model.text_encoder.hidden_size,
                                                   widths=(8, 16), embed_dim=16)))
    # The check itself: every clip the critic reads as backwards, and only those, comes back reversed,
    # and afterwards the critic reads every clip as forward (d(reverse x) = -d(x)).
    cond = pipe.encode_prompts(["a red circle moving right", "a blue square moving up"] * 4)
    latents = torch.randn(8, 4, 6, 8, 8, generator=torch.Generator().manual_seed(1))  # (b c f h w)
    checked, reversed_ = critic_choice.arrow_check(pipe.model.critic, latents, cond)
    zero = torch.zeros(1, dtype=torch.long)
    before = pipe.model.critic(latents, zero, cond)
    assert reversed_ == (before < 0).tolist() and 0 < sum(reversed_) < 8
    for clip, was, is_reversed in zip(checked, latents, reversed_):
        assert torch.equal(clip, was.flip(1) if is_reversed else was)
    assert (pipe.model.critic(checked, zero, cond) >= 0).all()

    # Through the pipeline: the clip checked is the unchecked one, played backwards where the critic said so.
    prompts = ["a red circle moving right", "a green triangle moving left", "a blue square moving up"]
    plain = pipe(prompts, num_inference_steps=2, seed=3, output_type="pt", progress=False)  # (b c f h w) frames
    assert plain.reversed == [False] * 3
    checked = pipe(prompts, num_inference_steps=2, seed=3, output_type="pt", progress=False, arrow_check=True)
    assert any(checked.reversed)
    for clip, was, is_reversed in zip(checked.frames, plain.frames, checked.reversed):
        torch.testing.assert_close(clip, was.flip(1) if is_reversed else was)

    # Candidates: each prompt's clip is the one of its candidates the critic reads as most forward,
    # the same clip as drawn in a batch of all candidates (prompt-major) with the check applied.
    many = [p for p in prompts for _ in range(3)]
    pool = pipe(many, num_inference_steps=2, seed=3, output_type="pt", progress=False, arrow_check=True)
    with pytest.raises(VidgenError, match="candidates must be 1, or more"):
        pipe(prompts, num_inference_steps=2, seed=3, progress=False, candidates=0)
    chosen = pipe(prompts, num_inference_steps=2, seed=3, output_type="pt", progress=False, arrow_check=True,
                  candidates=3)
    assert chosen.frames.shape == plain.frames.shape
    picks = [min(range(3), key=lambda j: (pool.frames[3 * i + j] - clip).abs().max().item())
             for i, clip in enumerate(chosen.frames)]
    assert chosen.kept_candidates == picks
    for i, (clip, j) in enumerate(zip(chosen.frames, picks)):
        torch.testing.assert_close(clip, pool.frames[3 * i + j])
        assert chosen.reversed[i] == pool.reversed[3 * i + j]
    calls = []
    logits = critic_choice.arrow_logits
    monkeypatch.setattr(critic_choice, "arrow_logits", lambda *args: calls.append(logits(*args)) or calls[-1])
    pipe(prompts, num_inference_steps=2, seed=3, output_type="pt", progress=False, arrow_check=True, candidates=3)
    monkeypatch.undo()
    assert picks == calls[-1].view(3, 3).argmax(dim=1).tolist() and (calls[-1] >= 0).all()
    # With a negative prompt too, each prompt's clip is one of its own candidates' (prompt-major).
    pool = pipe(many, negative_prompt="a gray background", num_inference_steps=2, seed=3, output_type="pt",
                progress=False, arrow_check=True).frames
    chosen = pipe(prompts, negative_prompt="a gray background", num_inference_steps=2, seed=3, output_type="pt",
                  progress=False, arrow_check=True, candidates=3).frames
    for i, clip in enumerate(chosen):
        assert min((pool[3 * i + j] - clip).abs().max().item() for j in range(3)) < 1e-4

    # The folder's default, the command line's override, and the sidecar that records both.
    pipe.model.index.defaults.arrow_check = True
    pipe.save_pretrained(tmp_path / "checked")
    generate(tmp_path / "checked", tmp_path / "on.mp4", *prompt)
    generate(tmp_path / "checked", tmp_path / "off.mp4", *prompt, "--no-arrow-check")
    on, off = (json.loads((tmp_path / f"{name}.mp4.json").read_text()) for name in ("on", "off"))
    assert on["arrow_check"] is True and off["arrow_check"] is False and off["reversed"] is False
    assert isinstance(on["reversed"], bool) and on["candidates"] == 1
    generate(tmp_path / "checked", tmp_path / "two.mp4", *prompt, "--candidates", "2")
    assert json.loads((tmp_path / "two.mp4.json").read_text())["candidates"] == 2
    assert main(["generate", *prompt, "-o", str(tmp_path / "z.mp4"), "--model", str(video_model),
                 "--candidates", "2"]) == 2
    assert "this model has no critic" in capsys.readouterr().err
    assert main(["generate", *prompt, "-o", str(tmp_path / "z.mp4"), "--model", str(tmp_path / "checked"),
                 "--candidates", "0"]) == 2  # refused by argparse, before the model loads
    assert "must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "z.mp4").exists()


def test_generate_sizes_frames_and_formats(video_model, tmp_path):
    frames = generate(video_model, tmp_path / "clip.gif", "a dot", "--frames", "3", "--height", "16", "--width", "24",
                      "--fps", "12", "--seed", "0", "--eta", "1", "--scheduler", "ddim")
    assert frames.shape == (3, 16, 24, 3)


def test_generate_one_clip_per_line_of_a_prompts_file(video_model, tmp_path):
    (tmp_path / "prompts.txt").write_text("a red circle\n\n  a blue square  \n")
    assert main(["generate", "--prompts", str(tmp_path / "prompts.txt"), "-o", str(tmp_path / "out.mp4"),
                 "--model", str(video_model), "--steps", "1", "--frames", "2", "--seed", "0", "--no-progress"]) == 0
    prompts = [json.loads((tmp_path / f"out_{i:03d}.mp4.json").read_text())["prompt"] for i in range(2)]
    assert prompts == ["a red circle", "a blue square"] and not (tmp_path / "out_002.mp4").exists()


@pytest.mark.parametrize("args, message", [
    (["--height", "31"], "height 31 is not a positive multiple of 2"),
    (["--frames", "17"], "1 to 16 frames"),
    (["--scheduler", "nope"], "unknown scheduler 'nope'"),
])
def test_generate_refuses_what_the_model_cannot_take(video_model, tmp_path, capsys, args, message):
    assert main(["generate", "x", "-o", str(tmp_path / "x.mp4"), "--model", str(video_model), *args]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()


def test_generate_without_a_model_or_with_an_image_model_says_what_to_do(sd_image_model, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setattr("vidgen.packaged.DEFAULT_MODEL", tmp_path / "no-default-model")
    assert main(["generate", "x", "-o", str(tmp_path / "x.mp4")]) == 2
    assert "no embedded default model" in capsys.readouterr().err
    assert main(["generate", "x", "-o", str(tmp_path / "x.mp4"), "--model", str(sd_image_model)]) == 2
    assert "vidgen inflate --image-model" in capsys.readouterr().err


def test_inflate_refuses_a_folder_that_is_not_an_image_model_or_an_existing_out(video_model, tmp_path, capsys):
    assert main(["inflate", "--image-model", str(tmp_path), "--out", str(tmp_path / "v")]) == 2
    assert "lacks unet, vae, text_encoder, tokenizer, scheduler/" in capsys.readouterr().err
    assert main(["inflate", "--image-model", str(tmp_path), "--out", str(video_model)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_generate_autocast_option_and_model_default(video_model, tmp_path, capsys):
    from vidgen.commands.sampling import AUTOCAST_CHOICES as CLI_CHOICES
    from vidgen.model_index import AUTOCAST_CHOICES, read_model_index, write_model_index

    assert CLI_CHOICES == AUTOCAST_CHOICES
    prompt = ["a red circle moving right", "--seed", "3", "--frames", "2"]
    plain = generate(video_model, tmp_path / "plain.mp4", *prompt)
    assert json.loads((tmp_path / "plain.mp4.json").read_text())["autocast"] == "float32"
    fast = generate(video_model, tmp_path / "bf16.mp4", *prompt, "--autocast", "bfloat16")
    assert json.loads((tmp_path / "bf16.mp4.json").read_text())["autocast"] == "bfloat16"
    assert not np.array_equal(fast, plain)

    # A model folder may ship a default precision; a bad one is refused, naming the key.
    model = tmp_path / "model"
    shutil.copytree(video_model, model)
    index = read_model_index(model)
    index.defaults.autocast = "bfloat16"
    write_model_index(model, index)
    assert np.array_equal(generate(model, tmp_path / "default.mp4", *prompt), fast)
    assert np.array_equal(generate(model, tmp_path / "off.mp4", *prompt, "--autocast", "off"), plain)
    text = (model / "vidgen.json").read_text().replace('"autocast": "bfloat16"', '"autocast": "half"')
    (model / "vidgen.json").write_text(text)
    assert main(["generate", "x", "-o", str(tmp_path / "x.mp4"), "--model", str(model)]) == 2
    assert "defaults: autocast must be one of off, auto, bfloat16, float16, got 'half'" in capsys.readouterr().err


def test_choose_by_choices_agree_and_a_bad_one_in_a_model_folder_is_named(video_model, tmp_path, capsys):
    from vidgen.commands.sampling import CHOOSE_BY_CHOICES as CLI_CHOICES
    from vidgen.model_index import CHOOSE_BY_CHOICES

    assert CLI_CHOICES == CHOOSE_BY_CHOICES
    model = tmp_path / "model"
    shutil.copytree(video_model, model)
    text = (model / "vidgen.json").read_text()
    assert '"choose_by": "arrow"' in text
    (model / "vidgen.json").write_text(text.replace('"choose_by": "arrow"', '"choose_by": "best"'))
    assert main(["generate", "x", "-o", str(tmp_path / "x.mp4"), "--model", str(model)]) == 2
    assert "defaults: choose_by must be one of arrow, swaps, got 'best'" in capsys.readouterr().err
    # A model without a critic trained on swaps cannot choose by them.
    assert main(["generate", "x", "-o", str(tmp_path / "y.mp4"), "--model", str(video_model), "--choose-by",
                 "swaps"]) == 2
    assert "choose_by 'swaps' needs an arrow critic trained on swapped captions" in capsys.readouterr().err
