"""vidgen in other processes, for the tests: a free port, the environment a child process needs,
and `accelerate launch` of two CPU processes joined over gloo."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    """This checkout's vidgen, one thread a process, offline."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1"}


def launch_two(cwd: Path, argv, timeout: int = 240) -> subprocess.CompletedProcess:
    """`accelerate launch` two CPU processes of `vidgen ARGV` in `cwd`; asserts they succeeded.

    ACCELERATE_USE_CPU makes accelerate join the ranks over gloo: `accelerate launch --cpu
    --num_processes 2` starts one process (more need MPI), and a launch without it on a machine
    without CUDA starts two that would each work alone."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "vidgen", *map(str, argv)]
    done = subprocess.run(command, cwd=cwd, env={**subprocess_env(), "ACCELERATE_USE_CPU": "true"},
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done
