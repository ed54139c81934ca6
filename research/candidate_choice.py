"""Diagnostic: how well does a critic choose among the base stage's candidates?

Samples the base stage's candidates for the prompts of `vidgen eval shapes` (the same prompts, seeds
and batches: `--n` a group, seen and held-out, batches of 8 prompts), keeps them before the arrow
check in a cache file, and then, for each critic and choice rule asked, replays what the pipeline
does after the base stage (the arrow check, then the choice, `VideoPipeline._candidate_scores`),
decodes every candidate at the base stage's size and judges it against its prompt. It prints, per
group, how many prompts the kept candidate gets the direction right, is steady and obeys the whole prompt, and
how many have at least one candidate that would (the most any choice could reach). The judge reads
the decoded frames directly, not an MP4 of the whole cascade, so its figures are the base stage's.

    python research/candidate_choice.py --cache runs/candidates-s0.safetensors --seed 0 \\
        --critic vidgen/default_model/critic --critic runs/shapes/critic-swap/model/critic --choose-by arrow swaps

The cache is written on the first run (about 20 min for 96 prompts of 4 candidates here) and read
on later ones, if it was made with the same model, prompts and settings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from vidgen.evaluation import _batches, eval_prompts, judge_prompt
from vidgen.models.critic import ArrowCritic
from vidgen.models.vae import decode_latents
from vidgen.packaged import default_model
from vidgen.pipeline import VideoPipeline
from vidgen.video_io import to_uint8_frames


def sample_candidates(pipe: VideoPipeline, prompts, seed: int, batch_size: int = 8) -> torch.Tensor:
    """(prompts*n c f h w) base-stage latents, each prompt's n candidates in a row, before the arrow check."""
    raw = []
    check = pipe._arrow_check

    def keep_unchecked(latents, cond):
        raw.append(latents.float().cpu())
        return check(latents, cond)

    pipe._arrow_check = keep_unchecked
    try:
        for k, batch in enumerate(tqdm(_batches(prompts, batch_size), desc="base-stage candidates", unit="batch")):
            pipe([p.text for p in batch], seed=seed + k, progress=False, stages=["base"], arrow_check=True)
    finally:
        pipe._arrow_check = check
    return torch.cat(raw)


def replay(pipe: VideoPipeline, latents: torch.Tensor, prompts, n: int, choose_by: str) -> dict:
    """Per group: prompts, kept candidate right in direction / steady / obeying, and any candidate right / obeying."""
    tally = {}
    for i, prompt in enumerate(tqdm(prompts, desc=f"replaying ({choose_by})", unit="prompt", leave=False)):
        cond = pipe.encode_prompts([prompt.text] * n)
        checked, _ = pipe._arrow_check(latents[i * n:(i + 1) * n].to(pipe.device, pipe.dtype), cond)  # (n c f h w)
        kept = int(pipe._candidate_scores(checked, cond, [prompt.text], n, choose_by)[0].argmax())
        video = decode_latents(pipe.vae, checked, pipe.index.vae_chunk_size).float().cpu()  # (n 3 f h w)
        verdicts = [judge_prompt(to_uint8_frames(clip), prompt.text) for clip in video]
        right = [v["correct"].get("direction", True) for v in verdicts]
        obeys = [v["obeys"] for v in verdicts]
        row = tally.setdefault(prompt.group, {"prompts": 0, "direction": 0, "steady": 0, "obeys": 0,
                                             "any_direction": 0, "any_obeys": 0})
        row["prompts"] += 1
        row["direction"] += right[kept]
        row["steady"] += verdicts[kept]["steady"]
        row["obeys"] += obeys[kept]
        row["any_direction"] += any(right)
        row["any_obeys"] += any(obeys)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="vidgen model folder (default: the embedded shapes model)")
    parser.add_argument("--cache", required=True, help="safetensors file of the sampled candidates (made if missing)")
    parser.add_argument("--n", type=int, default=48, help="prompts a group, seen and held-out (default 48)")
    parser.add_argument("--seed", type=int, default=0, help="the eval's seed (default 0)")
    parser.add_argument("--critic", action="append", metavar="DIR",
                        help="an arrow critic folder to replay the choice with (repeatable; default: the model's)")
    parser.add_argument("--choose-by", nargs="+", default=["arrow"], choices=("arrow", "swaps"),
                        help="choice rules to replay (default: arrow)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    model = args.model or default_model()
    pipe = VideoPipeline.from_pretrained(model)
    s = pipe.settings()
    prompts = eval_prompts(args.n, args.seed, heldout=True)
    made_with = {"model": str(Path(model).resolve()), "n": str(args.n), "seed": str(args.seed),
                 "candidates": str(s.candidates), "steps": str(s.num_inference_steps), "autocast": s.autocast}
    cache = Path(args.cache)
    if cache.exists():
        from safetensors import safe_open

        with safe_open(cache, "pt") as f:
            if f.metadata() != made_with:
                parser.error(f"{cache} was made with {f.metadata()}, not {made_with}: give another --cache")
        latents = load_file(cache)["latents"]
    else:
        latents = sample_candidates(pipe, prompts, args.seed)
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"latents": latents}, str(cache), metadata=made_with)

    shipped = pipe.critic
    for folder in args.critic or [None]:
        pipe.set_critic(shipped if folder is None else ArrowCritic.from_pretrained(folder))
        for rule in args.choose_by:
            if rule == "swaps" and not pipe.critic.config.swap_words:
                print(f"{folder or 'the model critic'}: learned no swaps; choose_by swaps skipped")
                continue
            for group, row in replay(pipe, latents, prompts, s.candidates, rule).items():
                print(json.dumps({"critic": folder or "the model's", "choose_by": rule, "group": group, **row}))


if __name__ == "__main__":
    main()
