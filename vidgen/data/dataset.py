"""A torch Dataset of video clips over a manifest, safe inside DataLoader workers.

A clip that cannot be read (corrupt file, or too short under the "skip" rule) never raises in a
worker: `__getitem__` returns a `SkippedSample`, and `collate_clips` drops it from the batch and
reports its path in `batch["skipped"]`, so the training loop can count and log skipped files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import VidgenError
from .clips import clip_indices, frame_step, sample_clip
from .latent_cache import LatentCache


@dataclass(frozen=True)
class SkippedSample:
    path: str
    reason: str


class VideoClipDataset(Dataset):
    """Clips of `num_frames` frames at `size` px from the videos of a manifest.

    Each item is {"video": (c f h w) in [-1, 1], "fps": clip frame rate, "caption": str ("" when
    the video has none), "path": str}. With `fps_range=(lo, hi)` each clip is sampled at a frame
    rate drawn uniformly from that range (Make-A-Video section 3.2); otherwise at `stride`.
    Randomness comes from `seed` and the item index, so an epoch is reproducible.

    With a `latent_cache` the same frames are taken from the cache instead of the video file, and
    an item holds "latent_mean" and "latent_std", (c f h w) each, in place of "video".

    With `time_reverse`, a map of caption words (see `TimeReversal`), a clip whose caption names one
    of its words is played backwards half of the time, those words swapped in its caption.
    """

    def __init__(
        self,
        records: Sequence[dict],
        num_frames: int,
        size: int,
        fps_range: tuple[float, float] | None = None,
        stride: int = 1,
        short_clip: str = "loop",
        seed: int = 0,
        latent_cache: LatentCache | None = None,
        low_res_cache: LatentCache | None = None,
        time_reverse: dict[str, str] | None = None,
    ):
        if fps_range is not None and not 0 < fps_range[0] <= fps_range[1]:
            raise VidgenError(f"fps_range must be (low, high) with 0 < low <= high, got {fps_range}")
        self.records = list(records)
        self.num_frames, self.size = num_frames, size
        self.fps_range, self.stride, self.short_clip, self.seed = fps_range, stride, short_clip, seed
        if low_res_cache is not None and latent_cache is None:
            raise VidgenError("a low-resolution latent cache is read alongside a latent cache: give both")
        self.latent_cache, self.low_res_cache = latent_cache, low_res_cache
        self.time_reversal = TimeReversal(time_reverse) if time_reverse else None
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int):
        return self.clip_item(self.records[index], np.random.default_rng([self.seed, self.epoch, index]))

    def clip_item(self, record: dict, rng: np.random.Generator):
        """The item of one record, its randomness (fps, start frame, reversal) drawn from `rng`.
        `record["path"]` is a file, or an `EncodedVideo` (a shard's member, vidgen.data.shard_dataset)."""
        name = str(record["path"])
        fps = float(rng.uniform(*self.fps_range)) if self.fps_range else None
        item = {"caption": record.get("caption") or "", "path": name}
        try:
            if self.latent_cache is not None:
                item.update(self._cached(name, fps, rng))
            else:
                clip = sample_clip(record["path"], self.num_frames, self.size, fps=fps,
                                   stride=None if fps else self.stride, short_clip=self.short_clip, rng=rng)
                item.update(video=clip.video, fps=clip.fps)
        except VidgenError as exc:  # VideoReadError, ClipTooShortError, an fps the file cannot give
            return SkippedSample(name, str(exc))
        if self.time_reversal is not None and self.time_reversal.applies(item["caption"]) and rng.random() < 0.5:
            item = self.time_reversal(item)
        return item

    def _cached(self, path: str, fps: float | None, rng: np.random.Generator) -> dict:
        entry = self.latent_cache.entry(path)
        step = frame_step(entry.fps, fps=fps, stride=None if fps else self.stride)
        indices = clip_indices(entry.frames, self.num_frames, step, short_clip=self.short_clip, rng=rng)
        mean, std = self.latent_cache.load(path)  # (c F h w) each
        item = {"latent_mean": mean[:, indices], "latent_std": std[:, indices], "fps": entry.fps / step}
        if self.low_res_cache is not None:
            if self.low_res_cache.entry(path).frames != entry.frames:
                raise VidgenError(f"the two latent caches hold different frame counts for {path}: rebuild them")
            low_mean, low_std = self.low_res_cache.load(path)  # (c F h' w') each
            item.update(low_latent_mean=low_mean[:, indices], low_latent_std=low_std[:, indices])
        return item


class TimeReversal:
    """A clip played backwards, with the words of its caption that name a motion swapped for their
    opposites: `{"left": "right", "right": "left", "up": "down", "down": "up"}` turns "a red circle
    moving left" backwards into "a red circle moving right". Where a corpus's motions are
    reversible (in the shapes world every clip is, docs/shapes-world.md), each captioned clip then also
    comes as its mirror in time, and the pair differs only in the motion words and the order of
    the frames: nothing but those words can tell the model which way the clip runs. The map must
    send every word to one that maps back (a reversed clip reversed again is the clip)."""

    def __init__(self, words: dict[str, str]):
        for word, opposite in words.items():
            if words.get(opposite) != word:
                raise VidgenError(f"data.time_reverse maps {word!r} to {opposite!r}, which must map back to {word!r} "
                                  f"(it maps to {words.get(opposite)!r}): give both directions, e.g. "
                                  f"{{{word}: {opposite}, {opposite}: {word}}}")
        self.words = dict(words)
        self.pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(words, key=len, reverse=True))) + r")\b")

    def applies(self, caption: str) -> bool:
        return self.pattern.search(caption) is not None

    def caption(self, caption: str) -> str:
        return self.pattern.sub(lambda m: self.words[m.group(1)], caption)

    def __call__(self, item: dict) -> dict:
        frames = {key: item[key].flip(1) for key in ("video", "latent_mean", "latent_std", "low_latent_mean",
                                                       "low_latent_std") if key in item}  # (c f h w): f reversed
        return {**item, **frames, "caption": self.caption(item["caption"])}


def collate_clips(items: list) -> dict:
    """Stack the readable items into a batch; list the skipped ones under "skipped"."""
    good = [item for item in items if not isinstance(item, SkippedSample)]
    skipped = [item for item in items if isinstance(item, SkippedSample)]
    batch = {
        key: torch.stack([item[key] for item in good]) if good and key in good[0] else None  # (b c f h w)
        for key in ("video", "latent_mean", "latent_std", "low_latent_mean", "low_latent_std", "noise")
    }
    batch.update({
        "fps": torch.tensor([item["fps"] for item in good], dtype=torch.float32),
        "caption": [item["caption"] for item in good],
        "path": [item["path"] for item in good],
        "skipped": skipped,
    })
    return batch
