"""One accelerate training loop for every stage of the cascade.

The loop knows nothing of what it trains: a `Stage` (vidgen.training.stages) builds the model,
the dataset and the loss, and exports a model folder. The loop adds what every run needs:
device placement and mixed precision (accelerate), gradient accumulation and clipping, AdamW
with warmup, an EMA of the trained weights, checkpoints that resume bit for bit, a progress
bar, a CSV log (and TensorBoard where installed), previews, and a clean stop on Ctrl-C or a
non-finite loss.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, GradientAccumulationPlugin, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import save_config
from ..data.dataset import collate_clips
from ..errors import Terminated, VidgenError
from ..fs import atomic_path
from .checkpoints import (find_resume_point, last_good_checkpoint, load_checkpoint, read_trainer_state,
                          remove_partial_checkpoints, save_checkpoint)
from .config import RunConfig
from .engines import all_finite, check_engine, export_model, partitioned, sharded, shard_like
from .lock import run_lock
from .resume import apply_changed_settings, check_resumable
from .shard_loader import ShardLoader
from .stages import build_stage
from .unreadable import UnreadableClips, every_clip_skipped
from .worker_signals import batches_with_signals_held, leave_stop_signals_to_the_main_process
from .validate import check_run

logger = logging.getLogger(__name__)


class TrainingDiverged(VidgenError):
    """The loss became NaN or infinite."""


def step_generator(seed: int, micro_step: int, rank: int) -> torch.Generator:
    """The randomness of one micro-step (noise, timesteps, caption dropout), from the run's seed.

    Seeding per step rather than carrying one generator along makes a resumed run draw exactly
    what an uninterrupted one would.
    """
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, micro_step, rank]).generate_state(1)[0]))


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict (names, dtypes, shapes and values): equal digests, equal weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM (`kill`, `timeout`, a scheduler's preemption), noted when they
    arrive and acted on between training steps, where `check` raises KeyboardInterrupt or
    `Terminated` and the run saves a checkpoint. An exception raised by the handler itself could
    land anywhere, and where it lands inside a destructor Python prints it and carries on (seen:
    in decord's VideoReader.__del__, the run went on training). A second signal raises at once, so
    a run stuck outside the loop can still be stopped. (Runs started in the background with `&`
    ignore SIGINT, so SIGTERM is how one stops them.)"""

    EXCEPTIONS = {signal.SIGINT: KeyboardInterrupt, signal.SIGTERM: Terminated}

    def __init__(self):
        self.received: int | None = None

    def _handler(self, signum, frame):
        if self.received is not None:
            raise self.EXCEPTIONS[signum]()
        self.received = signum

    def install(self) -> Callable[[], None]:
        """Handle both signals until the returned function is called (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {signum: signal.signal(signum, self._handler) for signum in self.EXCEPTIONS}

        def restore():
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore

    def check(self) -> None:
        if self.received is not None:
            raise self.EXCEPTIONS[self.received]()


class RunLog:
    """CSV log of a run, mirrored to TensorBoard when it is installed. On resume, rows past the
    resumed step (written by a run killed before its next checkpoint) are dropped, then appended to."""

    FIELDS = ("step", "loss", "lr", "samples_per_s", "skipped_clips", "elapsed_s")

    def __init__(self, output_dir: Path, enabled: bool, resumed_step: int = 0, extra_fields: tuple[str, ...] = ()):
        self.enabled, self.fields = enabled, self.FIELDS + tuple(extra_fields)  # extra: the stage's own figures
        self.path = output_dir / "log.csv"
        self.tensorboard = None
        if not enabled:
            return
        if self.path.exists():
            self._drop_rows_after(resumed_step)
        new = not self.path.exists()
        self.file = open(self.path, "a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.file, fieldnames=self.fields, restval="")
        if new:
            self.writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"))
        except ImportError:
            pass

    def _drop_rows_after(self, step: int) -> None:
        """Drop the rows past `step`; a header with other columns (a run resumed under another
        version or stage) is rewritten as the union of both, so that every row keeps its columns."""
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows, header = list(reader), tuple(reader.fieldnames or ())
        kept = [row for row in rows if float(row["step"]) <= step]
        if header != self.fields:
            self.fields = self.fields + tuple(c for c in header if c not in self.fields)
        if len(kept) != len(rows) or header != self.fields:
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields, restval="")
                writer.writeheader()
                writer.writerows(kept)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.writer.writerow(row)
        self.file.flush()
        if self.tensorboard is not None:
            for key in ("loss", "lr", "samples_per_s", *self.fields[len(self.FIELDS):]):
                if isinstance(row.get(key), (int, float)):  # the stage's own figures where this row has them
                    self.tensorboard.add_scalar(key, row[key], row["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tensorboard is not None:
                self.tensorboard.close()


def _make_accelerator(cfg: RunConfig) -> Accelerator:
    return Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=cfg.train.grad_accum, sync_with_dataloader=False),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )


def _check_world(accelerator: Accelerator) -> None:
    """Refuse a launch whose processes would each train alone (and overwrite each other's files)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise VidgenError(f"{launched} processes were launched but accelerate sees {accelerator.num_processes}: on a "
                          "machine without GPUs set ACCELERATE_USE_CPU=true (e.g. `ACCELERATE_USE_CPU=true accelerate "
                          "launch --multi_gpu --num_processes 2 -m vidgen train ...`)")


