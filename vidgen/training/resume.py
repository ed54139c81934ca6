"""Resuming under changed settings: apply what can change mid-run, refuse the rest by name.

A checkpoint restores the optimizer's and the schedule's saved learning rates; left alone, a
resume with another `train.lr` would train at the old rate while config.yaml records the new one.
`apply_changed_settings` puts this run's lr, warm-up, weight decay and EMA decay in place after
the state is loaded, so what config.yaml records is what runs. Keys that define what the saved
state means (the stage, the model, the data and its order, the batch) are refused by
`check_resumable`, naming the key and both values.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..errors import VidgenError
from .config import RunConfig

# Keys a resumed run may change; everything else must match the checkpoint's run.
CHANGEABLE = frozenset({
    "train.lr", "train.warmup_steps", "train.weight_decay", "train.max_grad_norm", "train.max_steps",
    "train.checkpoint_every", "train.keep_checkpoints", "train.log_every", "train.preview_every",
    "train.preview_prompts", "train.preview_steps", "train.export_ema", "train.resume", "train.output_dir",
    "train.mixed_precision", "train.gradient_checkpointing", "train.write_rank_digests", "train.ema_decay",
    "data.num_workers", "data.latent_cache", "data.clip_log",
})


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in ("train.lr_multipliers", "data.time_reverse", "model.unet",
                                                    "model.autoencoder", "model.critic"):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = value
    return flat


def check_resumable(cfg: RunConfig, saved: dict, folder: Path) -> None:
    """Refuse to resume `folder` under a setting that would make its saved state mean something else."""
    before, now = _flat(saved.get("config", {})), _flat(asdict(cfg))
    for key in sorted(now):
        if key in CHANGEABLE or key not in before or before[key] == now[key]:
            continue
        raise VidgenError(f"{folder} was written with {key}={before[key]}, this run asks for {key}={now[key]}: a "
                          f"resumed run cannot change it. Resume with the same value, or start afresh (another "
                          f"train.output_dir, or train.resume=never)")
    if bool(before.get("train.ema_decay")) != bool(cfg.train.ema_decay):
        raise VidgenError(f"{folder} was written with train.ema_decay={before.get('train.ema_decay')}, this run asks "
                          f"for {cfg.train.ema_decay}: the EMA cannot be turned on or off on resume (its decay can "
                          f"change); resume with the EMA as it was, or start afresh")


def apply_changed_settings(cfg: RunConfig, saved: dict, optimizer, schedule, ema) -> list[str]:
    """Put this run's lr, warm-up, weight decay and EMA decay in place of the restored ones; returns
    what changed, for the log. `schedule` is accelerate's wrapper of a LambdaLR."""
    before = saved.get("config", {}).get("train", {})
    t = cfg.train
    changed = [f"train.{key}: {before[key]} -> {getattr(t, key)}" for key in ("lr", "warmup_steps", "weight_decay",
                                                                            "ema_decay")
               if key in before and before[key] != getattr(t, key)]
    ratio = t.lr / before.get("lr", t.lr)
    inner = getattr(schedule, "scheduler", schedule)  # the LambdaLR; its lambdas are rebuilt from this config
    for group in optimizer.param_groups:
        group["initial_lr"] = group.get("initial_lr", group["lr"]) * ratio  # lr x the group's multiplier
        group["weight_decay"] = t.weight_decay
    inner.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
    factors = [rate(inner.last_epoch) for rate in inner.lr_lambdas]
    for group, base, factor in zip(optimizer.param_groups, inner.base_lrs, factors):
        group["lr"] = base * factor
    inner._last_lr = [group["lr"] for group in optimizer.param_groups]
    if ema is not None:
        ema.decay = t.ema_decay
    return changed
