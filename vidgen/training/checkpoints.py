"""Training checkpoints: the full state of a run, written atomically and pruned to the newest K.

    OUTPUT_DIR/checkpoints/step-00000500/   accelerate's save_state (model weights as safetensors,
                                            optimizer, LR schedule, EMA, RNG states) + trainer.json
                                            (step, config) written by this module

A checkpoint is first written as `step-N.partial` and renamed when complete, so `resume=auto`
never picks up a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ..errors import VidgenError
from ..fs import write_text_atomic

STATE_NAME = "trainer.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


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


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, state: dict, keep: int) -> Path:
    """Write the run's state at `step` (every process calls this; the main process renames and prunes)."""
    final = checkpoint_root(output_dir) / f"step-{step:08d}"
    partial = final.with_name(final.name + ".partial")
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial), safe_serialization=True)
    if accelerator.is_main_process:
        write_text_atomic(partial / STATE_NAME, json.dumps({**state, "step": step}, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_trainer_state(folder: Path) -> dict:
    """trainer.json of a checkpoint: step, micro_step, stage and the run's config."""
    return json.loads((folder / STATE_NAME).read_text(encoding="utf-8"))


def load_checkpoint(accelerator, folder: Path) -> dict:
    """Restore the state saved in `folder`; returns trainer.json's contents (step, ...)."""
    accelerator.load_state(str(folder))
    return read_trainer_state(folder)