def parameter_groups(model: torch.nn.Module, lr: float, multipliers: dict[str, float]) -> list[dict]:
    """The trainable parameters as optimizer groups: those under a module named by a key of
    `multipliers` (a dotted name: `text_embedding`, `temporal_attns`) learn at lr x its value, the
    rest at lr.

    A layer added at zero on top of a trained network (a text embedding) moves by
    about lr per step under Adam, whatever its gradient's size; at the network's fine-tuning
    rate it takes thousands of steps to matter, so it may be given a larger one.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]

    def under(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    for prefix, value in multipliers.items():
        if not value > 0:
            raise VidgenError(f"train.lr_multipliers.{prefix} must be a positive number, got {value}")
        if not any(under(name, prefix) for name, _ in named):
            tops = sorted({name.split(".")[0] for name, _ in named})
            raise VidgenError(f"train.lr_multipliers.{prefix} names no trainable parameter of the {type(model).__name__}: "
                              f"parameter names start with {', '.join(tops)}")
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, p in named:
        scale = next((value for prefix, value in multipliers.items() if under(name, prefix)), 1.0)
        groups.setdefault(scale, []).append(p)
    return [{"params": ps, "lr": lr * scale} for scale, ps in groups.items()]


def train(cfg: RunConfig, progress: bool = True) -> Path:
    """Run (or resume) training as `cfg` says; returns the exported model folder. The output folder
    is locked for the run (vidgen.training.lock): a second run into it is refused. A run refused
    before it wrote anything leaves no folder behind."""
    check_run(cfg)
    out = Path(cfg.train.output_dir)
    accelerator = _make_accelerator(cfg)
    _check_world(accelerator)
    check_engine(accelerator, cfg.train.ema_decay, cfg.train.preview_every)
    created = accelerator.is_main_process and not out.exists()
    try:
        with run_lock(out, enabled=accelerator.is_main_process):
            return _train(cfg, out, accelerator, progress)
    except VidgenError:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _train(cfg: RunConfig, out: Path, accelerator: Accelerator, progress: bool) -> Path:
    set_seed(cfg.train.seed)  # model initialisation and the data order
    stage = build_stage(cfg, accelerator.device)
    if cfg.data.latent_cache:
        with accelerator.main_process_first():  # the main process builds it; the others then read it
            stage.use_latent_cache(cfg.data.latent_cache, progress=progress and accelerator.is_main_process)
    dataset = stage.dataset()
    shards = None  # with data.shards each rank reads its own, not through accelerate (vidgen.training.shard_loader)
    if cfg.data.shards:
        shards = loader = ShardLoader(dataset, accelerator, cfg.train.batch_size, cfg.data.num_workers,
                                      leave_stop_signals_to_the_main_process,
                                      out / f"rank-{accelerator.process_index}-clips.txt" if cfg.data.clip_log else None)
    else:
        loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True,
                            drop_last=len(dataset) >= cfg.train.batch_size, num_workers=cfg.data.num_workers,
                            collate_fn=collate_clips, worker_init_fn=leave_stop_signals_to_the_main_process)
    params = [p for p in stage.model.parameters() if p.requires_grad]
    if not params:
        raise VidgenError(f"the {cfg.stage} stage has nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(parameter_groups(stage.model, cfg.train.lr, cfg.train.lr_multipliers),
                                  lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    schedule = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=cfg.train.warmup_steps)
    if shards is None:
        model, optimizer, loader, schedule = accelerator.prepare(stage.model, optimizer, loader, schedule)
    else:
        model, optimizer, schedule = accelerator.prepare(stage.model, optimizer, schedule)
    if sharded(accelerator):  # FSDP put this process's shards (DTensors) in place of the parameters
        params = [p for p in model.parameters() if p.requires_grad]
    ema = EMAModel(params, decay=cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
    if ema is not None:
        ema.to(accelerator.device)

    step, micro = 0, 0  # optimizer steps; batches drawn (the data position)
    if accelerator.is_main_process:
        remove_partial_checkpoints(out)  # a killed run's; this run holds the lock
    resume_from = find_resume_point(out, cfg.train.resume)
    if resume_from is not None:
        saved = read_trainer_state(resume_from)
        check_resumable(cfg, saved, resume_from)
        load_checkpoint(accelerator, resume_from, ema)
        step, micro = saved["step"], saved["micro_step"]
        if shards is not None:
            shards.restore(saved.get("shards"))
        for change in apply_changed_settings(cfg, saved, optimizer, schedule, ema):
            accelerator.print(f"resumed with {change}")
        if ema is not None:  # its state is read whole, on the CPU
            ema.shadow_params = [shard_like(s, p) for s, p in zip(ema.shadow_params, params)]
            ema.to(accelerator.device)
        accelerator.print(f"resumed from {resume_from} at step {step}")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")  # what this run trains with, changed settings included

    def checkpoint(at: int) -> None:
        """Save the state at step `at`, where its weights are finite (a later divergence names it)."""
        if not all_finite(accelerator, params):
            good = last_good_checkpoint(out)
            raise TrainingDiverged(_diverged(cfg, out, good, f"the weights became non-finite at step {at}"))
        position = {"shards": shards.state()} if shards is not None else {}
        save_checkpoint(accelerator, out, at, {**state, **position, "finite": True}, cfg.train.keep_checkpoints, ema)

    log = RunLog(out, enabled=accelerator.is_main_process, resumed_step=step, extra_fields=stage.log_fields)
    bar = tqdm(total=cfg.train.max_steps, initial=step, desc=f"train {cfg.stage}", unit="step",
               disable=not (progress and accelerator.is_main_process))
    state = {"stage": cfg.stage, "config": asdict(cfg), "micro_step": 0}
    batches_per_epoch = len(loader)
    if batches_per_epoch == 0:
        raise VidgenError(f"the manifest gives no batch of {cfg.train.batch_size} clips: lower train.batch_size")
    unreadable = UnreadableClips(cfg.data.manifest or cfg.data.shards)
    started, window_start, window_samples, losses = time.perf_counter(), time.perf_counter(), 0, []
    last_saved = step if resume_from is not None else -1
    stop = StopSignals()
    restore_signals = stop.install()
    try:
        while step < cfg.train.max_steps:
            epoch, into_epoch = divmod(micro, batches_per_epoch)
            loader.set_epoch(epoch)
            dataset.set_epoch(epoch)
            epoch_loader = loader if not into_epoch else (shards.skip_first_batches(into_epoch) if shards is not None
                                                          else accelerator.skip_first_batches(loader, into_epoch))
            finished_pass = True
            for batch in batches_with_signals_held(epoch_loader):
                stop.check()  # between steps: the last one is whole (and saved where it was due)
                micro += 1
                unreadable.note(batch)
                if every_clip_skipped(accelerator, batch):  # on any rank: all ranks skip it together
                    continue
                with accelerator.accumulate(model):
                    loss = stage.loss(model, batch, step_generator(cfg.train.seed, micro, accelerator.process_index))
                    mean_loss = accelerator.gather(loss.detach()[None]).mean().item()
                    if not math.isfinite(mean_loss):
                        good = last_good_checkpoint(out)
                        raise TrainingDiverged(_diverged(cfg, out, good, f"the loss became {mean_loss} at step {step + 1}"))
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.train.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(params, cfg.train.max_grad_norm)
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                losses.append(mean_loss)
                window_samples += len(batch["path"]) * accelerator.num_processes
                if not accelerator.sync_gradients:
                    continue
                step += 1
                if ema is not None:
                    ema.step(params)
                bar.update(1)
                if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                    now = time.perf_counter()
                    row = {"step": step, "loss": float(np.mean(losses)), "lr": schedule.get_last_lr()[0],
                           "samples_per_s": window_samples / max(now - window_start, 1e-9),
                           "skipped_clips": unreadable.total, "elapsed_s": now - started, **stage.log_values()}
                    log.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", samples_s=f"{row['samples_per_s']:.2f}")
                    losses, window_samples, window_start = [], 0, now
                state["micro_step"] = micro
                if shards is not None:
                    shards.mark()
                if step % cfg.train.checkpoint_every == 0:
                    checkpoint(step)
                    last_saved = step
                if (cfg.train.preview_every and step % cfg.train.preview_every == 0 and accelerator.is_main_process
                        and not partitioned(accelerator)):  # a sharded model runs only with every process
                    stage.preview(accelerator.unwrap_model(model), out / "previews" / f"step-{step:08d}", cfg.train.preview_prompts)
                if step >= cfg.train.max_steps:
                    finished_pass = False
                    break
                stop.check()
            if finished_pass and not into_epoch:
                readable = accelerator.gather(torch.tensor([unreadable.readable_this_pass], device=accelerator.device))
                unreadable.end_pass(int(readable.sum()))
            unreadable.readable_this_pass = unreadable.skipped_this_pass = 0
    except KeyboardInterrupt:
        if step > 0 and step != last_saved:
            accelerator.print(f"\ninterrupted: saving a checkpoint at step {step}")
            checkpoint(step)
        accelerator.print(f"resume with: vidgen train {out / 'config.yaml'} (train.resume=auto)")
        raise
    finally:
        restore_signals()
        bar.close()
        log.close()
    if step != last_saved:
        checkpoint(step)
    if cfg.train.write_rank_digests:
        digest = state_digest(accelerator.unwrap_model(model).state_dict())
        (out / f"rank-{accelerator.process_index}.sha256").write_text(digest + "\n", encoding="utf-8")
    return export_model(accelerator, stage, model, params, ema, out / "model", cfg.train.export_ema,
                        rebuild=lambda: build_stage(cfg, torch.device("cpu")))


def _diverged(cfg: RunConfig, out: Path, good: Path | None, what: str) -> str:
    """The message of a diverged run: what happened, and a command that resumes from finite weights."""
    lower = f"train.lr={cfg.train.lr / 10:g}"
    if good is None:
        return (f"{what}, before any checkpoint was written. Start again with a lower rate: "
                f"vidgen train {out / 'config.yaml'} train.resume=never {lower} (or raise train.warmup_steps, or use "
                f"train.mixed_precision=no)")
    return (f"{what}; the last checkpoint with finite weights is {good}. Resume from it with a lower rate: "
            f"vidgen train {out / 'config.yaml'} train.resume={good} {lower} (or raise train.warmup_steps, or use "
            f"train.mixed_precision=no)")
