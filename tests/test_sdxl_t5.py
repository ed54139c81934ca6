"""SDXL layouts (two text encoders, pooled text and size conditioning) and T5 encoder folders,
inflated and sampled through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_UNET, make_clip_tokenizer, make_unet, make_vae
from vidgen.cli import main

HALF = 16  # each SDXL text encoder's width; the U-Net attends to both: 32
POOLED = 16  # the second encoder's projection width
TIME_DIM = 8  # addition_time_embed_dim
SDXL_UNET = dict(TINY_UNET, addition_embed_type="text_time", addition_time_embed_dim=TIME_DIM,
                 projection_class_embeddings_input_dim=POOLED + 6 * TIME_DIM)


def clip_config(vocab_size: int, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=HALF, intermediate_size=24, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                          pad_token_id=1, **extra)


def ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


@pytest.fixture(scope="module")
def sdxl_image_model(tmp_path_factory) -> Path:
    """A tiny SDXL-layout folder written by diffusers' StableDiffusionXLPipeline.save_pretrained."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = tmp_path_factory.mktemp("models") / "tiny-sdxl"
    tokenizer = make_clip_tokenizer()
    torch.manual_seed(0)
    pipe = StableDiffusionXLPipeline(
        vae=make_vae(), text_encoder=CLIPTextModel(clip_config(len(tokenizer))).eval(), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(clip_config(len(tokenizer), projection_dim=POOLED)).eval(),
        tokenizer_2=make_clip_tokenizer(), unet=make_unet(SDXL_UNET), scheduler=ddim())
    pipe.save_pretrained(folder)
    return folder


