"""Does a negative prompt naming the opposite direction steer the base stage's motion (issue 38)?

    python research/opposite_negative_prompt.py none 48
    python research/opposite_negative_prompt.py opposite 48 [GUIDANCE]

The shipped model's base stage alone (one candidate, no arrow check, its 13 steps), seen prompts
"a COLOR SHAPE moving DIR" of scene seed 0 (prompt i is scene i, noise seed i), judged by the
shapes judge. With "opposite", classifier-free guidance extrapolates from "... moving OPPOSITE"
instead of the empty prompt, so what guidance amplifies is the difference the direction word makes.
"""

import sys

from vidgen.data.shapes import caption, clip_rng, sample_scene
from vidgen.evaluation import judge_prompt
from vidgen.packaged import default_model
from vidgen.pipeline import VideoPipeline

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    guidance = float(sys.argv[3]) if len(sys.argv) > 3 else None
    pipe = VideoPipeline.from_pretrained(default_model())
    obeys = asked_way = 0
    for i in range(n):
        s = sample_scene(clip_rng(0, i))
        prompt = caption(s.color, s.shape, s.direction)
        negative = caption(s.color, s.shape, OPPOSITE[s.direction]) if mode == "opposite" else None
        out = pipe(prompt, negative_prompt=negative, seed=i, stages=["base"], candidates=1, arrow_check=False,
                   progress=False, guidance_scale=guidance)
        verdict = judge_prompt(out.frames[0], prompt)
        obeys += verdict["obeys"]
        asked_way += verdict["travel"] > 0
        print(i, prompt, verdict["obeys"], round(verdict["travel"], 3), verdict["failures"][:1], flush=True)
    print(mode, guidance, "obeys", obeys, "asked way", asked_way, "/", n)


if __name__ == "__main__":
    main()
