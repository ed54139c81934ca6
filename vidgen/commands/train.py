"""`vidgen train`: Train a stage of the cascade on a video corpus."""

from ._planned import add_planned


def add_parser(subparsers):
    return add_planned(subparsers, "train", "Train a stage of the cascade on a video corpus", 4, "the training loop")
