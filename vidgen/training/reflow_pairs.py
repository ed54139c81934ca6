"""The reflow stage's data: the base stage's own samples, each kept with the noise it started from
and captioned with what the shapes judge saw in it.

Reflow (Liu et al. 2022, "Flow straight and fast", section 2.3) retrains a generator on (noise,
sample) couplings drawn from the generator itself, so that its sampling paths straighten and
few steps reach the same samples. Here the couplings also carry the words: each prompt (a seen
(color, shape, direction) triple, phrased as a training caption) is sampled once from noise z
with the model's own steps and guidance, and the judge (vidgen.data.judge) reads the decoded
keyframes. A clip that shows one steady object of the asked color and shape (and size and
background, where named) moving along an axis gives two pairs, captioned in hindsight:

    (z, the prompt with the direction it moved)      -> x
    (z, the prompt with the opposite direction)      -> x played backwards

(the shapes world is symmetric in time). Under one noise the two words ask for opposite clips,
so a network that ignores them pays for it at every timestep, the high-noise ones included,
where the plain denoising loss hardly tells directions apart (docs/experiments.md "Why direction
stays near chance"). Pairs whose caption is a held-out triple are left out.

The folder holds one safetensors shard per batch of prompts, pairs-NNNNN.safetensors: "noise"
and "latents" (n c f h w) float32 and, in its metadata, "captions" (a JSON list), "fps", and how
many prompts were drawn and kept. Shard i depends only on (seed, i): an interrupted run resumes
at the first missing shard (`vidgen data pairs` keeps its settings in pairs.json and refuses to
resume with others).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.judge import judge_clip
from ..data.shapes import HELDOUT, TRIPLE, VOCABULARY, caption, parse_prompt, sample_scene, training_caption
from ..diffusion.noise import frame_noise
from ..errors import VidgenError
from ..models.vae import decode_latents, latent_factor
from ..video_io import to_uint8_frames
from ..weights import load_tensors, save_tensors

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
CAPTION_DROP = 0.5  # as the corpus and the eval prompts name size and background (docs/shapes-world.md)
SHARD = "pairs-{:05d}.safetensors"

# (uint8 keyframes (f h w 3), prompt) -> [(caption, played backwards)]: what a sample teaches
Labeler = Callable[[np.ndarray, str], list[tuple[str, bool]]]


def seen_prompts(n: int, seed: int, shard: int) -> list[str]:
    """n training captions of seen triples, drawn from (seed, shard) alone."""
    rng = np.random.default_rng([seed, 38, shard])
    seen = [t for t in _all_triples() if t not in HELDOUT]
    prompts = []
    for _ in range(n):
        triple = seen[rng.integers(len(seen))]
        slots = sample_scene(rng, slots=dict(zip(TRIPLE, triple))).slots
        prompts.append(training_caption(slots, rng, CAPTION_DROP))
    return prompts


def _all_triples() -> list[tuple[str, str, str]]:
    return [(c, s, d) for c in VOCABULARY["color"] for s in VOCABULARY["shape"] for d in VOCABULARY["direction"]]


def judged_captions(frames: np.ndarray, prompt: str) -> list[tuple[str, bool]]:
    """The shapes judge's labels for one sample (see the module docstring): none, or the caption
    with the direction seen (forwards) and with its opposite (backwards)."""
    judgement = judge_clip(frames)
    asked = {slot: word for slot, word in parse_prompt(prompt).items() if word is not None}
    seen = judgement.direction
    if seen is None or judgement.reasons:  # no straight motion, not one steady object
        return []
    if not all(right for slot, right in judgement.check(asked).items() if slot != "direction"):
        return []
    labels = []
    for direction, backwards in ((seen, False), (OPPOSITE[seen], True)):
        slots = {**parse_prompt(prompt), "direction": direction}
        if (slots["color"], slots["shape"], direction) not in HELDOUT:
            labels.append((caption(**slots), backwards))
    return labels


def write_pairs(pipe, folder: str | Path, clips: int, seed: int = 0, batch_size: int = 8,
                label: Labeler = judged_captions, progress: bool = True, **settings) -> dict:
    """Sample `clips` prompts with `pipe`'s base stage (one candidate, no arrow check; `settings`
    override the model's steps, guidance and precision) and write the pairs the labels keep into
    `folder`, one shard per batch; shards already there are kept. Returns the totals."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards = -(-clips // batch_size)
    for i in tqdm(range(shards), desc="pairs", unit="shard", disable=not progress):
        path = folder / SHARD.format(i)
        if path.exists():
            continue
        prompts = seen_prompts(min(batch_size, clips - i * batch_size), seed, i)
        _write_shard(pipe, path, prompts, torch.Generator().manual_seed(seed * 100_003 + i), label, settings)
    return pair_totals(folder)


