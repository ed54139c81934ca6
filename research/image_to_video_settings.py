"""Image-to-video on the default model under other settings: which ones make more clips obey?

    python research/image_to_video_settings.py --n 8 --settings '{"reconstruction_guidance": 0}'
    python research/image_to_video_settings.py --n 8 --settings '{"candidates": 8}'
    python research/image_to_video_settings.py --n 8 --rule consistent
    python research/image_to_video_settings.py --n 24 --model /tmp/with-image-base --no-replace

Each picture is the first frame of scene i of seed --seed (0 by default), animated under its full caption with seed i
and judged as `tools/eval_media.py --parts image` judges it (all slots, steady, first frame within
5 % of the side). --settings: pipeline keywords over the model's defaults. --rule consistent:
the early choice keeps, among the candidates the critic reads as running the asked way (logit >
0), the one whose predicted clean first keyframe is closest to the picture (the largest logit
where none runs that way); it prints every candidate's logit and error. --model: another model
folder (e.g. one with an image-to-video base stage); --no-replace: the first frame is not held to
the picture while sampling (an anchored image base reads it anyway), only set to it at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import eval_media  # noqa: E402
from vidgen.media import conditioning  # noqa: E402
import vidgen.pipeline as pipeline_module  # noqa: E402
from vidgen.models import critic_choice  # noqa: E402
from vidgen.packaged import default_model  # noqa: E402


def consistent_choice():
    """Patch the early choice with the consistency rule; returns nothing, prints each choice."""
    given = {}
    plain_sample = pipeline_module.sample

    def sample(*args, **kwargs):  # remember the frames the base stage is given
        given["known"] = kwargs.get("known")
        return plain_sample(*args, **kwargs)

    def choose(self, x0):  # x0 (b c f h w), n candidates per prompt
        scores = critic_choice.candidate_scores(self.critic, x0, self.cond, self.prompts, self.n, self.choose_by,
                                                self.encode)  # (prompts n)
        values, mask = given["known"]
        error = (mask * (x0 - values)).square().flatten(1).sum(1).view(len(self.prompts), self.n)
        self.kept = []
        for logits, errors in zip(scores, error):
            forward = logits > 0
            pick = torch.where(forward, errors, torch.inf).argmin() if forward.any() else logits.argmax()
            self.kept.append(int(pick))
            print("  logits", [round(float(v), 1) for v in logits], "errors", [round(float(v), 1) for v in errors],
                  "->", self.kept[-1], flush=True)
        return torch.tensor([i * self.n + j for i, j in enumerate(self.kept)], device=x0.device)

    pipeline_module.sample = sample
    critic_choice.EarlyChoice.__call__ = choose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--settings", default="{}", help="JSON: pipeline keywords, e.g. {\"candidates\": 8}")
    parser.add_argument("--rule", choices=["critic", "consistent"], default="critic")
    parser.add_argument("--model", default=str(default_model()))
    parser.add_argument("--start", type=int, default=0, help="first picture")
    parser.add_argument("--no-replace", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="scene seed of the pictures")
    args = parser.parse_args()
    if args.no_replace:
        plain_options = conditioning.Given.base_options
        conditioning.Given.base_options = lambda self, batch: {k: v for k, v in plain_options(self, batch).items()
                                                               if k != "known"}
    settings = json.loads(args.settings)
    if args.rule == "consistent":
        consistent_choice()
    pipe = pipeline_module.VideoPipeline.from_pretrained(args.model)

    class WithSettings:  # what eval_media calls, with the settings added
        model = pipe.model

        def __call__(self, *a, **k):
            return pipe(*a, **{**k, **settings})

    passes = 0
    for i in range(args.start, args.start + args.n):
        _, _, record = eval_media.part_image(WithSettings(), i, args.seed, None)
        passes += record["passes"]
        print(i, record["prompt"], record["passes"], round(record["travel"], 3), record["failures"][:2], flush=True)
    print(settings, args.rule, "scene seed", args.seed, "passes", passes, "/", args.n)


if __name__ == "__main__":
    main()
