"""Reading video files: decord first, PyAV where decord cannot open or decode a file.

decord seeks fast and decodes only the frames asked for, but it cannot open some containers
(Ogg/Theora: no frame count in the header) and some AVI codecs. PyAV (FFmpeg) opens almost
anything and decodes sequentially. Frames come back as uint8 arrays of shape (f, h, w, 3), RGB.

A video is a file path or an `EncodedVideo`: the bytes of a file held in memory (a member of a
WebDataset shard, vidgen.data.shards), which both backends read from a BytesIO.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import VideoReadError

BACKENDS = ("auto", "decord", "pyav")


@dataclass(frozen=True)
class VideoInfo:
    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    backend: str  # the backend that read it

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0



@dataclass(frozen=True)
class EncodedVideo:
    """A video file's bytes in memory; `name` stands for it in messages (e.g. "shard.tar:key.mp4")."""

    name: str
    data: bytes = field(repr=False)

    def __str__(self) -> str:
        return self.name


def _opened(source) -> "str | io.BytesIO":
    """What a backend opens: the path, or a fresh BytesIO over the bytes (each open reads from the start)."""
    return io.BytesIO(source.data) if isinstance(source, EncodedVideo) else source


# --- decord ---------------------------------------------------------------------------------

def _decord_reader(path):
    try:
        import decord
        import decord.logging
    except ImportError as exc:  # not installable on every platform: PyAV does the work then
        raise VideoReadError(f"decord is not installed ({exc})") from None
    decord.logging.set_level(decord.logging.QUIET)  # failures come back as exceptions; FFmpeg's chatter is noise
    try:
        with _native_stderr_silenced():  # its C++ logger prints "ERROR opening ..." past the level set above
            return decord.VideoReader(_opened(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as exc:  # decord raises its own DECORDError / RuntimeError
        raise VideoReadError(f"decord cannot open {path}: {_short(exc)}") from None


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null while native code runs: the reason of a failure comes
    back in the exception, and vidgen reports it once, in its own words."""
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no real stderr (an embedding host): nothing to silence
            yield
            return
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _decord_probe(path) -> VideoInfo:
    vr = _decord_reader(path)
    n = len(vr)
    if n <= 0:
        raise VideoReadError(f"decord found no frames in {path}")
    h, w = vr[0].shape[:2]
    return VideoInfo(str(path), n, float(vr.get_avg_fps()), int(w), int(h), "decord")


def _decord_read(path, indices: Sequence[int] | None) -> np.ndarray:
    vr = _decord_reader(path)
    if indices is None:
        indices = range(len(vr))
    try:
        return vr.get_batch(list(indices)).asnumpy()
    except Exception as exc:
        raise VideoReadError(f"decord cannot decode {path}: {_short(exc)}") from None


# --- PyAV -----------------------------------------------------------------------------------

def _pyav_open(path):
    import av

    try:
        container = av.open(_opened(path))
    except Exception as exc:  # av.error.InvalidDataError, FileNotFoundError, ...
        raise VideoReadError(f"PyAV cannot open {path}: {_short(exc)}") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path} has no video stream")
    return container


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(Fraction(rate)) if rate else 0.0


def _pyav_probe(path) -> VideoInfo:
    container = _pyav_open(path)
    try:
        stream = container.streams.video[0]
        n = int(stream.frames or 0)
        if n <= 0:
            # Ogg and some AVIs carry no frame count: count the packets. A packet with a timestamp
            # is a frame even when empty (Theora codes a repeated frame as 0 bytes); the demuxer's
            # final flush packet has neither.
            n = sum(1 for packet in container.demux(stream) if packet.pts is not None or packet.size > 0)
        fps = _stream_fps(stream)
        w, h = stream.codec_context.width, stream.codec_context.height
    except VideoReadError:
        raise
    except Exception as exc:
        raise VideoReadError(f"PyAV cannot read {path}: {_short(exc)}") from None
    finally:
        container.close()
    if n <= 0 or w <= 0 or h <= 0:
        raise VideoReadError(f"PyAV found no decodable frames in {path}")
    return VideoInfo(str(path), n, fps, int(w), int(h), "pyav")


def _pyav_decoded_frames(container):
    """Every frame of the first video stream in presentation order, as av.VideoFrame.

    Theora codes a repeated frame as an empty packet that FFmpeg's decoder refuses; it stands
    for the previous frame again. The demuxer's last, empty, untimed packet flushes the decoder.
    """
    stream = container.streams.video[0]
    previous = None
    for packet in container.demux(stream):
        if packet.size == 0 and packet.pts is not None:
            if previous is not None:
                yield previous
            continue
        for frame in packet.decode():
            previous = frame
            yield frame


def _pyav_read(path, indices: Sequence[int] | None) -> np.ndarray:
    container = _pyav_open(path)
    wanted = None if indices is None else set(int(i) for i in indices)
    last = None if wanted is None else max(wanted)
    frames: dict[int, np.ndarray] = {}
    try:
        for i, frame in enumerate(_pyav_decoded_frames(container)):
            if wanted is None or i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
            if last is not None and i >= last:
                break
    except Exception as exc:
        raise VideoReadError(f"PyAV cannot decode {path}: {_short(exc)}") from None
    finally:
        container.close()
    if indices is None:
        if not frames:
            raise VideoReadError(f"PyAV decoded no frames from {path}")
        return np.stack([frames[i] for i in sorted(frames)])
    missing = [i for i in indices if i not in frames]
    if missing:
        raise VideoReadError(f"{path}: frame {missing[0]} could not be decoded (truncated file?)")
    return np.stack([frames[int(i)] for i in indices])


# --- public API -----------------------------------------------------------------------------

def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _check_file(path) -> None:
    if isinstance(path, EncodedVideo):
        if not path.data:
            raise VideoReadError(f"{path} is empty (0 bytes)")
        return
    if not os.path.exists(path):
        raise VideoReadError(f"{path} does not exist")
    if os.path.isdir(path):
        raise VideoReadError(f"{path} is a folder, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path} is empty (0 bytes)")


def _source(path) -> "str | EncodedVideo":
    return path if isinstance(path, EncodedVideo) else str(path)


def probe_video(path: str | os.PathLike | EncodedVideo, backend: str = "auto") -> VideoInfo:
    """Frame count, fps and size of a video, without decoding more than needed."""
    _check_backend(backend)
    path = _source(path)
    _check_file(path)
    if backend == "pyav":
        return _pyav_probe(path)
    try:
        return _decord_probe(path)
    except VideoReadError as first:
        if backend == "decord":
            raise
        try:
            return _pyav_probe(path)
        except VideoReadError as second:
            raise VideoReadError(f"{second}; decord could not either") from None


def read_frames(path: str | os.PathLike | EncodedVideo, indices: Sequence[int] | None = None,
                backend: str = "auto") -> np.ndarray:
    """Decode the frames at `indices` (all frames if None) as uint8 RGB, shape (f, h, w, 3)."""
    _check_backend(backend)
    path = _source(path)
    _check_file(path)
    if indices is not None and len(indices) == 0:
        raise ValueError("indices is empty: ask for at least one frame")
    if backend == "pyav":
        return _pyav_read(path, indices)
    try:
        return _decord_read(path, indices)
    except VideoReadError as first:
        if backend == "decord":
            raise
        try:
            return _pyav_read(path, indices)
        except VideoReadError as second:
            raise VideoReadError(f"{second}; decord could not either") from None


def _short(exc: BaseException) -> str:
    """The reason in an exception, without the path and errno that FFmpeg and decord repeat."""
    text = getattr(exc, "strerror", None) or str(exc)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text.split("] ", 1)[-1][:200]
