"""Does noise that moves the asked way make the base stage move its object that way (issue 38)?

    python research/warped_noise.py --rho 0.5 [--travel 0.28] [--model DIR] [--n 48] [--seed 0]

Go-with-the-Flow (Burgert et al. 2025) controls a video model's motion by warping its initial
noise along the wanted flow. Here the flow is the prompt's direction word: the frame-shared part of
the base stage's noise (the PYoCo prior, vidgen.diffusion.noise) is drawn on a grid `fine` times
finer than the latents, shifted by `travel` of the side over the clip along the asked direction
(a whole number of fine cells per frame), and summed back over each latent cell, so every frame's
noise is still a unit Gaussian, and neighbouring frames share most of it. The base stage alone
(one candidate, no arrow check) is judged as `vidgen eval shapes --stages base` judges it.
"""

from __future__ import annotations

import argparse
import json

import torch

from vidgen.evaluation import evaluate_model, format_table
from vidgen.models.vae import latent_factor
from vidgen.packaged import default_model
from vidgen.pipeline import VideoPipeline

STEP = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}  # (rows, columns) per unit of travel


def direction_of(prompt: str) -> str | None:
    words = prompt.split()
    return next((w for w in words if w in STEP), None)


def warped_noise(shape, generator, rho: float, directions: list[str | None], travel: float,
                 fine: int = 4) -> torch.Tensor:
    """(b c f h w): sqrt(rho) * shared noise moving the asked way + sqrt(1 - rho) * independent noise."""
    b, c, f, h, w = shape
    clips = []
    for direction in directions:
        shared = torch.randn((c, h * fine, w * fine), generator=generator)  # (c H W), the fine grid
        independent = torch.randn((c, f, h, w), generator=generator)
        dy, dx = STEP.get(direction, (0, 0))
        frames = []
        for k in range(f):
            cells = round(k * travel * h * fine / max(f - 1, 1))  # fine cells moved by frame k
            moved = torch.roll(shared, shifts=(dy * cells, dx * cells), dims=(1, 2))
            frames.append(moved.view(c, h, fine, w, fine).sum((2, 4)) / fine)  # (c h w), unit variance
        clips.append(rho ** 0.5 * torch.stack(frames, 1) + (1 - rho) ** 0.5 * independent)
    return torch.stack(clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model()))
    parser.add_argument("--rho", type=float, default=0.5, help="share of the noise that moves (0: plain noise)")
    parser.add_argument("--travel", type=float, default=0.28, help="how far the noise moves over the clip")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the report here")
    args = parser.parse_args()
    pipe = VideoPipeline.from_pretrained(args.model)
    asked: list[str | None] = []
    plain_call = pipe.__call__

    def call(prompt, *a, **k):
        asked[:] = [direction_of(p) for p in ([prompt] if isinstance(prompt, str) else prompt)]
        return plain_call(prompt, *a, **k)

    def initial_noise(c, batch):
        s, vae = c.settings, pipe.model.vae
        k = latent_factor(vae)
        shape = (batch, vae.config.latent_channels, s.num_frames, s.height // k, s.width // k)
        per_prompt = batch // len(asked)
        return warped_noise(shape, c.generator, args.rho, [d for d in asked for _ in range(per_prompt)],
                            args.travel).to(c.device)

    if args.rho > 0:
        pipe._initial_noise = initial_noise
    pipe.__call__ = call

    class Calls:  # evaluate_model calls pipe(...): route it through `call`
        model = pipe.model

        def __call__(self, *a, **k):
            return call(*a, **k)

        def __getattr__(self, name):
            return getattr(pipe, name)

    settings = pipe.settings(["base"], candidates=1, arrow_check=False)
    report = evaluate_model(Calls(), settings, n=args.n, seed=args.seed, stages=["base"], progress=False)
    print(vars(args))
    print(format_table(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, default=str)


if __name__ == "__main__":
    main()
