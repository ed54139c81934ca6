"""Which sampling settings make the base stage alone follow the motion words (issue 38)?

    python research/base_sampling_settings.py [--share 0.85] [--speed 0.19] [--guidance 4]
        [--interval 0:6] [--eta 1 --fresh still|moving] [--steps 13] [--model DIR] [--n 48] [--seed 0]

Judges the base stage alone as `vidgen eval shapes --stages base` does (one candidate, no arrow
check, the noise moving with the motion words), with, in this process only:
- `--share`, `--speed`: the moving share of the noise and the motion words' speed (sides of the
  frame per second) in place of the model's (vidgen.diffusion.flow_noise); `--share 0`: the
  model's own still noise, the baseline (the model's base stage need not have been trained on
  moving noise: the words are set in memory);
- `--interval a:b`: classifier-free guidance only at base steps a..b-1 (the sampler's
  guidance_interval, after Kynkaanniemi et al. 2024), the others one unguided network call;
- `--eta`: DDIM's fresh noise at every step (Song et al. 2021, eq. 12), drawn with the model's
  still frame prior (`--fresh still`) or, like the initial noise, moving (`--fresh moving`).
"""

from __future__ import annotations

import argparse
import json

from diffusers import DDIMScheduler

import vidgen.base_noise as base_noise_module
import vidgen.pipeline as pipeline_module
from vidgen.diffusion import sampler
from vidgen.diffusion.flow_noise import moving_noise
from vidgen.evaluation import evaluate_model, format_table
from vidgen.packaged import default_model
from vidgen.pipeline import VideoPipeline

drawn = {}  # what the last call's initial noise was drawn with


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model()))
    parser.add_argument("--share", type=float, help="moving share of the noise (default: the model's)")
    parser.add_argument("--speed", type=float, help="motion words' speed, sides per second (default: the model's)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    parser.add_argument("--interval", help="a:b, guidance only at base steps a..b-1")
    parser.add_argument("--eta", type=float, default=0.0)
    parser.add_argument("--fresh", choices=["still", "moving"], default="still")
    parser.add_argument("--steps", type=int, help="base-stage DDIM steps (default: the model's)")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the report here")
    args = parser.parse_args()

    def recording_moving_noise(shape, generator, share, shifts, *rest, **kwargs):
        drawn.update(shape=tuple(shape), share=share, shifts=shifts, generator=generator)
        return moving_noise(shape, generator, share, shifts, *rest, **kwargs)

    base_noise_module.moving_noise = recording_moving_noise
    step = DDIMScheduler.step

    def fresh_noise_step(self, model_output, timestep, sample, eta=0.0, *rest, variance_noise=None, **kwargs):
        if eta > 0 and variance_noise is None and drawn.get("shape") == tuple(sample.shape):
            shifts = drawn["shifts"] * (1.0 if args.fresh == "moving" else 0.0)
            variance_noise = moving_noise(sample.shape, drawn["generator"], drawn["share"], shifts).to(sample)
        return step(self, model_output, timestep, sample, eta, *rest, variance_noise=variance_noise, **kwargs)

    DDIMScheduler.step = fresh_noise_step
    if args.interval:
        first, stop = (int(k) for k in args.interval.split(":"))
        sample = sampler.sample

        def sample_in_interval(*a, desc="sampling", **kwargs):
            if desc == "base stage":
                kwargs["guidance_interval"] = (first, stop)
            return sample(*a, desc=desc, **kwargs)

        pipeline_module.sample = sample_in_interval

    pipe = VideoPipeline.from_pretrained(args.model)
    index = pipe.model.index
    still = args.share == 0
    if args.share is not None and not still:
        index.frame_noise_correlation = args.share
    if args.speed is not None:
        index.motion_words = {"left": [0.0, -args.speed], "right": [0.0, args.speed],
                              "up": [-args.speed, 0.0], "down": [args.speed, 0.0]}
    settings = pipe.settings(["base"], candidates=1, arrow_check=False, motion_noise=not still,
                             num_inference_steps=args.steps, guidance_scale=args.guidance)
    report = evaluate_model(pipe, settings, n=args.n, seed=args.seed, stages=["base"], eta=args.eta, progress=False)
    print(vars(args))
    print(format_table(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, default=str)


if __name__ == "__main__":
    main()
