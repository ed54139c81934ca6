"""The safe-file layer: every file vidgen writes goes through here.

Two rules hold for every command:
- a file appears under its final name complete, or not at all (`atomic_path`, `atomic_dir`);
  the temporaries carry the writer's pid, and one left by a process that was killed (SIGKILL,
  power loss) is removed by the next write into the same folder (`remove_stale_partials`);
- vidgen never deletes or overwrites what it did not write: `check_writable_folder` and
  vidgen.outputs refuse a destination that holds someone else's files, before any work starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import VidgenError

# ".<stem>.<pid>.<random>.partial<suffix>": the name of a temporary that becomes <stem><suffix>
_PARTIAL = re.compile(r"^\..*\.(\d+)\.[^.]+\.partial(\.[^.]*)?$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (this one included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that a writer now gone left in `folder`; returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if match is None or process_alive(int(match.group(1))):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _temporary_name(final: Path) -> tuple[str, str]:
    """(prefix, suffix) of a temporary for `final`; the suffix keeps the final one (writers pick
    the format from it) and the name is hidden (leading dot)."""
    return f".{final.stem}.{os.getpid()}.", f".partial{final.suffix}"


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; move it onto `final` only if the block succeeds.

    On any exception, KeyboardInterrupt included, the temporary file is removed and `final` is
    left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final.parent)
    prefix, suffix = _temporary_name(final)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result gets the usual permissions
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Like `atomic_path` for a folder: fill the yielded folder, and it replaces `final` whole.

    Only for folders vidgen owns whole (a model folder, a checkpoint): the caller checks that an
    existing `final` is one of vidgen's before replacing it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final.parent)
    prefix, suffix = _temporary_name(Path(final.name))
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix.removesuffix(final.suffix), dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private
        if final.exists():
            old = final.with_name(f".{final.name}.{os.getpid()}.old.partial")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def scratch_dir(beside: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder next to `beside` (same file system, so its files move with os.replace),
    removed when the block ends, whatever happens."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(beside.parent)
    prefix, _ = _temporary_name(Path(beside.name))
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".partial", dir=beside.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_json_object(path: str | os.PathLike, unreadable: str = "") -> dict:
    """A JSON file holding an object, or a VidgenError naming the file (`unreadable` prefixes the
    message where it cannot be read, e.g. what the file belongs to)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VidgenError(f"{unreadable}cannot read {path} ({exc})") from None
    if not isinstance(data, dict):
        raise VidgenError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def nearest_existing(path: Path) -> Path:
    """`path` itself or the closest folder above it that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(folder: str | os.PathLike, what: str) -> None:
    """Refuse, before any work, a destination folder that cannot be created or written into."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise VidgenError(f"{what} {folder} is a file, not a folder: give a folder path")
    existing = nearest_existing(folder)
    if not existing.is_dir():
        raise VidgenError(f"{what} {folder}: {existing} is a file, so no folder can be made under it; "
                          f"give another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise VidgenError(f"{what} {folder}: {existing} is not writable; give a folder you can write to")
    try:  # os.access cannot see read-only mounts
        fd, probe = tempfile.mkstemp(prefix=f".vidgen-write-check.{os.getpid()}.", suffix=".partial", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise VidgenError(f"{what} {folder}: cannot write into {existing} ({exc.strerror}); "
                          f"give a folder you can write to") from None
