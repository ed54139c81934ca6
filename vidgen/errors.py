"""Exceptions that carry a message meant for the person at the terminal.

The CLI prints these without a traceback; everything else is a bug and keeps its traceback.
"""


class VidgenError(Exception):
    """An error caused by the user's input (a path, a config, a model folder) that says how to fix it."""


class ConfigError(VidgenError):
    """A config file or override names an unknown key or gives a value of the wrong type."""


class VideoReadError(VidgenError):
    """A file could not be opened or decoded as video."""


class ClipTooShortError(VidgenError):
    """A video has fewer frames than a clip needs and the short-clip rule says to skip it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a scheduler's preemption) where a command handles it like Ctrl-C
    (`vidgen train` saves a checkpoint first); the CLI exits 143 for it, 130 for Ctrl-C."""
