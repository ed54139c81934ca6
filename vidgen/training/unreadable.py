"""Clips the data loader could not read: each file logged once, a pass with none readable stopped.

A corpus whose every file is broken (a wrong path prefix in a manifest, a codec the machine
lacks) would otherwise spin forever, drawing batches that are all skipped. After a whole pass
over the data with no readable clip the run stops, naming the manifest, how many files failed
and the commonest reasons.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch

from ..errors import VidgenError

logger = logging.getLogger("vidgen.training")
SHOWN_REASONS = 3


class UnreadableClips:
    def __init__(self, manifest: str):
        self.manifest = manifest
        self.seen: set[str] = set()  # files logged already
        self.reasons: Counter[str] = Counter()
        self.total = 0  # skipped draws over the run (a file may be drawn many times)
        self.readable_this_pass = 0
        self.skipped_this_pass = 0

    def note(self, batch: dict) -> None:
        """Count a batch's readable clips and log its unreadable files, each file the first time only."""
        self.readable_this_pass += len(batch["path"])
        self.total += len(batch["skipped"])
        self.skipped_this_pass += len(batch["skipped"])
        for skipped in batch["skipped"]:
            if skipped.path in self.seen:
                continue
            self.seen.add(skipped.path)
            self.reasons[skipped.reason.replace(skipped.path, "FILE")] += 1
            logger.warning("skipped %s: %s (each unreadable file is reported once)", skipped.path, skipped.reason)

    def end_pass(self, readable_anywhere: int) -> None:
        """After a whole pass over the data: stop the run if no process read a single clip."""
        if readable_anywhere == 0:
            common = "; ".join(f"{n} x {reason}" for reason, n in self.reasons.most_common(SHOWN_REASONS))
            raise VidgenError(f"no clip of {self.manifest} could be read in a whole pass over it: {len(self.seen)} "
                              f"files failed ({common or 'no reason given'}). Fix the files or the manifest's paths "
                              f"(`vidgen data index DIR -o MANIFEST` lists only readable videos) and train again")
        if self.skipped_this_pass:
            logger.warning("a pass over %s skipped %d unreadable clips on this process (%d files so far: %s)",
                           self.manifest, self.skipped_this_pass, len(self.seen),
                           "; ".join(f"{n} x {reason}" for reason, n in self.reasons.most_common(SHOWN_REASONS)))
        self.readable_this_pass = 0
        self.skipped_this_pass = 0


def every_clip_skipped(accelerator, batch) -> bool:
    """Whether this batch is to be skipped: every clip of it was unreadable on some rank. Decided
    by all ranks together, so that none leaves the step's collectives (the loss gather, DDP's
    gradient all-reduce) while the others wait in them."""
    empty = not batch["path"]
    if accelerator.num_processes == 1:
        return empty
    return bool(accelerator.gather(torch.tensor([float(empty)], device=accelerator.device)).max().item())
