"""`vidgen inflate`: Inflate a diffusers text-to-image model into a video model."""

from ._planned import add_planned


def add_parser(subparsers):
    return add_planned(subparsers, "inflate", "Inflate a diffusers text-to-image model into a video model", 3, "inflation of image U-Nets")
