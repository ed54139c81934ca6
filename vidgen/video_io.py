"""Writing clips: MP4 (H.264, yuv420p), GIF and PNG-frame folders, with the metadata beside them.

Every write is atomic (vidgen.fs): after a crash or Ctrl-C there is either the complete file
under its final name or nothing new. The prompt, seed and model travel with the clip in the
container metadata where the format has room for it and always in a sidecar `<name>.json`.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .destinations import check_clip_destination, frame_name, read_sidecar, sidecar_path
from .errors import VidgenError
from .fs import atomic_dir, atomic_path, scratch_dir, write_text_atomic



def to_uint8_frames(video) -> np.ndarray:
    """A clip as uint8 RGB frames (f, h, w, 3).

    Accepts a float tensor/array in [-1, 1] shaped (c, f, h, w) (what the models produce) or a
    uint8 array already shaped (f, h, w, 3).
    """
    if hasattr(video, "detach"):  # torch.Tensor
        video = video.detach().float().cpu().numpy()
    video = np.asarray(video)
    if video.dtype == np.uint8:
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be shaped (f, h, w, 3), got {video.shape}")
        return video
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"float clips must be shaped (c=3, f, h, w) in [-1, 1], got {video.shape}")
    video = np.clip((video + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)  # (c f h w)
    return np.ascontiguousarray(video.transpose(1, 2, 3, 0))  # (f h w c)


def _fps_fraction(fps: float) -> Fraction:
    if not fps > 0:
        raise VidgenError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def _even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even width and height: repeat the last row/column where one is odd."""
    f, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def _write_mp4(frames: np.ndarray, path: Path, fps: float, metadata: Mapping[str, Any], crf: int) -> None:
    import av

    frames = _even(frames)
    _, h, w, _ = frames.shape
    with av.open(str(path), mode="w", format="mp4") as container:
        for key, value in _container_tags(metadata).items():
            container.metadata[key] = value
        stream = container.add_stream("libx264", rate=_fps_fraction(fps))
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        # MB-tree rate control makes x264's output depend on more than the frames (same frames,
        # different bytes from run to run); without it a seed gives the same file.
        stream.options = {"crf": str(crf), "preset": "medium", "x264-params": "mbtree=0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder
            container.mux(packet)


def _write_gif(frames: np.ndarray, path: Path, fps: float, metadata: Mapping[str, Any]) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    # GIF delays are whole centiseconds: 24 fps is stored as 40 ms (25 fps); the sidecar keeps the true fps.
    duration_ms = max(20, int(round(100.0 / fps)) * 10)
    images[0].save(
        path, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0,
        comment=json.dumps(dict(metadata), default=str).encode("utf-8")[:255] if metadata else b"",
    )


def _write_png_folder(frames: np.ndarray, folder: Path) -> None:
    from PIL import Image

    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / frame_name(i))


def _write_png_frames(frames: np.ndarray, folder: Path) -> None:
    """PNG frames into `folder`: a new folder appears whole; into an existing one each frame is
    moved in whole, and only vidgen's own frames past the new count (its old sidecar says how
    many there were) are removed. Nothing else in the folder is touched."""
    if not folder.is_dir():
        with atomic_dir(folder) as tmp:
            _write_png_folder(frames, tmp)
        return
    before = read_sidecar(folder)
    with scratch_dir(folder) as tmp:
        _write_png_folder(frames, tmp)
        for i in range(len(frames)):
            os.replace(tmp / frame_name(i), folder / frame_name(i))
    old_count = int(before.get("frames", 0)) if before and before.get("format") == "png" else 0
    for i in range(len(frames), old_count):
        (folder / frame_name(i)).unlink(missing_ok=True)


def _container_tags(metadata: Mapping[str, Any]) -> dict[str, str]:
    if not metadata:
        return {}
    tags = {"comment": json.dumps(dict(metadata), default=str)}
    if "prompt" in metadata:
        tags["title"] = str(metadata["prompt"])
    return tags


def save_video(
    video,
    path: str | os.PathLike,
    fps: float,
    fmt: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    crf: int = 18,
    sidecar: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a clip to `path` as MP4, GIF or a folder of PNG frames, atomically.

    video: uint8 (f, h, w, 3) or float (c, f, h, w) in [-1, 1]. The sidecar JSON holds `metadata`
    plus the frame count, size, fps and format actually written. A destination holding files
    vidgen did not write is refused unless `overwrite` (vidgen.destinations); even then only the
    clip's own file names are replaced.
    """
    frames = to_uint8_frames(video)
    fmt = check_clip_destination(path, fmt, overwrite=overwrite)
    path = Path(path)
    fps = float(fps)
    _fps_fraction(fps)
    metadata = dict(metadata or {})
    record = {**metadata, "file": path.name, "format": fmt, "frames": int(frames.shape[0]),
              "height": int(frames.shape[1]), "width": int(frames.shape[2]), "fps": fps}
    sidecar_text = json.dumps(record, indent=2, default=str, allow_nan=False) + "\n"  # strict JSON, before any write
    if fmt == "png":
        _write_png_frames(frames, path)
    else:
        with atomic_path(path) as tmp:
            if fmt == "mp4":
                _write_mp4(frames, tmp, fps, metadata, crf)
            else:
                _write_gif(frames, tmp, fps, metadata)
    if sidecar:
        write_text_atomic(sidecar_path(path), sidecar_text)
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata stored with a clip: the sidecar JSON, else the MP4 container's comment tag."""
    side = sidecar_path(path)
    if side.is_file():
        return json.loads(side.read_text(encoding="utf-8"))
    if Path(path).suffix.lower() == ".mp4":
        import av

        with av.open(str(path)) as container:
            comment = container.metadata.get("comment")
        if comment:
            return json.loads(comment)
    return {}
