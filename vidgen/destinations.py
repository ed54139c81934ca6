"""Where a clip may be written: vidgen replaces its own outputs and nothing else.

A clip vidgen wrote is recognised by its sidecar (`clip.mp4` -> `clip.mp4.json`, a PNG folder
`clip/` -> `clip.json`) naming it and a vidgen version. Anything else at the destination is the
user's: the command is refused (another path, or `--overwrite`), and even with `--overwrite`
only the clip file, its own `NNNNN.png` frames and the sidecar are touched, never a folder's
other files. The checks run before the model loads, so a refusal costs nothing.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

from .errors import VidgenError
from .fs import check_writable_folder

FORMATS = ("mp4", "gif", "png")
FRAME_NAME = re.compile(r"^\d{5}\.png$")  # the frames of a PNG-folder clip: 00000.png, 00001.png, ...
_PARTIAL = re.compile(r"^\..*\.partial")


def frame_name(index: int) -> str:
    return f"{index:05d}.png"


def format_of(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format a clip is written in: `fmt`, else the name's suffix (none or .png: PNG frames)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise VidgenError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("mp4", "gif"):
        return suffix
    if suffix in ("", "png"):
        return "png"
    raise VidgenError(f"cannot tell the format of {path}: use a .mp4 or .gif name, a folder name for PNG frames, "
                      f"or --format")


def sidecar_path(path: str | os.PathLike) -> Path:
    """`clip.mp4` -> `clip.mp4.json`; a PNG folder `clip/` -> `clip.json` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """The sidecar of a clip vidgen wrote at `path`, or None where there is none of vidgen's."""
    side = sidecar_path(path)
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("file") != Path(path).name or "format" not in record:
        return None
    return record


def _own_frames_only(folder: Path) -> bool:
    return all(FRAME_NAME.match(entry.name) or _PARTIAL.match(entry.name) for entry in os.scandir(folder))


def check_clip_destination(path: str | os.PathLike, fmt: str | None = None, overwrite: bool = False) -> str:
    """Refuse a destination that would lose the user's files or cannot be written; returns the format.

    Allowed: a new path; a clip (and sidecar) vidgen wrote before; an empty folder for PNG frames;
    anything with `overwrite`, where the writer still touches only its own file names.
    """
    path = Path(path)
    if path.name in ("", ".", "..") or str(path).endswith(os.sep):
        raise VidgenError(f"-o {path}: name the clip to write, e.g. -o clip.mp4, or a new folder for PNG frames "
                          f"(-o {path / 'clip'})")
    fmt = format_of(path, fmt)
    side = sidecar_path(path)
    if side.is_dir():
        raise VidgenError(f"{side} is a folder, and vidgen writes the clip's settings there: choose another -o")
    ours = read_sidecar(path) is not None
    if fmt == "png":
        if path.exists() and not path.is_dir():
            raise VidgenError(f"{path} is a file, and PNG frames go into a folder: choose another -o, or a .mp4/.gif "
                              f"name")
        user_files = path.is_dir() and any(True for _ in os.scandir(path)) and not (ours and _own_frames_only(path))
        if user_files and not overwrite:
            raise VidgenError(f"{path} is a folder holding files vidgen did not write: choose another -o, or add "
                              f"--overwrite (vidgen then replaces only its NNNNN.png frames and {side.name})")
    else:
        if path.is_dir():
            raise VidgenError(f"{path} is a folder: name a .{fmt} file to write, e.g. -o {path / ('clip.' + fmt)}")
        if path.exists() and not ours and not overwrite:
            raise VidgenError(f"{path} exists and was not written by vidgen (it has no vidgen sidecar "
                              f"{side.name}): choose another -o, or add --overwrite to replace it")
    if side.exists() and not ours and not overwrite:
        raise VidgenError(f"{side} exists and is not the sidecar of a vidgen clip named {path.name}: choose another "
                          f"-o, or add --overwrite to replace it")
    check_writable_folder(path.parent, "the output folder")
    if path.is_dir():
        check_writable_folder(path, "the frames folder")
    return fmt


def check_clips_folder(folder: str | os.PathLike, overwrite: bool = False) -> None:
    """A folder that will receive many clips (eval's --save-clips): new, empty, or holding only
    vidgen clips and their sidecars, unless `overwrite`."""
    folder = Path(folder)
    check_writable_folder(folder, "the clips folder")
    if overwrite or not folder.is_dir():
        return
    names = {entry.name for entry in os.scandir(folder)}
    for name in sorted(names):
        if _PARTIAL.match(name):
            continue
        clip = name.removesuffix(".json") if name.endswith(".json") else name
        if read_sidecar(folder / clip) is None:
            raise VidgenError(f"{folder} holds files vidgen did not write (e.g. {name}): choose another folder, or "
                              f"add --overwrite (vidgen then replaces only the clips of the same names)")


def check_file_destination(path: str | os.PathLike, kind: str, example: str, ours: Callable[[Path], bool],
                           overwrite: bool = False) -> None:
    """A single output file (a report, a manifest) may replace an earlier one of vidgen's, which
    `ours(path)` recognises, and another file only with `overwrite`."""
    path = Path(path)
    if path.is_dir():
        raise VidgenError(f"-o {path} is a folder: name the {kind} file to write, e.g. -o {path / example}")
    if path.exists() and not overwrite:
        try:
            mine = ours(path)
        except (OSError, UnicodeDecodeError, ValueError, TypeError):  # unreadable, not JSON, not a mapping
            mine = False
        if not mine:
            raise VidgenError(f"{path} exists and is not a {kind}: choose another -o, or add --overwrite")
    check_writable_folder(path.parent, f"the {kind}'s folder")
