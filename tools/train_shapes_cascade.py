"""Retrain the embedded default shapes model from nothing, stage by stage, with vidgen's own commands.

    python tools/train_shapes_cascade.py --work runs/shapes            # everything, resuming where it stopped
    python tools/train_shapes_cascade.py --work runs/shapes --only vae  # one stage
    python tools/train_shapes_cascade.py --work runs/shapes --comparison --only video-unlabeled
                                    # the video stage with every caption withheld, for comparison

Each stage is a `vidgen train` run with its config in configs/shapes/; a stage whose exported
model exists is skipped, and an interrupted stage resumes from its newest checkpoint. Stage
times are appended to WORK/times.csv.

Time each stage took for the shipped model on a 2-core CPU (2 torch threads): corpus64 1 min,
vae 32 min, image 55 min, inflate 4 s, video 71 min (0.95 s/step), interp 24 min (0.71 s/step),
corpus128 80 min (beside a training run), sr 32 min (0.77 s/step), then the base stage's later
phases: video-8000 about 55 min (0.95 s/step), video-text 31 min (1.25 s/step), video-full 20 min
(1.19 s/step), video-rep 60 min (1.2 s/step); then the arrow critic, 20 min (0.47 s/step at
batch 32), and its swapped-caption phase, 5 min (0.31 s/step; building the latent cache of
corpus64 first took 4 min); about 8 hours in all. The last two base phases, video-gpu (1829 steps
at batch 128 on clips 0-11999) and video-gpu-2 (1851 steps on clips 12000-23999), ran on lent H200s in 7.8 and 8.7 min,
corpus included (research/gpu_train_base.py); at this CPU's 3.3 clips/s each would take about 20 hours.

The shipped folder is the sr run's cascade with the base stage of the last video phase and the
arrow critic of the critic-swap phase (step shipped-gpu-2), then its critic choosing among the
candidates after 4 of their 13 steps, and given frames steering the rest by reconstruction
guidance (step package-early; the same weights):

    python tools/package_default_model.py runs/shapes/sr/model --base runs/shapes/video-gpu-2/video-gpu/model \
        --critic runs/shapes/critic-swap/model defaults.arrow_check=true defaults.candidates=4 \
        defaults.choose_by=arrow defaults.autocast=auto defaults.num_inference_steps=13 \
        interp.num_inference_steps=10 interp.strength=0.4 sr.num_inference_steps=10 sr.strength=0.5 \
        defaults.choose_at_step=4 defaults.reconstruction_guidance=10

The issue-38 phases (pairs, reflow, package-reflow) retrain the base stage on its own judged
samples; that model was not shipped (docs/experiments.md). pairs took 44.5 min and reflow 2.45 s a
step (956 steps run) on a 2-core CPU with AVX512-BF16.

Finished early stages are kept in git in half precision: the VAE as shipped
(vidgen/default_model/vae/) and the image U-Net (tools/shapes_stages/image-unet/, written with
--archive-image). On a machine whose WORK folder is gone they are rebuilt from there (the image
model with the packaged MiniLM) instead of retrained; delete them to retrain from nothing.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "shapes"
IMAGE_ARCHIVE = ROOT / "tools" / "shapes_stages" / "image-unet"
SHIPPED_VAE = ROOT / "vidgen" / "default_model" / "vae"


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def timed(work: Path, name: str, cmd: list[str]) -> None:
    started = time.perf_counter()
    run(cmd)
    with open(work / "times.csv", "a", newline="") as f:
        csv.writer(f).writerow([name, round(time.perf_counter() - started, 1)])


def steps(work: Path, comparison: bool = False) -> list[tuple[str, Path, list[str]]]:
    """(name, the folder it makes, command), in cascade order; with `comparison`, also the video
    stage with every caption withheld (for the direction table in docs/experiments.md)."""
    vidgen = [sys.executable, "-m", "vidgen"]

    def corpus(size: int) -> tuple[str, Path, list[str]]:
        folder = work / f"corpus{size}"  # the same seed: the same clips at two sizes
        return f"corpus{size}", folder / "manifest.jsonl", [*vidgen, "data", "shapes", "--out", str(folder), "--videos",
                                                           "2000", "--seed", "0", "--size", str(size), "--no-progress"]

    def train(stage: str, *overrides: str, size: int = 64, name: str | None = None) -> tuple[str, Path, list[str]]:
        name = name or stage
        out = work / name
        return name, out / "model", [*vidgen, "train", str(CONFIGS / f"{stage}.yaml"),
                                      f"data.manifest={work / f'corpus{size}' / 'manifest.jsonl'}",
                                      f"train.output_dir={out}", *overrides, "--no-progress"]

    cache = f"data.latent_cache={work / 'latents64'}"
    unlabeled = [train("video", f"model.pretrained={work / 'inflated'}", cache,
                       "data.withhold_captions=1.0", name="video-unlabeled")] if comparison else []
    # The base stage trains on after interp and sr have started from its 4500-step model, in
    # three phases, all with the same 80 % of captions withheld (configs/shapes/video.yaml):
    video_8000 = train("video", f"model.pretrained={work / 'inflated'}", cache, "train.max_steps=8000")
    base = [
        # 1. the video run itself, resumed from its step-4500 checkpoint to 8000 steps;
        ("video-8000", work / "video" / "checkpoints" / "step-00008000", video_8000[2]),
        # 2. a pooled text embedding added to the time embedding (model.text_embedding);
        train("video", f"model.pretrained={work / 'video' / 'model'}", cache, "model.text_embedding=true",
              "train.max_steps=1500", name="video-text"),
        # 3. the spatial layers unfrozen, so that frames can move and not only fade;
        train("video", f"model.pretrained={work / 'video-text' / 'model'}", cache, "model.freeze_spatial=false",
              "train.max_steps=1000", "train.lr=1e-4", "train.warmup_steps=100", name="video-full"),
        # 4. the same, each of the 20 % captioned clips listed 6 times per epoch, so that half of a
        #    batch is labeled and the words for direction bind to motion. Ships as the base stage.
        train("video", f"model.pretrained={work / 'video-full' / 'model'}", cache, "model.freeze_spatial=false",
              "data.captioned_repeat=6", "train.max_steps=3000", "train.lr=1e-4", "train.warmup_steps=50",
              name="video-rep"),
        # 5. the same phase on 12000 clips rendered straight into latents, 1829 steps of 128 clips
        #    (bf16): shipped, trained on a lent H200 in 7.8 min (research/gpu_train_base.py).
        ("video-gpu", work / "video-gpu" / "video-gpu" / "model",
         [sys.executable, str(ROOT / "research" / "gpu_train_base.py"), "run",
          "--start", str(work / "video-rep" / "model"), "--work", str(work / "video-gpu"),
          "--out", str(work / "video-gpu" / "ship"), "--clips", "12000", "--seconds", "1e9", "train.max_steps=1829"]),
        # 6. on from there over the next 12000 clips, ones no earlier phase saw, 1851 steps of 128
        #    clips: shipped, on a lent H200 in 8.7 min, corpus included.
        ("video-gpu-2", work / "video-gpu-2" / "video-gpu" / "model",
         [sys.executable, str(ROOT / "research" / "gpu_train_base.py"), "run",
          "--start", str(work / "video-gpu" / "video-gpu" / "model"), "--work", str(work / "video-gpu-2"),
          "--out", str(work / "video-gpu-2" / "ship"), "--clips", "12000", "--first", "12000",
          "--seconds", "1e9", "train.max_steps=1851"]),
    ]
    return [
        corpus(64),
        train("vae"),
        train("image", f"model.vae={work / 'vae' / 'model'}", cache),
        ("inflate", work / "inflated", [*vidgen, "inflate", "--image-model", str(work / "image" / "model"),
                                        "--out", str(work / "inflated"), "--frames", "16", "--fps", "8"]),
        train("video", f"model.pretrained={work / 'inflated'}", cache),
        train("interp", f"model.pretrained={work / 'video' / 'model'}", cache),
        corpus(128),
        # No latent cache for sr: caching every frame of 2000 clips at two sizes encodes more
        # frames than its steps x batch x 8 frames do.
        train("sr", f"model.pretrained={work / 'interp' / 'model'}", size=128),
        *base,
        # The arrow critic: reads only the VAE's latents and the text encoder, so any folder of
        # the cascade will do; trained on the 20 % of clips that keep their captions.
        train("critic", f"model.pretrained={work / 'sr' / 'model'}", cache),
        # ... then on for 1000 steps with each captioned clip also scored under its caption with the
        # direction word swapped for the other three (model.critic_swap_slots): shipped, still
        # choosing candidates by the arrow logit (defaults.choose_by=arrow), which now reads the axis.
        train("critic", f"model.pretrained={work / 'critic' / 'model'}", cache, "model.critic_swap_slots=[direction]",
              "train.max_steps=1000", "train.lr=5e-4", "train.warmup_steps=50", name="critic-swap"),
        *reflow_phases(work, vidgen),
        *unlabeled,  # last: the shipped cascade does not need it
    ]


# What the video-gpu-2 cascade shipped with (the model before the reflow phases), and what ships now.
GPU_2_SETTINGS = ["defaults.arrow_check=true", "defaults.candidates=4", "defaults.choose_by=arrow",
                  "defaults.autocast=auto", "defaults.num_inference_steps=13", "interp.num_inference_steps=10",
                  "interp.strength=0.4", "sr.num_inference_steps=10", "sr.strength=0.5"]
REFLOW_SETTINGS = ["defaults.autocast=auto", "interp.num_inference_steps=10", "interp.strength=0.4",
                   "sr.num_inference_steps=10", "sr.strength=0.5"]
# No arrow check: the base stage's noise carries the direction (defaults.motion_noise,
# written by the video-flow run's export).
FLOW_SETTINGS = ["defaults.arrow_check=false"]
# The first 4 base-stage steps unguided (defaults.guidance_from_step, docs/experiments.md).
IMAGE_FLOW_SETTINGS = ["defaults.guidance_from_step=4"]
# One candidate and no critic: the base stage's first 7 clean clips held to the motion words
# (defaults.motion_projection), and clips continued from their last keyframe moved on
# (defaults.continue_strength); the weights are those of package-image-flow (docs/experiments.md).
# With --candidates N the critic chooses after the 7 held steps (choose_at_step may not come before them).
PROJECTION_SETTINGS = ["defaults.candidates=1", "defaults.motion_projection=7", "defaults.continue_strength=0.6",
                       "defaults.choose_at_step=7"]
PAIR_CLIPS = 1024


def reflow_phases(work: Path, vidgen: list[str]) -> list[tuple[str, Path, list[str]]]:
    """Issue 38: the base stage follows the words by itself. The cascade as shipped with the
    video-gpu-2 base (git tag default-model-gpu-2) samples its own (noise, clip) pairs, which the
    shapes judge captions (`vidgen data pairs`); the base stage is retrained on them
    (configs/shapes/reflow.yaml) and packaged with one candidate, no arrow check, few steps."""
    shipped = work / "shipped-gpu-2"
    package = [sys.executable, str(ROOT / "tools" / "package_default_model.py")]
    reflow = work / "reflow"
    return [
        ("shipped-gpu-2", shipped / "vidgen.json",
         [*package, str(work / "sr" / "model"), "--base", str(work / "video-gpu-2" / "video-gpu" / "model"),
          "--critic", str(work / "critic-swap" / "model"), *GPU_2_SETTINGS, "--out", str(shipped)]),
        ("pairs", work / "pairs" / f"pairs-{PAIR_CLIPS // 16 - 1:05d}.safetensors",
         [*vidgen, "data", "pairs", "--model", str(shipped), "--out", str(work / "pairs"), "--clips", str(PAIR_CLIPS),
          "--batch-size", "16", "--seed", "1", "--autocast", "bfloat16", "--no-progress"]),
        ("reflow", reflow / "model",
         [*vidgen, "train", str(CONFIGS / "reflow.yaml"), f"data.pairs={work / 'pairs'}",
          f"model.pretrained={shipped}", f"train.output_dir={reflow}", "--no-progress"]),
        ("package-reflow", work / "shipped-reflow" / "vidgen.json",
         [*package, str(shipped), "--base", str(reflow / "model"), *REFLOW_SETTINGS,
          "--out", str(work / "shipped-reflow")]),
        # Shipped: the video-gpu-2 cascade, its critic choosing among the four candidates after 4 of
        # their 13 steps, so that only the kept one is finished, and frames given to the base stage
        # (a picture, a clip to extend) steering the others by reconstruction guidance (w_r = 10).
        # The weights are the same.
        ("package-early", work / "shipped-early" / "vidgen.json",
         [*package, str(shipped), "defaults.choose_at_step=4", "defaults.reconstruction_guidance=10",
          "--out", str(work / "shipped-early")]),
        # Issue 37: a second base stage for image-to-video, made around each clip's first frame
        # (Emu Video's image-and-text-to-video step), trained from the shipped base on corpus64.
        ("image-base", work / "image-base" / "model",
         [*vidgen, "train", str(CONFIGS / "video.yaml"), f"data.manifest={work / 'corpus64' / 'manifest.jsonl'}",
          f"data.latent_cache={work / 'latents64'}", f"model.pretrained={work / 'shipped-early'}",
          "model.image_conditioning=true", "model.anchor_position=0.0", "train.lr_multipliers={input_extension: 5}",
          "model.freeze_spatial=false", "data.captioned_repeat=6", "train.lr=1e-4", "train.warmup_steps=50",
          "train.max_steps=2000", f"train.output_dir={work / 'image-base'}", "--no-progress"]),
        ("package-image-base", work / "shipped-image-base" / "vidgen.json",
         [*package, str(work / "shipped-early"), "--image-base", str(work / "image-base" / "model"),
          "--out", str(work / "shipped-image-base")]),
        # Issue 38: the base stage fine-tuned on noise whose shared part moves with each clip
        # (model.flow_noise, after Go-with-the-Flow), its noise moving as the prompt's motion words say
        # when sampled; the critic still keeps one of four candidates, and no clip is played backwards.
        # Stopped at step 2039 and exported with train.max_steps=2039 (docs/experiments.md).
        ("video-flow", work / "video-flow" / "model",
         [*vidgen, "train", str(CONFIGS / "video.yaml"), f"data.manifest={work / 'corpus64' / 'manifest.jsonl'}",
          f"data.latent_cache={work / 'latents64'}", f"model.pretrained={work / 'shipped-image-base'}",
          "model.freeze_spatial=false", "data.captioned_repeat=6", "train.lr=1e-4", "train.warmup_steps=50",
          "model.frame_noise_correlation=0.7", "model.flow_noise=true", "train.ema_decay=0.998",
          "train.max_steps=3000", f"train.output_dir={work / 'video-flow'}", "--no-progress"]),
        ("package-flow", work / "shipped-flow" / "vidgen.json",
         [*package, str(work / "video-flow" / "model"), *FLOW_SETTINGS, "--out", str(work / "shipped-flow")]),
        # Issue 37: the image-to-video base fine-tuned on moving noise too, so a picture's clip moves
        # the way its prompt says (image_base_motion_noise); stopped at step 1017 (docs/experiments.md).
        ("image-flow", work / "image-flow" / "model",
         [*vidgen, "train", str(CONFIGS / "video.yaml"), f"data.manifest={work / 'corpus64' / 'manifest.jsonl'}",
          f"data.latent_cache={work / 'latents64'}", f"model.pretrained={work / 'image-base' / 'model'}",
          "model.image_conditioning=true", "model.anchor_position=0.0", "model.freeze_spatial=false",
          "data.captioned_repeat=6", "train.lr=1e-4", "train.warmup_steps=50", "model.frame_noise_correlation=0.7",
          "model.flow_noise=true", "train.ema_decay=0.998", "train.max_steps=1017",
          f"train.output_dir={work / 'image-flow'}", "--no-progress"]),
        ("package-image-flow", work / "shipped-image-flow" / "vidgen.json",
         [*package, str(work / "shipped-flow"), "--image-base", str(work / "image-flow" / "model"),
          *IMAGE_FLOW_SETTINGS, "--out", str(work / "shipped-image-flow")]),
        ("package-projection", work / "shipped-projection" / "vidgen.json",
         [*package, str(work / "shipped-image-flow"), *PROJECTION_SETTINGS, "--out", str(work / "shipped-projection")]),
    ]


def archive_image_unet(work: Path) -> None:
    """Keep the trained image U-Net in git, in half precision."""
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(work / "image" / "model" / "unet", torch_dtype=torch.float16)
    unet.save_pretrained(IMAGE_ARCHIVE)
    print(f"archived the image U-Net to {IMAGE_ARCHIVE}")


def restore_shipped_gpu_2(work: Path) -> None:
    """Rebuild WORK/shipped-gpu-2 (the default model before the reflow phases) from git's tag."""
    import io
    import tarfile

    from vidgen.fs import atomic_dir

    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "default-model-gpu-2", "vidgen/default_model"],
                             check=True, capture_output=True).stdout
    with atomic_dir(work / "shipped-gpu-2") as tmp, tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                target = tmp / Path(member.name).relative_to("vidgen/default_model")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    print(f"shipped-gpu-2: rebuilt {work / 'shipped-gpu-2'} from git tag default-model-gpu-2")


