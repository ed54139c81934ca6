"""Clips streamed from WebDataset shards, split across processes and DataLoader workers.

The shards are dealt once per run into one group per reader (processes x workers), balanced by
their sample counts (vidgen.data.shards.scan_shards), so no two readers ever open the same
shard. Each epoch, reader g takes group (g + epoch) mod readers, its shards in an order drawn
from (seed, epoch), and streams their samples through a shuffle buffer; clips are decoded from
the tar members' bytes by the manifest path's own code (VideoClipDataset.clip_item).

Every reader yields the same number of clips per epoch, `quota`: its group's samples once each,
then, where its group is smaller than the largest, the first of them again, rounded up to whole
batches. All ranks then draw the same number of batches (data-parallel steps stay in lockstep),
and every clip is seen at least once per epoch (exactly once where the groups hold equal counts:
shards of equal size, the same number per reader).

Each item comes with its reader's position: (reader, clips yielded, samples read, the read
indices its shuffle buffer holds). The training loop keeps the last position per reader of what
it consumed and saves it in checkpoints; a resumed epoch continues every reader from it (`start`):
the samples the buffer held are read again from their shards (the only re-reading), then the
stream goes on after the last sample read. So the clips of a resumed epoch are exactly the ones
not yet trained on. Only their order differs from an uninterrupted run's (the buffer's draws
are seeded again, from the position); each clip's random frames and fps are drawn from (seed,
epoch, clip name), so they are the same.
"""

from __future__ import annotations

import hashlib
from itertools import accumulate
from typing import Iterator

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import VidgenError
from .dataset import SkippedSample, VideoClipDataset, collate_clips
from .shards import RawSample, Shard, read_shard

# (reader, clips yielded this epoch, samples read this epoch, read indices held in the shuffle buffer)
Position = tuple[int, int, int, tuple[int, ...]]


