"""The `vidgen` console script: one subcommand per job, each defined in vidgen/commands/."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import __version__
from .commands import (data, eval as eval_cmd, export, extend, generate, inflate, interpolate, serve, train,
                       upscale)
from .commands.arguments import Parser
from .errors import Terminated, VidgenError

# Order is the order `vidgen --help` lists them in.
COMMANDS = (generate, extend, interpolate, upscale, train, inflate, export, data, eval_cmd, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vidgen",
        description="Text-to-video generation after Make-A-Video: an image U-Net inflated with temporal "
        "layers, trained on unlabeled video, with frame interpolation and super-resolution stages.",
    )
    parser.add_argument("--version", action="version", version=f"vidgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2): returned, for callers in-process
        return int(exc.code or 0)
    try:
        return int(args.run(args) or 0)
    except VidgenError as exc:
        print(f"vidgen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"vidgen {args.command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"vidgen {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
