"""Training checkpoints: the full state of a run, written atomically, pruned to the newest K, and
read back without ever running code from the folder.

    OUTPUT_DIR/checkpoints/step-00000500/
        model.safetensors            the trained model (accelerate's save_state, safetensors)
        optimizer.bin, scheduler.bin accelerate's files: torch tensors and numbers, read back only
        random_states_0.pkl          with torch.load(weights_only=True), which refuses any object
                                     that is not plain data
        ema.safetensors, ema.json    the EMA of the trained weights (tensors; its counters as JSON)
        pytorch_model_fsdp_0/,       under FSDP (SHARDED_STATE_DICT): the model's and the optimizer's
        optimizer_0/                 shards, torch.distributed.checkpoint folders checked before they
                                     are read (vidgen.training.sharded); model.safetensors and
                                     optimizer.bin are then absent
        trainer.json                 step, data position, whether the weights were finite, config

A checkpoint is first written as `step-N.partial` and renamed when complete, so `resume=auto`
never picks up a half-written one; partial folders of a killed run are removed by the next.
A folder holding a file vidgen does not write (a `.pkl` or `.bin` under another name), or a
pickle that is more than tensors and numbers, is refused before anything in it is unpickled.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import VidgenError
from ..fs import atomic_path, write_text_atomic
from .engines import whole
from .sharded import check_state_folders

STATE_NAME = "trainer.json"
EMA_WEIGHTS, EMA_STATE = "ema.safetensors", "ema.json"
LEGACY_EMA = "custom_checkpoint_0.pkl"  # where vidgen <= 0.1 let accelerate pickle the EMA
_STEP_DIR = re.compile(r"^step-(\d+)$")
# Files accelerate's save_state writes for one model, optimizer and schedule (any process count;
# under FSDP with a full or per-rank state dict, pytorch_model_fsdp*.bin and optimizer*_rank*.bin,
# which accelerate reads with weights_only=True). Sharded states are folders (vidgen.training.sharded).
_ACCELERATE_FILES = re.compile(r"^(model(_\d+)?\.safetensors|(optimizer|scheduler|sampler|dl_state_dict)(_\d+)?\.bin"
                               r"|(pytorch_model_fsdp|optimizer)(_\d+)?(_rank\d+)?\.bin"
                               r"|random_states_\d+\.pkl|scaler\.pt)$")
PICKLE_SUFFIXES = (".pkl", ".bin", ".pt", ".pth", ".ckpt", ".pickle")


class UnsafeCheckpoint(VidgenError):
    """A checkpoint folder holds a file that would run code if it were unpickled."""


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / STATE_NAME).is_file()]
    return [p for _, p in sorted(found)]


def last_good_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint whose weights were finite when it was written."""
    for folder in reversed(list_checkpoints(output_dir)):
        if read_trainer_state(folder).get("finite", True):
            return folder
    return None


def remove_partial_checkpoints(output_dir: str | os.PathLike) -> None:
    """Checkpoints a killed run left half-written (the caller holds the run lock)."""
    root = checkpoint_root(output_dir)
    if root.is_dir():
        for folder in root.glob("step-*.partial"):
            shutil.rmtree(folder, ignore_errors=True)


def find_resume_point(output_dir: str | os.PathLike, resume: str) -> Path | None:
    """The checkpoint to resume from: "auto" (newest, or None), "never" (None) or a folder."""
    if resume == "never":
        return None
    if resume == "auto":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_NAME).is_file():
        raise VidgenError(f"train.resume={resume}: not a checkpoint folder (no {STATE_NAME}); use 'auto', 'never' or "
                          f"a folder under {checkpoint_root(output_dir)}")
    return path


# --- the EMA: tensors as safetensors, counters as JSON ---------------------------------------------

def save_ema(ema, folder: Path, shadow: list | None = None) -> None:
    """`shadow`: the EMA's tensors whole (gathered under FSDP); by default its own."""
    state = ema.state_dict()
    own = state.pop("shadow_params")  # one tensor per trained parameter, in parameter order
    shadow = own if shadow is None else shadow
    with atomic_path(folder / EMA_WEIGHTS) as tmp:
        save_file({f"shadow.{i:06d}": t.detach().contiguous().cpu() for i, t in enumerate(shadow)}, str(tmp))
    write_text_atomic(folder / EMA_STATE, json.dumps(state, indent=2) + "\n")


