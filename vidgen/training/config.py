"""The training config: `stage`, then `data`, `model` and `train` sections.

    vidgen train configs/shapes/video.yaml train.max_steps=2000 data.manifest=corpus/manifest.jsonl

Every key is typed; an unknown key or a wrong type is refused with its name (vidgen.config).
docs/configuration.md documents every key; the README the ones users change most.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STAGES = ("vae", "image", "video", "interp", "sr", "critic", "preference", "distill", "reflow", "reward")
# ModelConfig switches for layers the video stage adds to the video U-Net: each is the
# InflationOptions field of the same name (vidgen.models.inflate, where it is described); the
# interp and sr stages inherit it from their model.pretrained.
VIDEO_STAGE_LAYERS = ("text_embedding",)


@dataclass
class DataConfig:
    manifest: str = ""  # JSON-lines manifest from `vidgen data index` or `vidgen data shapes`, or a CSV/parquet table
    # WebDataset shards instead of a manifest (exactly one of the two): a brace pattern of local tar
    # files, e.g. "corpus/{00000..00127}.tar" (vidgen.data.shards; docs/data-at-scale.md).
    shards: str = ""
    # shards: samples each reader shuffles among, held as their encoded bytes (0 or 1: each shard in order)
    shuffle_buffer: int = 32
    clip_log: bool = False  # shards: each rank appends "epoch<TAB>clip" per clip trained on to rank-{i}-clips.txt
    num_frames: int = 16  # frames per training clip (the image and vae stages take single frames)
    size: int = 64  # frame side in pixels after resize + centre crop
    # Clip frame rate drawn uniformly from [low, high] per clip and given to the model
    # (Make-A-Video section 3.2); an empty list samples every `stride`-th frame instead.
    fps_range: list[float] = field(default_factory=lambda: [8.0, 24.0])
    stride: int = 1
    short_clip: str = "loop"  # videos shorter than a clip: "loop" or "skip"
    num_workers: int = 2
    # Fraction of captioned clips whose caption is withheld for the whole run, so they train as
    # unlabeled video (null conditioning): 1.0 is Make-A-Video's fully unlabeled setting.
    withhold_captions: float = 0.0
    # Times each clip that keeps its caption is listed per epoch: labeled video then weighs more in
    # a batch (word-motion binding learns from it alone) without more captions being revealed.
    captioned_repeat: int = 1
    # Caption words that name a motion, each mapped to its opposite (e.g. {left: right, right: left,
    # up: down, down: up}): a clip whose caption names one is played backwards half of the time,
    # those words swapped (vidgen.data.dataset.TimeReversal), for corpora whose motions are
    # reversible. Empty: off.
    time_reverse: dict[str, str] = field(default_factory=dict)
    # How a clip's latents come from the VAE posterior: "sample" (a draw, what encoding gives) or
    # "mean" (its mean: the posterior noise, which the decoder discards, is left out of the
    # diffusion target; see vidgen.training.stages.DiffusionStage.posterior_latents).
    posterior: str = "sample"
    caption_dropout: float = 0.1  # per-sample chance of the null prompt, for classifier-free guidance
    # Folder of cached VAE latents (vidgen.data.latent_cache) for the diffusion stages (sr keeps
    # two in it, one per size): built on first use, rebuilt when the VAE or size changes. ""
    # encodes every step.
    latent_cache: str = ""
    # reflow: the folder of (noise, sample) pairs written by `vidgen data pairs` (vidgen.training.reflow_pairs)
    pairs: str = ""


@dataclass
class ModelConfig:
    # Folder to start from: a vidgen video model (video, interp, sr stages), a diffusers
    # text-to-image folder or image U-Net (image stage fine-tuning), an AutoencoderKL (vae stage).
    pretrained: str = ""
    vae: str = ""  # AutoencoderKL folder for the image stage from scratch
    text_encoder: str = "minilm"  # a transformers encoder folder, or "minilm" (the packaged all-MiniLM-L6-v2)
    unet: dict[str, Any] = field(default_factory=dict)  # UNet2DConditionModel arguments (image stage from scratch)
    autoencoder: dict[str, Any] = field(default_factory=dict)  # AutoencoderKL arguments (vae stage from scratch)
    text_max_length: int = 0  # image stage: tokens per prompt (0: the text encoder's own limit)
    max_frames: int = 64  # frame position table of the temporal attention (inflation)
    freeze_spatial: bool = True  # video/interp/sr: train only the temporal and new layers
    # video: train a LoRA of this rank on the temporal attention's projections instead of the
    # temporal layers themselves (everything else frozen); the export is the adapter alone,
    # model/lora.safetensors, which `vidgen generate --lora` loads onto model.pretrained. 0: off.
    lora_rank: int = 0
    prediction_type: str = "epsilon"  # or "v_prediction"
    # How timesteps weigh in the loss: "uniform", or "v" (epsilon errors weighted as the v
    # objective weighs them; see vidgen.diffusion.losses.timestep_weights).
    loss_weighting: str = "uniform"
    # video/interp: share of the training noise common to a clip's frames (PYoCo's mixed noise
    # prior, vidgen.diffusion.noise); recorded in the exported model, which samples with it.
    frame_noise_correlation: float = 0.0
    # video: that shared part moves with each clip's own content (its displacement measured on the
    # clip's latents; Go-with-the-Flow's warped noise, vidgen.diffusion.flow_noise), so the base
    # stage learns to move what it draws with the noise; needs frame_noise_correlation > 0.
    flow_noise: bool = False
    # video: add InflationOptions.text_embedding (the prompt pooled into the time embedding) if the
    # model.pretrained U-Net has none (VIDEO_STAGE_LAYERS).
    text_embedding: bool = False
    # video: the base stage makes each clip around an anchor frame that a text-to-image U-Net draws
    # first (explicit image conditioning, vidgen.models.cascade.anchored_unet); the anchor sits at
    # anchor_position of the clip (0 first frame, 1 last).
    image_conditioning: bool = False
    anchor_position: float = 0.5
    # critic: CriticConfig arguments of a new arrow critic (vidgen.models.critic), e.g. {embed_dim: 64};
    # empty: the defaults.
    critic: dict[str, Any] = field(default_factory=dict)
    # critic: manifest slots (e.g. [direction]) whose words the critic also learns to tell apart: each
    # captioned clip is scored under its caption with that slot's word swapped for every other value
    # the corpus has (vidgen.models.critic.swap_loss), at this weight beside the arrow loss.
    critic_swap_slots: list[str] = field(default_factory=list)
    critic_swap_weight: float = 1.0
    # preference: Diffusion-DPO on (clip, clip played backwards) pairs (vidgen.training.preference)
    preference_beta: float = 5000.0  # DPO strength (beta, with T*omega(lambda_t) folded in)
    preference_sft: float = 0.0  # weight of the plain denoising loss beside it (0: DPO alone)
    preference_min_timestep: int = 0  # pairs are noised to timesteps in [this, 1000)
    # distill: progressive step distillation of the base stage, guidance folded in (vidgen.training.distill)
    distill_steps: int = 0  # the student's DDIM steps (the teacher takes twice as many)
    distill_guidance: float = 0.0  # the teacher's guidance scale (0: the model's default; 1: none)
    # reflow: the base stage retrained on its own judged (noise, sample) pairs (vidgen.training.stages.reflow)
    reflow_steps: int = 4  # the exported model's DDIM steps (guidance 1: folded into the weights)
    # reward: the critic's reading of the base stage's own clips, backpropagated (vidgen.training.stages.reward)
    reward_weight: float = 0.05  # the reward against the denoising loss (weight 1)
    reward_steps: int = 2  # the gradient enters through one of the first this-many sampling steps
    reward_sampling_steps: int = 7  # DDIM steps of the reward's samples (0: the starting model's)
    reward_cap: float = 10.0  # the critic's margin counts up to this (no more is asked of a clip)
    kl_weight: float = 1e-6  # vae stage: weight of the KL term
    interp_factor: int = 4  # interp stage: largest frame skip between known frames
    sr_scale: int = 2  # sr stage: low-resolution side = data.size / sr_scale
    sr_max_noise_level: int = 250  # sr stage: noise augmentation of the low-resolution latents, in timesteps


@dataclass
class TrainConfig:
    output_dir: str = "runs/run"
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 4  # clips per process per micro-step
    grad_accum: int = 1
    lr: float = 1e-4
    # Parameter-name prefix -> lr multiplier, e.g. {text_embedding: 10}: layers added at zero on a
    # trained network learn faster than the rest (vidgen.training.loop.parameter_groups).
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # "no", "fp16" or "bf16" (bf16/fp16 need a device that has them)
    gradient_checkpointing: bool = False
    ema_decay: float = 0.999  # 0 turns the EMA off
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    resume: str = "auto"  # "auto" (newest checkpoint in output_dir, if any), "never", or a checkpoint folder
    seed: int = 0
    log_every: int = 10
    preview_every: int = 0  # 0: no previews
    preview_prompts: list[str] = field(default_factory=lambda: ["a red circle moving left"])
    preview_steps: int = 20  # sampling steps of a preview
    export_ema: bool = True  # export the EMA weights (when the EMA is on)
    # Tests of data-parallel training: each process writes output_dir/rank-{i}.sha256, the digest of its
    # trained weights (vidgen.training.loop.state_digest), so the ranks can be compared.
    write_rank_digests: bool = False


@dataclass
class RunConfig:
    stage: str = "video"  # one of STAGES
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
