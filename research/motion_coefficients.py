"""Print what a base stage's motion attention (model.motion_attention) reads from prompts: for each
MotionAttention layer, the nine bias coefficients per head (MotionAttention.BASIS) for every prompt.

If the layers have bound the motion words, prompts that differ only in their direction differ in
the coefficients of the cross terms (dt_dx for left/right, dt_dy for up/down), with opposite signs.

    python research/motion_coefficients.py --model runs/shapes/video-ma/model
"""

from __future__ import annotations

import argparse

import torch

from vidgen.models.temporal import MotionAttention
from vidgen.pipeline import VideoPipeline

PROMPTS = ["a red circle moving left", "a red circle moving right", "a red circle moving up",
           "a red circle moving down", "a blue square moving left on a black background"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a vidgen video model folder whose base stage has motion attention")
    parser.add_argument("--prompts", nargs="+", default=PROMPTS, help="prompts to compare (default: %(default)s)")
    args = parser.parse_args(argv)
    pipe = VideoPipeline.from_pretrained(args.model)
    layers = pipe.stages["base"].motion_attns
    if layers is None:
        raise SystemExit(f"error: the base stage of {args.model} has no motion attention (it was trained with "
                         "model.motion_attention off)")
    with torch.no_grad():
        text = pipe.text_encoder.tokens_in_context(pipe.encode_prompts(args.prompts))  # (b n d): what the layers read
        print("coefficients per head, in the order", " ".join(MotionAttention.BASIS))
        for site, layer in layers.items():
            print(f"{site} (output weight mean |w| {layer.to_out.weight.abs().mean():.4f})")
            for prompt, heads in zip(args.prompts, layer.coefficients(text)):  # (heads k) each
                row = " | ".join(" ".join(f"{c:+6.2f}" for c in head.tolist()) for head in heads)
                print(f"  {prompt[:50]:50s} {row}")


if __name__ == "__main__":
    main()
