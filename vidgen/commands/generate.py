"""`vidgen generate`: Generate a clip from a text prompt."""

from ._planned import add_planned


def add_parser(subparsers):
    return add_planned(subparsers, "generate", "Generate a clip from a text prompt", 3, "text-to-video generation")
