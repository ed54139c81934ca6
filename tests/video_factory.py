"""Small test videos made on the spot: frame i is a flat colour that encodes i (red counts units,
green counts thirties, in steps of 8 so that even 15-bit codecs keep them), so a test can tell
which source frame a decoded frame came from, through lossy codecs too."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from vidgen.video_io import save_video


def colour(i: int) -> tuple[int, int, int]:
    if not 0 <= i < 900:
        raise ValueError("test videos encode frame indices 0..899")
    return 8 + 8 * (i % 30), 8 + 8 * (i // 30), 128


def index_of(frame: np.ndarray, channels_last: bool = True) -> int:
    """Source frame index of a decoded frame: uint8 (h, w, 3), or float (3, h, w) in [-1, 1]."""
    frame = np.asarray(frame, dtype=np.float64)
    if not channels_last:
        frame = (frame.transpose(1, 2, 0) + 1.0) * 127.5
    red, green = frame[..., 0].mean(), frame[..., 1].mean()
    return int(round((red - 8) / 8)) + 30 * int(round((green - 8) / 8))


def gray_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """n flat frames (f h w c), frame i of `colour(i)`."""
    frames = np.zeros((n, height, width, 3), np.uint8)  # (f h w c)
    for i in range(n):
        frames[i] = colour(i)
    return frames


def make_mp4(path: Path, n: int = 20, fps: float = 10, height: int = 48, width: int = 64) -> Path:
    return save_video(gray_frames(n, height, width), path, fps=fps, crf=0, sidecar=False)


def make_with_ffmpeg(path: Path, codec: str, n: int = 20, fps: int = 10, height: int = 48, width: int = 64) -> Path:
    """Encode gray frames with the ffmpeg binary shipped by imageio-ffmpeg (it has Theora, MS Video-1, ...)."""
    import imageio_ffmpeg

    raw = gray_frames(n, height, width).tobytes()
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{width}x{height}", "-r", str(fps), "-i", "-", "-c:v", codec, "-q:v", "2", str(path)]
    subprocess.run(cmd, input=raw, check=True)
    return path
