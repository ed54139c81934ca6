"""Tiny diffusers video folders for the interop tests (tests/test_diffusers_video.py,
tests/test_animatediff.py): a TextToVideoSDPipeline (ModelScope / zeroscope layout) and a
Stable Diffusion folder with a MotionAdapter (AnimateDiff), every weight perturbed with seeded
noise so that layers diffusers initialises to zero (the temporal output projections) count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conftest import TEXT_DIM, make_clip_text_model, make_clip_tokenizer, make_vae

TINY_UNET3D = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=8,
)
TINY_ADAPTER = dict(block_out_channels=(16, 32), motion_layers_per_block=1, motion_num_attention_heads=8,
                    motion_norm_num_groups=8, motion_max_seq_length=32, use_motion_mid_block=True)
SETTINGS = dict(steps=2, guidance=5.0, seed=3, frames=3, height=16, width=16)
PROMPT = "a red ball"


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Add seeded Gaussian noise to every parameter (zero-initialised ones included)."""
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=generator) * scale)
    return model.eval()


def ddim_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def text_parts():
    tokenizer = make_clip_tokenizer()
    return perturb(make_clip_text_model(len(tokenizer)), 1), tokenizer


def make_unet3d(seed: int = 0):
    from diffusers import UNet3DConditionModel

    torch.manual_seed(seed)
    return perturb(UNet3DConditionModel(**TINY_UNET3D), seed + 10)


def make_text_to_video_pipeline():
    from diffusers import TextToVideoSDPipeline

    text_encoder, tokenizer = text_parts()
    return TextToVideoSDPipeline(vae=perturb(make_vae(), 2), text_encoder=text_encoder, tokenizer=tokenizer,
                                 unet=make_unet3d(), scheduler=ddim_scheduler())


def make_motion_adapter(seed: int = 5):
    from diffusers import MotionAdapter

    torch.manual_seed(seed)
    return perturb(MotionAdapter(**TINY_ADAPTER), seed + 10)


def pipeline_frames(pipe, settings: dict = SETTINGS, prompt: str = PROMPT) -> np.ndarray:
    """uint8 (f, h, w, 3) frames of a diffusers video pipeline with a fresh DDIM scheduler from
    its own scheduler config, as the comparisons take them: round(np_frames * 255)."""
    from diffusers import DDIMScheduler

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    out = pipe(prompt, num_inference_steps=settings["steps"], guidance_scale=settings["guidance"],
               num_frames=settings["frames"], height=settings["height"], width=settings["width"],
               eta=settings.get("eta", 0.0), generator=torch.Generator().manual_seed(settings["seed"]),
               output_type="np")
    frames = out.frames[0]  # (f h w 3) in [0, 1]
    return np.round(frames * 255).astype(np.uint8)


def generate_args(model: Path, out: Path, settings: dict = SETTINGS, prompt: str = PROMPT) -> list[str]:
    return ["generate", prompt, "--model", str(model), "-o", str(out), "--format", "png", "--scheduler", "ddim",
            "--steps", str(settings["steps"]), "--guidance", str(settings["guidance"]), "--seed", str(settings["seed"]),
            "--frames", str(settings["frames"]), "--height", str(settings["height"]), "--width", str(settings["width"]),
            "--eta", str(settings.get("eta", 0.0)), "--no-progress"]


def png_frames(folder: Path) -> np.ndarray:
    """(f, h, w, 3) uint8 frames of a PNG folder vidgen wrote."""
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(Path(folder).glob("*.png"))])


def max_difference(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def make_sd_pipeline():
    """A tiny Stable Diffusion text-to-image pipeline with perturbed weights."""
    from diffusers import StableDiffusionPipeline

    from conftest import make_unet

    text_encoder, tokenizer = text_parts()
    return StableDiffusionPipeline(vae=perturb(make_vae(), 2), text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=perturb(make_unet(), 3), scheduler=ddim_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def make_animatediff_pipeline(sd, adapter):
    from diffusers import AnimateDiffPipeline

    return AnimateDiffPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
                               motion_adapter=adapter, scheduler=sd.scheduler)


ADAPTER_TO_ORIGINAL = ((".attn1.", ".attention_blocks.0."), (".attn2.", ".attention_blocks.1."),
                       (".norm1.", ".norms.0."), (".norm2.", ".norms.1."), (".norm3.", ".ff_norm."))


def original_motion_module(adapter) -> dict:
    """The adapter's tensors under the original AnimateDiff code's key names (as its released
    mm_sd_*.ckpt files name them): `motion_modules.N.temporal_transformer.*`, attention_blocks,
    norms, ff_norm, a position table per attention."""
    import re

    tensors = {}
    for key, value in adapter.state_dict().items():
        key = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key)
        if key.endswith(".pos_embed.pe"):
            block = key[:-len(".pos_embed.pe")]
            for i in (0, 1):
                tensors[f"{block}.attention_blocks.{i}.pos_encoder.pe"] = value.clone()
            continue
        for new, old in ADAPTER_TO_ORIGINAL:
            key = key.replace(new, old)
        tensors[key] = value.clone().contiguous()
    return tensors


def shapes_corpus(root: Path) -> Path:
    """A 2-clip shapes corpus of 16 px, 8 frames; returns its manifest."""
    from vidgen.cli import main

    assert main(["data", "shapes", "--out", str(root / "corpus"), "--videos", "2", "--size", "16", "--no-progress",
                 "frames=8"]) == 0
    return root / "corpus" / "manifest.jsonl"


def train(stage: str, manifest: Path, pretrained: Path, out: Path, frames: int = 4, steps: int = 2) -> Path:
    """`vidgen train` of the tiny preset configs/tiny/STAGE.yaml at 16 px, in-process; returns the model folder."""
    from vidgen.cli import main

    preset = Path(__file__).resolve().parents[1] / "configs" / "tiny" / f"{stage}.yaml"
    assert main(["train", "--no-progress", str(preset), f"data.manifest={manifest}", f"train.output_dir={out}",
                 f"model.pretrained={pretrained}", f"train.max_steps={steps}", "train.batch_size=1",
                 f"data.num_frames={frames}", "data.size=16", f"train.checkpoint_every={steps}"]) == 0
    return out / "model"


def logged_losses(run: Path) -> list[float]:
    import csv

    with open(run / "log.csv", newline="", encoding="utf-8") as rows:
        return [float(row["loss"]) for row in csv.DictReader(rows)]


def split_changes(before: dict, after: dict, temporal_modules: tuple[str, ...]) -> tuple[set, set]:
    """(temporal keys that changed, spatial keys that changed) between two state dicts."""
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    temporal = {k for k in changed if any(m in k.split(".") for m in temporal_modules)}
    return temporal, changed - temporal