def make_t5_tokenizer():
    """A character-level tokenizer built offline with `tokenizers` (no sentencepiece model needed)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{chr(c): 3 + i for i, c in enumerate(range(32, 127))}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=24)


def t5_config(vocab_size: int):
    from transformers import T5Config

    return T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
                    num_heads=4, decoder_start_token_id=0)


@pytest.fixture(scope="module", params=["T5EncoderModel", "T5Model"])
def t5_image_model(request, tmp_path_factory) -> Path:
    """A tiny SD-layout folder whose text_encoder/ is a T5 encoder (or a full T5 with a decoder)."""
    import transformers
    from diffusers import StableDiffusionPipeline

    folder = tmp_path_factory.mktemp("models") / f"tiny-t5-{request.param}"
    tokenizer = make_t5_tokenizer()
    torch.manual_seed(0)
    text_model = getattr(transformers, request.param)(t5_config(len(tokenizer))).eval()
    pipe = StableDiffusionPipeline(vae=make_vae(), text_encoder=text_model, tokenizer=tokenizer, unet=make_unet(),
                                   scheduler=ddim(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def inflate_and_generate(image_model: Path, tmp_path: Path, seed: int = 0) -> np.ndarray:
    model = tmp_path / "video"
    assert main(["inflate", "--image-model", str(image_model), "--out", str(model), "--max-frames", "8",
                 "--frames", "3"]) == 0
    out = tmp_path / "clip"
    assert main(["generate", "a red circle", "--model", str(model), "-o", str(out), "--format", "png", "--steps", "2",
                 "--seed", str(seed), "--no-progress"]) == 0
    frames = np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))])  # (f h w 3)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["prompt"] == "a red circle"
    return frames


def test_sdxl_folder_inflates_and_generates_finite_frames_of_the_asked_shape(sdxl_image_model, tmp_path):
    frames = inflate_and_generate(sdxl_image_model, tmp_path)
    assert frames.shape == (3, 32, 32, 3)  # 16x16 latents, latent factor 2
    assert frames.std() > 0
    for sub in ("text_encoder_2", "tokenizer_2"):  # the video model keeps both encoders
        assert (tmp_path / "video" / sub).is_dir()


def test_sdxl_pooled_text_and_time_ids_reach_the_unet(sdxl_image_model):
    from vidgen.interop.sdxl import SDXLTextEncoder, split_condition
    from vidgen.model_folder import VideoModel

    model = VideoModel.from_image_model(sdxl_image_model, max_frames=8)
    encoder, unet = model.text_encoder, model.stages["base"]
    assert isinstance(encoder, SDXLTextEncoder)
    with torch.no_grad():
        cond = encoder.encode(["a red circle"])  # (1, n + r, 32)
        tokens, added = split_condition(cond, unet.unet.config)
        assert tokens.shape == (1, encoder.max_length, 2 * HALF)
        assert added["text_embeds"].shape == (1, POOLED) and added["text_embeds"].abs().sum() > 0
        assert added["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]]  # the model's default size until a call sets it
        encoder.image_size = (64, 48)
        resized = encoder.encode(["a red circle"])
        x = torch.randn(1, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        base = unet(x, 500, cond)
        assert torch.isfinite(base).all()
        pooled_changed = cond.clone()
        pooled_changed[:, -1, :POOLED] += 1.0
        assert not torch.allclose(unet(x, 500, pooled_changed), base, atol=1e-5)
        assert torch.equal(resized[:, :-1], cond[:, :-1])  # only the time ids differ
        assert not torch.allclose(unet(x, 500, resized), base, atol=1e-5)
        null = encoder.null(1)  # zero tokens and pooled embedding, the prompts' time ids
        assert null.shape == cond.shape and split_condition(null, unet.unet.config)[1]["time_ids"][0, 0] == 64


def test_t5_folder_loads_the_encoder_only_and_inflates_and_generates(t5_image_model, tmp_path):
    from transformers import T5EncoderModel

    from vidgen.text import TextEncoder

    encoder = TextEncoder.from_pretrained(t5_image_model)
    assert type(encoder.model) is T5EncoderModel  # no decoder built, even from a full T5Model folder
    assert not any("decoder" in name for name, _ in encoder.model.named_parameters())
    full = json.loads((t5_image_model / "text_encoder" / "config.json").read_text())["architectures"][0]
    if full == "T5Model":  # the encoder's weights are the saved ones, not fresh random ones
        from safetensors.torch import load_file

        saved = load_file(t5_image_model / "text_encoder" / "model.safetensors")
        assert torch.equal(encoder.model.encoder.block[0].layer[0].SelfAttention.q.weight,
                           saved["encoder.block.0.layer.0.SelfAttention.q.weight"])
    frames = inflate_and_generate(t5_image_model, tmp_path)
    assert frames.shape == (3, 32, 32, 3) and frames.std() > 0


def test_sdxl_size_ids_follow_the_size_of_each_call(sdxl_image_model):
    from vidgen.model_folder import VideoModel
    from vidgen.pipeline import VideoPipeline

    pipe = VideoPipeline(VideoModel.from_image_model(sdxl_image_model, max_frames=8))
    out = pipe("a red circle", num_frames=2, height=48, width=40, num_inference_steps=1, seed=0, progress=False,
               output_type="pt")
    assert out.frames.shape == (1, 3, 2, 48, 40) and torch.isfinite(out.frames).all()
    assert pipe.model.text_encoder.image_size == (48, 40)


def test_an_inflated_sdxl_model_trains_its_temporal_layers(sdxl_image_model, tmp_path):
    from safetensors.torch import load_file

    model, run = tmp_path / "video", tmp_path / "run"
    assert main(["inflate", "--image-model", str(sdxl_image_model), "--out", str(model), "--max-frames", "8"]) == 0
    assert main(["data", "shapes", "--out", str(tmp_path / "corpus"), "--videos", "2", "--size", "32",
                 "--no-progress", "frames=4"]) == 0
    assert main(["train", "--no-progress", str(Path(__file__).resolve().parents[1] / "configs/tiny/video.yaml"),
                 f"data.manifest={tmp_path / 'corpus' / 'manifest.jsonl'}", f"train.output_dir={run}",
                 f"model.pretrained={model}", "data.num_frames=4", "train.max_steps=2", "train.ema_decay=0",
                 "train.checkpoint_every=2"]) == 0
    before = load_file(model / "unet" / "model.safetensors")
    after = load_file(run / "model" / "unet" / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(k.startswith("temporal_") or k.startswith("fps_") for k in changed)