def key_seed(text: str) -> int:
    """A stable integer of a sample's name (Python's hash() differs between processes)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def deal_shards(shards: list[Shard], readers: int) -> list[list[Shard]]:
    """Shards into `readers` groups of near-equal sample totals: largest first, each to the group
    holding the fewest samples so far (ties: the lowest group)."""
    if len(shards) < readers:
        raise VidgenError(f"data.shards names {len(shards)} shards with videos, fewer than the {readers} readers "
                          f"(processes x max(1, data.num_workers)): no two readers share a shard, so write more, "
                          f"smaller shards (`vidgen data shard --per-shard`) or lower data.num_workers")
    groups: list[list[Shard]] = [[] for _ in range(readers)]
    totals = [0] * readers
    for shard in sorted(shards, key=lambda s: (-s.samples, s.path)):
        g = min(range(readers), key=lambda i: (totals[i], i))
        groups[g].append(shard)
        totals[g] += shard.samples
    return groups


class ShardClipDataset(IterableDataset):
    """Items as VideoClipDataset gives them, each paired with its reader's `Position`."""

    def __init__(self, shards: list[Shard], clips: VideoClipDataset, shuffle_buffer: int = 100,
                 withhold_captions: float = 0.0):
        self.shards, self.clips = list(shards), clips
        self.shuffle_buffer, self.withhold = shuffle_buffer, withhold_captions
        self.seed, self.epoch = clips.seed, 0
        self.start: dict[int, tuple] = {}  # reader -> (yielded, read, buffered) to continue this epoch from
        self.split(rank=0, processes=1, workers=0, batch_size=1)

    def split(self, rank: int, processes: int, workers: int, batch_size: int) -> None:
        """Deal the shards for `processes` ranks of `workers` DataLoader workers each (0: the main process reads)."""
        self.rank, self.readers_per_rank = rank, max(1, workers)
        self.groups = deal_shards(self.shards, processes * self.readers_per_rank)
        largest = max(sum(s.samples for s in group) for group in self.groups)
        self.quota = -(-largest // batch_size) * batch_size  # whole batches: a worker's batches never straddle readers

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.clips.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[object, Position]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != self.readers_per_rank:
            raise VidgenError(f"the shards were dealt for {self.readers_per_rank} workers, the loader has {info.num_workers}")
        reader = self.rank * self.readers_per_rank + worker
        yield from self.reader_stream(reader, *self.start.get(reader, (0, 0, ())))

    # --- one reader ------------------------------------------------------------------------------

    def reader_order(self, reader: int) -> list[Shard]:
        """The shards reader `reader` streams this epoch, in order."""
        index = (reader + self.epoch) % len(self.groups)
        group = self.groups[index]
        order = np.random.default_rng([self.seed, self.epoch, index, 1]).permutation(len(group))
        return [group[i] for i in order]

    def _samples_from(self, order: list[Shard], first: int) -> Iterator[tuple[int, RawSample]]:
        """(read index, sample) from read index `first` on; index i >= total is sample i mod total
        again (the padding); a damaged shard's missing samples leave their indices out."""
        total = sum(s.samples for s in order)
        starts = [0, *accumulate(s.samples for s in order)]
        lap, within = divmod(first, total)
        while True:
            yielded = False
            for k, shard in enumerate(order):
                if starts[k + 1] <= within:
                    continue
                skip = max(0, within - starts[k])
                for n, sample in enumerate(read_shard(shard.path, skip=skip)):
                    yielded = True
                    yield lap * total + starts[k] + skip + n, sample
            if not yielded:
                return  # a whole lap read nothing
            lap, within = lap + 1, 0

    def _refill(self, order: list[Shard], indices: list[int]) -> list[tuple[int, RawSample]]:
        """The samples at read `indices` (what a checkpoint's buffer held), read again, undecoded."""
        total = sum(s.samples for s in order)
        starts = [0, *accumulate(s.samples for s in order)]
        wanted: dict[int, dict[int, int]] = {}  # shard -> {offset: index}
        for index in indices:
            k = max(i for i in range(len(order)) if starts[i] <= index % total)
            wanted.setdefault(k, {})[index % total - starts[k]] = index
        found = []
        for k, offsets in sorted(wanted.items()):
            for n, sample in enumerate(read_shard(order[k].path)):
                if n in offsets:
                    found.append((offsets[n], sample))
                if n >= max(offsets):
                    break
        return found

    def reader_stream(self, reader: int, yielded: int = 0, read: int = 0,
                      buffered: tuple[int, ...] = ()) -> Iterator[tuple[object, Position]]:
        """Reader `reader`'s items this epoch, from a position (`yielded`, `read`, `buffered`) on."""
        order = self.reader_order(reader)
        total = sum(s.samples for s in order)
        rng = np.random.default_rng([self.seed, self.epoch, reader, yielded])  # the shuffle buffer's draws
        buffer: list[tuple[int, RawSample]] = self._refill(order, list(buffered)) if buffered else []

        def emit():
            nonlocal yielded
            yielded += 1
            _, sample = buffer.pop(int(rng.integers(len(buffer))))
            return self.item(sample), (reader, yielded, read, tuple(sorted(i for i, _ in buffer)))

        for index, sample in self._samples_from(order, read):
            if yielded >= self.quota:
                return
            if index >= total:  # the first pass is read: empty the buffer, then pad without shuffling
                while buffer and yielded < self.quota:
                    yield emit()
                if yielded >= self.quota:
                    return
            read = index + 1
            buffer.append((index, sample))
            if len(buffer) >= max(1, self.shuffle_buffer) or index >= total:
                yield emit()
        while buffer and yielded < self.quota:  # the padding read nothing: what the buffer holds
            yield emit()
        while yielded < self.quota:  # nothing readable: placeholders keep the ranks' batch counts equal
            yielded += 1
            yield SkippedSample(f"reader {reader}'s shards", "no sample could be read"), (reader, yielded, read, ())

    def item(self, sample: RawSample):
        name = str(sample.video)
        caption = sample.caption
        if caption and self.withhold and np.random.default_rng([self.seed, 7, key_seed(name)]).random() < self.withhold:
            caption = None  # a fixed share of the captioned clips, for the whole run (data.withhold_captions)
        record = {"path": sample.video, **({"caption": caption} if caption else {})}
        return self.clips.clip_item(record, np.random.default_rng([self.seed, self.epoch, key_seed(name)]))


def collate_positioned(pairs: list[tuple[object, Position]]) -> dict:
    """collate_clips over the items, with the position of the batch's last item (one reader makes a whole batch)."""
    batch = collate_clips([item for item, _ in pairs])
    batch["position"] = pairs[-1][1]
    return batch