def load_ema(ema, folder: Path) -> None:
    if (folder / EMA_WEIGHTS).is_file():
        try:
            with safe_open(str(folder / EMA_WEIGHTS), framework="pt", device="cpu") as f:
                shadow = [f.get_tensor(key) for key in sorted(f.keys())]
            state = json.loads((folder / EMA_STATE).read_text(encoding="utf-8"))
        except (SafetensorError, OSError, json.JSONDecodeError) as exc:
            raise VidgenError(f"{folder}: cannot read the EMA state ({exc}): resume from another checkpoint") from None
    elif (folder / LEGACY_EMA).is_file():  # an older vidgen's checkpoint: plain tensors and numbers, or refused
        state = _load_plain(folder / LEGACY_EMA)
        shadow = state.pop("shadow_params", None)
    else:
        raise VidgenError(f"{folder} holds no EMA state ({EMA_WEIGHTS}) and this run keeps an EMA: resume with the "
                          f"same train.ema_decay setting as the run that wrote it (0: no EMA)")
    if not isinstance(state, dict) or not isinstance(shadow, list):
        raise VidgenError(f"{folder}: the EMA state is not what vidgen writes: resume from another checkpoint")
    ema.load_state_dict({**state, "shadow_params": shadow})


# --- refusing code ---------------------------------------------------------------------------------

def _refuse(path: Path, why: str) -> UnsafeCheckpoint:
    return UnsafeCheckpoint(f"{path} {why}; vidgen never unpickles anything but tensors and numbers from a "
                            f"checkpoint: resume from a checkpoint vidgen wrote, or start afresh (train.resume=never)")


def _why(exc: Exception) -> str:
    """The part of torch's weights-only refusal that names what the pickle asked for."""
    found = re.search(r"unsupported (global|operand)[^\n]*", str(exc), flags=re.IGNORECASE)
    return found.group(0).strip()[:160] if found else str(exc).strip().splitlines()[0][:160]


def _load_plain(path: Path, mmap: bool = False):
    """torch.load that accepts tensors, numbers, strings and containers and refuses everything else
    (`mmap`: the tensors stay on disk, for checking a large file's structure)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise _refuse(path, f"holds a pickle that is not plain tensors ({_why(exc)})") from None


def check_checkpoint_files(folder: Path, ema_expected: bool) -> None:
    """Refuse a checkpoint folder holding a pickle-format file vidgen does not write, or a sharded
    state (FSDP, DeepSpeed) that is more than tensors and plain data."""
    check_state_folders(folder, functools.partial(_load_plain, mmap=True), _refuse)
    for path in sorted(p for p in folder.iterdir() if not p.is_dir()):
        if path.suffix.lower() in PICKLE_SUFFIXES and not _ACCELERATE_FILES.match(path.name):
            if path.name == LEGACY_EMA and ema_expected and not (folder / EMA_WEIGHTS).exists():
                continue  # read with _load_plain, which refuses anything but tensors
            raise _refuse(path, "is not a file vidgen writes into a checkpoint")


@contextlib.contextmanager
def _without_legacy_ema(folder: Path) -> Iterator[Path]:
    """`folder`, or where it holds an older vidgen's pickled EMA (which accelerate would unpickle
    in full), a view of it without that file; `load_ema` reads the EMA with weights_only=True."""
    if not (folder / LEGACY_EMA).exists():
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="vidgen-checkpoint-") as view:
        for entry in folder.iterdir():
            if entry.name != LEGACY_EMA:
                os.symlink(entry.resolve(), Path(view) / entry.name)
        yield Path(view)


# --- saving and loading a checkpoint ---------------------------------------------------------------

def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, state: dict, keep: int,
                    ema=None) -> Path:
    """Write the run's state at `step` (every process calls this; the main process renames and prunes)."""
    final = checkpoint_root(output_dir) / f"step-{step:08d}"
    partial = final.with_name(final.name + ".partial")
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial), safe_serialization=True)
    accelerator.wait_for_everyone()  # every rank's random_states_{i}.pkl is in the folder before it is renamed
    shadow = [whole(t) for t in ema.shadow_params] if ema is not None else None  # every process: FSDP gathers
    if accelerator.is_main_process:
        if ema is not None:
            save_ema(ema, partial, shadow)
        write_text_atomic(partial / STATE_NAME, json.dumps({**state, "step": step}, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_trainer_state(folder: Path) -> dict:
    """trainer.json of a checkpoint: step, micro_step, finite, stage and the run's config."""
    try:
        state = json.loads((folder / STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VidgenError(f"{folder / STATE_NAME} is not readable JSON ({exc}): resume from another checkpoint") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise VidgenError(f"{folder / STATE_NAME} is not a vidgen trainer state: resume from another checkpoint")
    return state


def load_checkpoint(accelerator, folder: Path, ema=None) -> dict:
    """Restore the state saved in `folder`; returns trainer.json's contents (step, ...)."""
    check_checkpoint_files(folder, ema_expected=ema is not None)
    state = read_trainer_state(folder)
    try:
        with _without_legacy_ema(folder) as readable:
            accelerator.load_state(str(readable))
    except pickle.UnpicklingError as exc:  # accelerate reads its files with weights_only=True
        raise _refuse(folder, f"holds a pickle that is not plain tensors ({_why(exc)})") from None
    if ema is not None:
        load_ema(ema, folder)
    return state
