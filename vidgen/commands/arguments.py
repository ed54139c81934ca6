"""The validation layer of the command line: argparse types that refuse a bad value with one line
naming it and the range it must be in, and a parser whose errors are that one line.

Every number a user types goes through one of these types, so `--steps 0`, `--guidance nan` or a
seed past 64 bits stop at parsing, exit code 2, before anything loads.
"""

from __future__ import annotations

import argparse
import math

SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes seeds below this


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: `vidgen CMD: error: ... (see --help)`."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _typed(name: str, parse):
    parse.__name__ = name  # argparse names the type in its "invalid <name> value" message
    return parse


def integer(low: int | None = None, high: int | None = None, what: str = "integer"):
    """An integer in [low, high] (either end open where None)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return _typed(what, parse)


def number(low: float | None = None, high: float | None = None, low_open: bool = False, what: str = "number"):
    """A finite float in [low, high] ((low, high] with `low_open`); nan and inf are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'above' if low_open else 'at least'} {low:g}, got {value:g}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {value:g}")
        return value

    return _typed(what, parse)


positive_int = integer(low=1, what="positive integer")
seed = integer(low=0, high=SEED_LIMIT - 1, what="seed")
guidance = number(low=0.0, what="guidance scale")
non_negative = number(low=0.0, what="non-negative number")
positive = number(low=0.0, low_open=True, what="positive number")
unit_interval = number(low=0.0, high=1.0, what="number in [0, 1]")


def text_file_lines(path: str, option: str) -> list[str]:
    """The lines of a UTF-8 text file the user named, or a VidgenError saying what is wrong."""
    from pathlib import Path

    from ..errors import VidgenError

    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise VidgenError(f"{option} {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except IsADirectoryError:
        raise VidgenError(f"{option} {path} is a folder: give a text file") from None
    except OSError as exc:
        raise VidgenError(f"cannot read {option} {path}: {exc.strerror}") from None

