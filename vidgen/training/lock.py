"""One training run per output folder at a time.

Two runs writing one `train.output_dir` overwrite each other's checkpoints, log and exported
model (an export started beside a running job rewrote its log.csv, and the job's later rows went
to a file no longer in the folder). `run_lock` holds `output_dir/run.lock`, holding the pid of the
run's main process, for the length of the run and refuses the folder while a live process holds
it. A lock left by a process that is gone (killed with SIGKILL, or the machine restarted) is taken
over. The check is by pid on this machine: runs on other machines sharing the folder are not seen.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import VidgenError
from ..fs import process_alive

LOCK_NAME = "run.lock"


def _holder(path: Path) -> int | None:
    """The pid written in a lock file, or None where it is empty or unreadable (being written)."""
    try:
        return int(path.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _try_create(path: Path) -> bool:
    """Create `path` holding this process's pid, atomically: the lock appears with its pid in it
    (written to a temporary first, then hard-linked into place, which fails if the lock exists),
    so no other run ever reads an empty lock."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(f"{os.getpid()}\n", encoding="utf-8")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def run_lock(folder: Path, enabled: bool = True) -> Iterator[None]:
    """Hold `folder/run.lock` while the body runs; `enabled=False` (non-main processes) holds nothing."""
    if not enabled:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while not _try_create(path):
        holder = _holder(path)
        if holder is not None and holder != os.getpid() and process_alive(holder):
            raise VidgenError(f"{folder} is in use by another training run (process {holder}, see {path}): let it "
                              f"finish, stop it (kill -TERM {holder}: it saves a checkpoint first), or give "
                              f"another train.output_dir") from None
        path.unlink(missing_ok=True)  # its process is gone (or the file is not a lock): take the folder over
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
