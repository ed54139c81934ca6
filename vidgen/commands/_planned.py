"""Subcommands on the roadmap but not built yet: they say which issue brings them."""

from __future__ import annotations

import argparse

from ..errors import VidgenError


def add_planned(subparsers, name: str, help_text: str, issue: int, what: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=f"{help_text} (not built yet: issue #{issue})",
                                   description=f"{help_text}. Not built yet: {what} arrives with issue #{issue} of the roadmap.")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(args):
        raise VidgenError(f"'vidgen {name}' is not built yet: {what} arrives with issue #{issue} of the roadmap")

    parser.set_defaults(run=run)
    return parser
