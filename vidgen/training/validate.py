"""Checks of a training run's config and output folder, all made before anything is created.

`check_run` refuses, with the key and the fix, every value a run could not use (a negative lr, a
probability outside [0, 1], an output_dir that is a file or holds someone else's files), so a
refused run leaves nothing behind. What can only be judged by loading (a model folder, the
manifest's clips) is judged in the stages, and `train` removes a folder it created for a run that
was refused there.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..diffusion.losses import LOSS_WEIGHTINGS, PREDICTION_TYPES
from ..errors import VidgenError
from ..fs import check_writable_folder
from .config import STAGES, VIDEO_STAGE_LAYERS, RunConfig

# What a vidgen run writes into train.output_dir; a folder holding anything else is not a run's.
RUN_FILES = frozenset({"config.yaml", "checkpoints", "model", "log.csv", "run.lock", "previews", "tensorboard"})


def _finite(key: str, value: float, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> None:
    bad = not math.isfinite(value)
    bad = bad or (low is not None and (value <= low if low_open else value < low))
    bad = bad or (high is not None and (value >= high if high_open else value > high))
    if bad:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        where = f"in {lo}, {hi}" if low is not None and high is not None else (
            f"{'above' if low_open else 'at least'} {low:g}" if low is not None else f"at most {high:g}")
        raise VidgenError(f"{key} must be a finite number {where}, got {value}")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise VidgenError(f"{key} must be at least {low}, got {value}")


def check_train_keys(cfg: RunConfig) -> None:
    t, d = cfg.train, cfg.data
    _finite("train.lr", t.lr, 0.0, 1000.0, low_open=True)
    _finite("train.weight_decay", t.weight_decay, 0.0)
    _finite("train.max_grad_norm", t.max_grad_norm, 0.0)
    _finite("train.ema_decay", t.ema_decay, 0.0, 1.0, high_open=True)
    for key in ("max_steps", "batch_size", "grad_accum", "checkpoint_every", "log_every", "keep_checkpoints",
                "preview_steps"):
        _at_least(f"train.{key}", getattr(t, key), 1)
    for key in ("warmup_steps", "preview_every"):
        _at_least(f"train.{key}", getattr(t, key), 0)
    if t.mixed_precision not in ("no", "fp16", "bf16"):
        raise VidgenError(f"train.mixed_precision must be 'no', 'fp16' or 'bf16', got {t.mixed_precision!r}")
    if t.resume not in ("auto", "never") and not Path(t.resume).is_dir():
        raise VidgenError(f"train.resume={t.resume}: no such checkpoint folder; use 'auto', 'never' or a folder "
                          f"under {Path(t.output_dir) / 'checkpoints'}")
    for key in ("num_frames", "size", "stride", "captioned_repeat"):
        _at_least(f"data.{key}", getattr(d, key), 1)
    _at_least("data.num_workers", d.num_workers, 0)
    for key in ("caption_dropout", "withhold_captions"):
        _finite(f"data.{key}", getattr(d, key), 0.0, 1.0)
    if d.short_clip not in ("loop", "skip"):
        raise VidgenError(f"data.short_clip must be 'loop' or 'skip', got {d.short_clip!r}")
    if d.fps_range and not (len(d.fps_range) == 2 and all(math.isfinite(v) for v in d.fps_range)
                            and 0 < d.fps_range[0] <= d.fps_range[1]):
        raise VidgenError(f"data.fps_range must be [low, high] with 0 < low <= high, or [] to sample every stride-th "
                          f"frame; got {list(d.fps_range)}")


def check_model_keys(cfg: RunConfig) -> None:
    m = cfg.model
    if cfg.stage not in STAGES:
        raise VidgenError(f"stage must be one of {', '.join(STAGES)}, got {cfg.stage!r}")
    if m.prediction_type not in PREDICTION_TYPES:
        raise VidgenError(f"model.prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {m.prediction_type!r}")
    if cfg.data.posterior not in ("sample", "mean"):
        raise VidgenError(f"data.posterior must be sample or mean, got {cfg.data.posterior!r}")
    if m.loss_weighting not in LOSS_WEIGHTINGS:
        raise VidgenError(f"model.loss_weighting must be one of {', '.join(LOSS_WEIGHTINGS)}, got {m.loss_weighting!r}")
    if not 0.0 <= m.frame_noise_correlation < 1.0:
        raise VidgenError(f"model.frame_noise_correlation must be in [0, 1), got {m.frame_noise_correlation}")
    if m.flow_noise and (cfg.stage != "video" or m.frame_noise_correlation == 0):
        raise VidgenError(f"model.flow_noise moves the shared part of the video stage's noise: set "
                          f"model.frame_noise_correlation above 0 (its share), in a video stage config (stage "
                          f"{cfg.stage}, correlation {m.frame_noise_correlation:g})")
    for key in VIDEO_STAGE_LAYERS:
        if getattr(m, key) and cfg.stage != "video":
            raise VidgenError(f"model.{key} is added by the video stage, not the {cfg.stage} stage (interp and sr keep "
                              f"the one their model.pretrained has): remove it, or set it in the video stage's config")
    _at_least("model.lora_rank", m.lora_rank, 0)
    if m.lora_rank and cfg.stage != "video":
        raise VidgenError(f"model.lora_rank trains a LoRA on the video stage's temporal layers, not the {cfg.stage} "
                          f"stage: remove it")
    if m.lora_rank and not m.freeze_spatial:
        raise VidgenError("model.lora_rank trains the adapter alone, and model.freeze_spatial=false asks to train the "
                          "image U-Net too: drop one of them")
    if m.lora_rank and (m.image_conditioning or any(getattr(m, key) for key in VIDEO_STAGE_LAYERS)):
        raise VidgenError("model.lora_rank trains an adapter on the existing temporal layers, and "
                          "model.image_conditioning / model.text_embedding add new layers that would stay untrained: "
                          "train those first without model.lora_rank")
    if m.image_conditioning and cfg.stage not in ("video", "reward"):
        raise VidgenError(f"model.image_conditioning gives the video stage its anchor frame, not the {cfg.stage} stage "
                          f"(interp and sr keep the base stage their model.pretrained has): remove it")
    _at_least("model.reward_steps", m.reward_steps, 1)
    _at_least("model.reward_sampling_steps", m.reward_sampling_steps, 0)
    if not m.reward_weight > 0 or not m.reward_cap > 0:
        raise VidgenError(f"model.reward_weight (the reward's weight) and model.reward_cap (the critic's margin that "
                          f"counts) must be > 0, got {m.reward_weight} and {m.reward_cap}")
    if cfg.data.time_reverse and cfg.stage in ("vae", "image"):
        raise VidgenError(f"data.time_reverse plays clips backwards, and the {cfg.stage} stage trains on single frames: "
                          f"leave it empty here")
    if m.critic_swap_slots and cfg.stage != "critic":
        raise VidgenError(f"model.critic_swap_slots sets what the critic stage's critic learns, not the {cfg.stage} "
                          f"stage: remove it")
    if m.critic and cfg.stage != "critic":
        raise VidgenError(f"model.critic shapes the arrow critic that the critic stage trains, not the {cfg.stage} "
                          f"stage: remove it")
    if not 0.0 <= m.anchor_position <= 1.0:
        raise VidgenError(f"model.anchor_position is a place in the clip, from 0 (first frame) to 1 (last), "
                          f"got {m.anchor_position}")
    if m.loss_weighting != "uniform" and m.prediction_type != "epsilon":
        raise VidgenError(f"model.loss_weighting={m.loss_weighting} reweighs the epsilon objective; with "
                          f"model.prediction_type={m.prediction_type} use uniform")


def check_corpus_keys(cfg: RunConfig) -> None:
    """Exactly one corpus: a manifest, or shards (and what only a manifest can give is not asked of shards)."""
    d = cfg.data
    if cfg.stage == "reflow" or d.pairs:
        if cfg.stage != "reflow" or d.manifest or d.shards or not Path(d.pairs or ".").is_dir() or not d.pairs:
            raise VidgenError(f"data.pairs={d.pairs!r}: the reflow stage, and only it, trains on a folder of pairs "
                              f"from `vidgen data pairs` (and no manifest or shards); give an existing folder")
        return
    if bool(d.manifest) == bool(d.shards):
        given = "both are set" if d.manifest else "neither is set"
        raise VidgenError(f"give exactly one of data.manifest and data.shards ({given}): e.g. "
                          f"data.manifest=corpus/manifest.jsonl, or data.shards=corpus/{{00000..00127}}.tar")
    _at_least("data.shuffle_buffer", d.shuffle_buffer, 0)
    if not d.shards:
        if d.clip_log:
            raise VidgenError("data.clip_log records the clips a run streams from data.shards; a manifest run's clips "
                              "are its manifest's: leave it false")
        from ..data.manifest import read_manifest

        if os.path.isfile(d.manifest):  # (a missing one is refused by check_run, naming the key)
            read_manifest(d.manifest)  # a table without a video column, an empty path cell, ...: before weights load
        return
    from ..data.shards import expand_shards

    readers = int(os.environ.get("WORLD_SIZE", "1")) * max(1, d.num_workers)  # the launcher's process count
    count = len(expand_shards(d.shards))
    if count < readers:
        raise VidgenError(f"data.shards names {count} shards, fewer than the {readers} readers "
                          f"(processes x max(1, data.num_workers)): no two readers share a shard, so write more, smaller "
                          f"shards (`vidgen data shard --per-shard`) or lower data.num_workers")
    if d.latent_cache:
        raise VidgenError("data.latent_cache does not go with data.shards: a latent cache is built from a manifest "
                          "(`vidgen data cache MANIFEST`); train on the manifest with data.latent_cache, or leave it empty")
    if d.captioned_repeat != 1:
        raise VidgenError(f"data.captioned_repeat={d.captioned_repeat} does not go with data.shards (a stream lists "
                          f"each clip once): leave it at 1, or train on a manifest")
    if cfg.stage == "critic":
        raise VidgenError("the critic stage picks its captioned clips from a manifest: give data.manifest, not data.shards")


def check_output_dir(folder: Path) -> None:
    """An output folder must be new, empty, or a vidgen run's (to resume or extend it)."""
    check_writable_folder(folder, "train.output_dir")
    if folder.is_dir():
        foreign = sorted(name for name in os.listdir(folder) if name not in RUN_FILES and not name.startswith("rank-")
                         and not name.startswith("."))
        if foreign and not (folder / "config.yaml").is_file():
            raise VidgenError(f"train.output_dir={folder} holds files that are not a vidgen run's (e.g. {foreign[0]}): "
                              f"give a new or empty folder")


def check_run(cfg: RunConfig) -> None:
    """Everything about a run that can be judged without loading a model or reading a video."""
    check_model_keys(cfg)
    check_train_keys(cfg)
    check_corpus_keys(cfg)
    if cfg.data.manifest and not Path(cfg.data.manifest).is_file():
        raise VidgenError(f"data.manifest={cfg.data.manifest} does not exist: make one with `vidgen data index DIR -o "
                          f"{cfg.data.manifest}` or `vidgen data shapes --out DIR`")
    check_output_dir(Path(cfg.train.output_dir))
