"""`vidgen train`: train one stage of the cascade from a YAML config and key=value overrides."""

from __future__ import annotations

import argparse

from ..training.config import STAGES


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train", help="Train a stage of the cascade (vae, image, video, interp, sr, critic) on a video corpus",
        description="Train one stage of the cascade with accelerate: single process here, or many with "
        "`accelerate launch -m vidgen train ...` (see the README). Checkpoints land in train.output_dir/checkpoints and a run "
        "resumes from the newest one (train.resume=auto); the trained model is exported to train.output_dir/model.",
        epilog="Stages: " + ", ".join(STAGES) + ". Examples:\n"
        "  vidgen train configs/tiny/video.yaml data.manifest=corpus/manifest.jsonl train.max_steps=50\n"
        "  ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m vidgen train configs/tiny/video.yaml ...\n"
        "      (two CPU processes, gloo; accelerate's --cpu flag alone starts one process)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config (see configs/); its keys are those of vidgen.training.config.RunConfig")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=1e-4")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training.config import RunConfig
    from ..training.loop import train

    from accelerate import PartialState

    cfg = load_config(RunConfig, args.config, args.overrides)
    folder = train(cfg, progress=not args.no_progress)
    if PartialState().is_main_process:
        print(f"exported the trained {cfg.stage} model to {folder}")
    return 0
