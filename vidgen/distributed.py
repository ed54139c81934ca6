"""Generation and evaluation over several processes (`accelerate launch ... -m vidgen generate|eval`).

Under `accelerate launch` (or torchrun: WORLD_SIZE is set) every process loads the model and
takes its own contiguous share of the work (accelerate's `split_between_processes`); a clip's
name depends only on its prompt's line, never on which process made it, so each clip is written
exactly once. A rerun skips a clip whose sidecar says vidgen already wrote it for the same prompt
and settings (a long prompt list survives a preempted job). Evaluation gathers every process's
judgements on rank 0, which writes the one report.

Started without a launcher, nothing here initialises torch.distributed and every function is the
identity: one process does all the work, as before.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence, TypeVar

from .destinations import read_sidecar
from .errors import VidgenError

T = TypeVar("T")


def launched() -> bool:
    """Whether a launcher (accelerate launch, torchrun) started this process as one of a group."""
    return "WORLD_SIZE" in os.environ


def say(line: str) -> None:
    """Print one line in a single write: launched processes share one stdout pipe, and `print`
    writes the text and its newline separately, so two ranks' lines could run together."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Processes:
    """This process's place in the launch: rank, count, and the collectives generation needs."""

    def __init__(self):
        self.state = None
        if launched():
            from accelerate import PartialState
            from accelerate.utils import parse_flag_from_env

            # joins the group: NCCL on GPUs, gloo on CPUs under ACCELERATE_USE_CPU=true (which the
            # Accelerator reads by itself, PartialState only when told)
            self.state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
            started = int(os.environ["WORLD_SIZE"])
            if self.state.num_processes != started:
                raise VidgenError(f"{started} processes were launched but accelerate joined {self.state.num_processes}: "
                                  "on a machine without GPUs set ACCELERATE_USE_CPU=true (e.g. `ACCELERATE_USE_CPU=true "
                                  "accelerate launch --multi_gpu --num_processes 2 -m vidgen generate ...`)")

    @property
    def rank(self) -> int:
        return self.state.process_index if self.state is not None else 0

    @property
    def count(self) -> int:
        return self.state.num_processes if self.state is not None else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> str:
        """`--device cuda` means this process's own GPU (LOCAL_RANK) under a launcher."""
        if name == "cuda" and self.state is not None:
            return f"cuda:{self.state.local_process_index}"
        return name

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's contiguous share of `items` (all of them in one process)."""
        if self.count == 1:
            return list(items)
        with self.state.split_between_processes(list(items)) as mine:
            return list(mine)

    def agree(self, value: T) -> T:
        """Rank 0's `value` on every process (e.g. a seed drawn at random)."""
        if self.count == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value])[0]

    def gather(self, items: list[T]) -> list[T]:
        """Every process's `items`, concatenated in rank order, on every process."""
        if self.count == 1:
            return list(items)
        from accelerate.utils import gather_object

        return list(gather_object(list(items)))

    def wait(self) -> None:
        if self.count > 1:
            self.state.wait_for_everyone()

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, error_type, *_) -> None:
        """Leave the group together: the ranks wait for each other (unless this one failed), then the
        group is taken down. Left to the interpreter's exit, gloo's threads can abort a rank that
        finished first ("terminate called without an active exception", SIGABRT). The rank and
        count stay readable afterwards; no collective may follow."""
        if self.count > 1:
            if error_type is None:
                self.wait()
            import torch.distributed

            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


def already_written(path: str | os.PathLike, expected: dict) -> bool:
    """Whether `path` holds a clip vidgen wrote (its sidecar is complete: the clip was moved in
    place before the sidecar) with every key of `expected` (prompt, settings, ...) as given."""
    record = read_sidecar(path)
    if record is None or not Path(path).exists():
        return False
    return all(record.get(key) == value for key, value in expected.items())


def clips_to_make(jobs: Sequence[tuple[str, Path]], expected: dict, processes: Processes) -> tuple[list, int]:
    """This process's (prompt, path) jobs left to make under a launcher, and how many of its
    share were already written; without a launcher every job, none skipped (as before)."""
    if not launched():
        return list(jobs), 0
    mine = processes.share(jobs)
    todo = [(prompt, path) for prompt, path in mine if not already_written(path, {**expected, "prompt": prompt})]
    return todo, len(mine) - len(todo)
