"""The training loop's loader over WebDataset shards (vidgen.data.shard_dataset): one per process,
each reading its own shards, so it is not handed to accelerate's `prepare` (which would have every
rank read the whole stream, or rank 0 read it and send each its batches).

It keeps, per reader, the position of the last batch the loop consumed, and `state` gathers them
from every rank for the checkpoint; `restore` + `skip_first_batches` continue a resumed epoch from
there instead of from its start (what is exact and what is not: vidgen.data.shard_dataset).
With data.clip_log each rank also writes the clips it trained on (`rank-{i}-clips.txt`).
"""

from __future__ import annotations

from pathlib import Path

from accelerate.utils import gather_object, send_to_device
from torch.utils.data import DataLoader

from ..data.dataset import VideoClipDataset
from ..data.shard_dataset import ShardClipDataset, collate_positioned
from ..errors import VidgenError


class ShardLoader:
    def __init__(self, dataset: ShardClipDataset, accelerator, batch_size: int, num_workers: int, worker_init_fn,
                 clip_log: Path | None = None):
        self.dataset, self.accelerator, self.batch_size = dataset, accelerator, batch_size
        dataset.split(accelerator.process_index, accelerator.num_processes, num_workers, batch_size)
        self.loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_positioned,
                                 worker_init_fn=worker_init_fn if num_workers else None)
        self.positions: dict[int, tuple] = {}  # reader -> (yielded, read, buffered) of the last batch consumed
        self.marked: dict[int, tuple] = {}
        self.marked_epoch: int | None = None  # the epoch `marked` belongs to (the dataset's may move on before `state`)
        self.restored: dict | None = None
        self.clip_log = clip_log

    def __len__(self) -> int:
        """Batches per epoch, the same on every rank."""
        return self.dataset.readers_per_rank * self.dataset.quota // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.dataset.epoch:
            self.positions = {}
        self.dataset.set_epoch(epoch)
        self.dataset.start = {}

    def __iter__(self):
        for batch in self.loader:
            reader, yielded, read, buffered = batch.pop("position")
            self.positions[reader] = (yielded, read, list(buffered))
            if self.clip_log is not None:
                self.clip_log.parent.mkdir(parents=True, exist_ok=True)
                with open(self.clip_log, "a", encoding="utf-8") as log:
                    log.writelines(f"{self.dataset.epoch}\t{path}\n" for path in batch["path"])
            yield send_to_device(batch, self.accelerator.device)

    def mark(self) -> None:
        """Note the positions as they are now: the loop calls this where it records its micro-step."""
        self.marked = dict(self.positions)
        self.marked_epoch = self.dataset.epoch

    def state(self) -> dict:
        """The marked positions of every rank's readers (every rank calls this: it gathers)."""
        readers = {}
        for part in gather_object([self.marked]):
            readers.update(part)
        epoch = self.dataset.epoch if self.marked_epoch is None else self.marked_epoch
        return {"epoch": epoch, "readers": {str(k): list(v) for k, v in sorted(readers.items())},
                "layout": [self.accelerator.num_processes, self.dataset.readers_per_rank, self.batch_size]}

    def restore(self, saved: dict | None) -> None:
        """Take a checkpoint's `state` (None: a checkpoint from before shards, or a manifest run's)."""
        self.restored = saved

    def skip_first_batches(self, batches: int) -> "ShardLoader":
        """Continue this epoch where the checkpoint left it: `batches` is how many this rank consumed."""
        saved, layout = self.restored, [self.accelerator.num_processes, self.dataset.readers_per_rank, self.batch_size]
        if not saved or saved.get("epoch") != self.dataset.epoch:
            raise VidgenError("the checkpoint holds no shard position for this epoch: resume it with the vidgen that "
                              "wrote it, or start afresh (train.resume=never)")
        if saved["layout"] != layout:
            raise VidgenError(f"the checkpoint was written by {saved['layout'][0]} processes x {saved['layout'][1]} "
                              f"readers; this run has {layout[0]} x {layout[1]}: the shards were dealt to those readers, "
                              f"so resume with the same process count and data.num_workers")
        mine = {int(k): (v[0], v[1], tuple(v[2])) for k, v in saved["readers"].items()
                if int(k) // self.dataset.readers_per_rank == self.accelerator.process_index}
        if sum(v[0] for v in mine.values()) != batches * self.batch_size:
            raise VidgenError(f"the checkpoint's shard positions ({sum(v[0] for v in mine.values())} clips) do not "
                              f"match its step ({batches} batches into the epoch): resume from another checkpoint")
        self.dataset.start = mine
        self.positions = dict(mine)
        self.restored = None
        return self


def shard_dataset(clips: VideoClipDataset, shards_pattern: str, shuffle_buffer: int,
                  withhold_captions: float) -> ShardClipDataset:
    from ..data.shards import scan_shards

    return ShardClipDataset(scan_shards(shards_pattern), clips, shuffle_buffer, withhold_captions)