def _write_shard(pipe, path: Path, prompts: list[str], generator: torch.Generator, label: Labeler,
                 settings: dict) -> None:
    s = pipe.settings(["base"], candidates=1, arrow_check=False, **settings)
    vae = pipe.model.vae
    k = latent_factor(vae)
    shape = (len(prompts), vae.config.latent_channels, s.num_frames, s.height // k, s.width // k)
    noise = frame_noise(shape, generator, pipe.model.index.frame_noise_correlation)  # (b c f h w)
    out = pipe(prompts, stages=["base"], latents=noise, output_type="latent", progress=False,
               **dataclasses.asdict(s))
    latents = out.frames  # (b c f h w)
    with torch.no_grad():
        video = decode_latents(vae, latents.to(pipe.model.device, pipe.model.dtype), pipe.model.index.vae_chunk_size)
    keyframes = [to_uint8_frames(clip.float().cpu()) for clip in video]  # (f h w 3) each
    noises, targets, captions, kept = [], [], [], 0
    for z, x, frames, prompt in zip(noise, latents, keyframes, prompts):
        labels = label(frames, prompt)
        kept += bool(labels)
        for text, backwards in labels:
            noises.append(z)
            targets.append(x.flip(1) if backwards else x)  # (c f h w): time is dim 1
            captions.append(text)
    empty = torch.zeros((0, *shape[1:]))
    save_tensors({"noise": torch.stack(noises) if noises else empty, "latents": torch.stack(targets) if targets else empty},
                 path, metadata={"captions": json.dumps(captions), "fps": str(s.fps), "drawn": str(len(prompts)),
                                 "kept": str(kept)})


def pair_totals(folder: str | Path) -> dict:
    """Prompts drawn, samples kept and pairs written over the folder's shards."""
    totals = {"shards": 0, "drawn": 0, "kept": 0, "pairs": 0}
    for path in sorted(Path(folder).glob("pairs-*.safetensors")):
        tensors, meta = load_tensors(path)
        totals["shards"] += 1
        totals["drawn"] += int(meta["drawn"])
        totals["kept"] += int(meta["kept"])
        totals["pairs"] += len(tensors["noise"])
    return totals


class PairDataset(torch.utils.data.Dataset):
    """Every pair of a pairs folder as a training item: {"noise", "latent_mean" (the sample): (c f h w),
    "caption", "fps", "path"}; collate_clips batches them."""

    def __init__(self, folder: str | Path):
        paths = sorted(Path(folder).glob("pairs-*.safetensors"))
        if not paths:
            raise VidgenError(f"{folder} holds no pairs-*.safetensors shards: write them with `vidgen data pairs "
                              f"--model MODEL --out {folder}`")
        noise, latents, self.captions, self.fps = [], [], [], []
        for path in paths:
            tensors, meta = load_tensors(path)
            captions = json.loads(meta["captions"])
            noise.append(tensors["noise"])
            latents.append(tensors["latents"])
            self.captions += captions
            self.fps += [float(meta["fps"])] * len(captions)
        self.noise, self.latents = torch.cat(noise), torch.cat(latents)  # (n c f h w) each
        if not len(self.noise):
            raise VidgenError(f"the shards in {folder} hold no pairs: the judge kept none of the samples")

    def __len__(self) -> int:
        return len(self.noise)

    def __getitem__(self, i: int) -> dict:
        return {"noise": self.noise[i], "latent_mean": self.latents[i], "caption": self.captions[i],
                "fps": self.fps[i], "path": f"pair {i}"}

    def set_epoch(self, epoch: int) -> None:
        """Nothing to redraw: a pair is the same every epoch (the loader shuffles the order)."""
