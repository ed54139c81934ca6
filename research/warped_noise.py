"""Does noise that moves the asked way make a base stage move its object that way (issue 38)?

    python research/warped_noise.py --share 0.7 --speed 0.107 [--model DIR] [--n 48] [--seed 0]

Go-with-the-Flow (Burgert et al. 2025) steers a video model's motion by warping its initial noise
along the wanted flow. This gives a model folder, in memory, the motion words left / right / up /
down at `--speed` sides of the frame per second and the frame-shared noise share `--share`
(vidgen.diffusion.flow_noise; the model's base stage need not have been trained with it), and
judges its base stage alone (one candidate, no arrow check) as `vidgen eval shapes --stages base`
does. --share 0: the model's own noise, for the baseline.
"""

from __future__ import annotations

import argparse
import json

from vidgen.evaluation import evaluate_model, format_table
from vidgen.packaged import default_model
from vidgen.pipeline import VideoPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model()))
    parser.add_argument("--share", type=float, default=0.7, help="share of the noise that moves (0: the model's own)")
    parser.add_argument("--speed", type=float, default=0.107, help="sides of the frame per second")
    parser.add_argument("--steps", type=int, help="base-stage DDIM steps (default: the model's)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the report here")
    args = parser.parse_args()
    pipe = VideoPipeline.from_pretrained(args.model)
    motion_noise = args.share > 0
    if motion_noise:
        v = args.speed
        pipe.model.index.frame_noise_correlation = args.share
        pipe.model.index.motion_words = {"left": [0.0, -v], "right": [0.0, v], "up": [-v, 0.0], "down": [v, 0.0]}
    settings = pipe.settings(["base"], candidates=1, arrow_check=False, motion_noise=motion_noise,
                             num_inference_steps=args.steps, guidance_scale=args.guidance)
    report = evaluate_model(pipe, settings, n=args.n, seed=args.seed, stages=["base"], progress=False)
    print(vars(args))
    print(format_table(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, default=str)


if __name__ == "__main__":
    main()
