"""`vidgen eval`: Judge a model on the shapes world."""

from ._planned import add_planned


def add_parser(subparsers):
    return add_planned(subparsers, "eval", "Judge a model on the shapes world", 5, "evaluation against the shapes judge")