def restore_vae_model(work: Path) -> None:
    """Rebuild WORK/vae/model from the VAE that ships in the package (vidgen/default_model/vae)."""
    import torch
    from diffusers import AutoencoderKL

    from vidgen.fs import atomic_dir

    vae = AutoencoderKL.from_pretrained(SHIPPED_VAE, torch_dtype=torch.float32)
    with atomic_dir(work / "vae" / "model") as tmp:
        vae.save_pretrained(tmp)
    print(f"vae: rebuilt {work / 'vae' / 'model'} from {SHIPPED_VAE}")


def restore_image_model(work: Path) -> None:
    """Rebuild WORK/image/model from the archived U-Net, the shipped VAE and the packaged MiniLM."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from vidgen.packaged import resolve_text_encoder
    from vidgen.text import TextEncoder
    from vidgen.training.stages import save_text_to_image_folder

    unet = UNet2DConditionModel.from_pretrained(IMAGE_ARCHIVE, torch_dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(SHIPPED_VAE, torch_dtype=torch.float32)
    text = TextEncoder.from_pretrained(resolve_text_encoder("minilm"))
    save_text_to_image_folder(work / "image" / "model", unet, vae, text)
    print(f"image: rebuilt {work / 'image' / 'model'} from {IMAGE_ARCHIVE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/shapes", help="folder for corpora, runs and checkpoints (outside git)")
    parser.add_argument("--only", help="run just this step (corpus64, vae, image, inflate, video, interp, corpus128, sr, video-8000, video-text, video-full, video-rep, video-gpu, video-gpu-2, critic, critic-swap, shipped-gpu-2, pairs, reflow, package-reflow, package-early, image-base, package-image-base, video-flow, package-flow, image-flow, package-image-flow, package-projection[, video-unlabeled])")
    parser.add_argument("--comparison", action="store_true",
                        help="also train the video stage with every caption withheld (step video-unlabeled)")
    parser.add_argument("--archive-image", action="store_true", help="keep WORK's trained image U-Net in git, then stop")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.archive_image:
        archive_image_unet(work)
        return
    if not (work / "vae" / "model").exists() and SHIPPED_VAE.is_dir() and args.only in (None, "vae"):
        restore_vae_model(work)
    if not (work / "image" / "model").exists() and IMAGE_ARCHIVE.is_dir() and args.only in (None, "image"):
        restore_image_model(work)
    if not (work / "shipped-gpu-2").exists() and not (work / "critic-swap" / "model").exists() and \
            args.only in (None, "shipped-gpu-2"):
        restore_shipped_gpu_2(work)
    for name, made, cmd in steps(work, comparison=args.comparison):
        if args.only and name != args.only:
            continue
        if made.exists():
            print(f"{name}: done ({made})")
            continue
        timed(work, name, cmd)


if __name__ == "__main__":
    main()
