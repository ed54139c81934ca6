"""How often a model's arrow critic tells a clip from its time reversal, by noise level, on clips
whose captions its training withheld (the critic never saw them captioned).

    python research/critic_accuracy.py --model runs/shapes/critic/model \
        --manifest runs/shapes/corpus64/manifest.jsonl --latent-cache runs/shapes/latents64

The clips are those that `data.withhold_captions` (same fraction and seed as the critic's run)
left without a caption, judged under their full captions from the manifest: 16 frames at a frame
rate drawn from 8-12 fps, noised as the base stage samples them (the model's frame-noise prior).
A clip counts as right when d > 0, i.e. the critic says it runs forward; its reversal then gets
d < 0 by construction, so chance is 50 %.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import DDPMScheduler

from vidgen.data.dataset import VideoClipDataset, collate_clips
from vidgen.data.latent_cache import LatentCache
from vidgen.data.manifest import read_manifest
from vidgen.diffusion.losses import add_noise
from vidgen.pipeline import VideoPipeline
from vidgen.training.stages import NOISE_SCHEDULE, withhold_captions

TIMESTEPS = (200, 500, 700, 800, 900, 960, 990)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="vidgen model folder with an arrow critic")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--latent-cache", required=True, help="latent cache of the corpus at the model's size")
    parser.add_argument("--withhold", type=float, default=0.8, help="the critic run's data.withhold_captions")
    parser.add_argument("--seed", type=int, default=0, help="the critic run's train.seed")
    parser.add_argument("--clips", type=int, default=256, help="withheld clips to judge (default 256)")
    args = parser.parse_args()

    pipe = VideoPipeline.from_pretrained(args.model)
    if pipe.critic is None:
        parser.error(f"{args.model} has no arrow critic")
    records = read_manifest(args.manifest)
    kept = {r["path"] for r in withhold_captions(records, args.withhold, args.seed) if r.get("caption")}
    unseen = [{**r, "caption": r["full_caption"]} for r in records if r["path"] not in kept][:args.clips]
    data = VideoClipDataset(unseen, 16, pipe.index.defaults.width, fps_range=(8.0, 12.0), seed=args.seed + 1,
                            latent_cache=LatentCache(args.latent_cache))
    batch = collate_clips([data[i] for i in range(len(data))])
    x0 = batch["latent_mean"]  # (b c f h w)
    with torch.no_grad():
        tokens = pipe.text_encoder.encode(batch["caption"])
        schedule, generator = DDPMScheduler(**NOISE_SCHEDULE), torch.Generator().manual_seed(args.seed)
        print(f"{len(unseen)} clips whose captions the critic's run withheld; right = d > 0 (chance 50 %)")
        for t in TIMESTEPS:
            x_t, _, steps = add_noise(schedule, x0, generator, timesteps=torch.full((len(x0),), t),
                                      correlation=pipe.index.frame_noise_correlation)
            d = pipe.critic(x_t, steps, tokens)
            print(f"t = {t:4d}: {100 * (d > 0).float().mean():5.1f} % right, median |d| {d.abs().median():.2f}")


if __name__ == "__main__":
    main()
