"""Reading a user's picture or clip and fitting it to the model's frame size.

Everything here runs before any weights load, so a file that cannot be used is refused with one
line (VidgenError) before the expensive work. Fitting scales the picture so it covers the target
size, then crops the middle: the `note` says what was done, for the clip's sidecar.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..destinations import FRAME_NAME, read_sidecar
from ..errors import VidgenError

MAX_CROP = 0.5  # refuse a picture that would lose more than half of its area to the crop
MIN_SIDE = 8  # pixels: smaller pictures hold too little to scale up from


@dataclass(frozen=True)
class Clip:
    """A user's clip: uint8 frames (f h w 3) and their rate."""

    frames: np.ndarray
    fps: float
    path: str
    metadata: dict  # its vidgen sidecar, where it has one

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def check_fit(height: int, width: int, target: tuple[int, int], what: str) -> str:
    """Refuse a (height, width) picture that cannot be mapped to `target` (h, w); else say how it is."""
    th, tw = target
    if min(height, width) < MIN_SIDE:
        raise VidgenError(f"{what} is {width}x{height}: too small to scale to the model's {tw}x{th} (at least "
                          f"{MIN_SIDE} px a side): give a larger picture")
    scale = max(th / height, tw / width)
    kept = (th * tw) / (height * scale * width * scale)
    if kept < MAX_CROP:
        raise VidgenError(f"{what} is {width}x{height}: cropping it to the model's {tw}x{th} shape would drop "
                          f"{1 - kept:.0%} of it (at most {1 - MAX_CROP:.0%}): crop it closer to {tw}:{th} first")
    if (height, width) == (th, tw):
        return f"{width}x{height}, used as it is"
    return f"{width}x{height} scaled by {scale:.3g} and center-cropped to {tw}x{th}"


def crop_to_shape(clip: Clip, target: tuple[int, int]) -> Clip:
    """The clip center-cropped to the target's aspect ratio at its own resolution, so that frames the
    model draws (at the target size, scaled back) show the same region as the frames it keeps."""
    th, tw = target
    f, h, w, _ = clip.frames.shape
    ch, cw = (h, max(1, round(h * tw / th))) if w * th > h * tw else (max(1, round(w * th / tw)), w)
    if (ch, cw) == (h, w):
        return clip
    top, left = (h - ch) // 2, (w - cw) // 2
    return dataclasses.replace(clip, frames=clip.frames[:, top:top + ch, left:left + cw])


def fit_frames(frames: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """uint8 (f h w 3) -> (f th tw 3): scaled to cover the target, the middle kept (bicubic)."""
    from PIL import Image

    th, tw = target
    f, h, w, _ = frames.shape
    if (h, w) == (th, tw):
        return frames
    scale = max(th / h, tw / w)
    sh, sw = max(th, round(h * scale)), max(tw, round(w * scale))
    top, left = (sh - th) // 2, (sw - tw) // 2
    out = [np.asarray(Image.fromarray(frame).resize((sw, sh), Image.BICUBIC))[top:top + th, left:left + tw]
           for frame in frames]
    return np.stack(out)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A picture file as uint8 RGB (h w 3), or a VidgenError naming what is wrong with it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise VidgenError(f"--image {path} does not exist: give a PNG or JPEG picture") from None
    except IsADirectoryError:
        raise VidgenError(f"--image {path} is a folder: give a PNG or JPEG picture") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise VidgenError(f"--image {path} cannot be read as a picture ({type(exc).__name__}): give a PNG or "
                          f"JPEG") from None


def _png_folder(folder: Path) -> tuple[np.ndarray, float, dict]:
    """A folder of vidgen's NNNNN.png frames (its sidecar, where there is one, gives the fps)."""
    from PIL import Image

    names = sorted(entry.name for entry in os.scandir(folder) if FRAME_NAME.match(entry.name))
    if not names:
        raise VidgenError(f"{folder} is a folder without NNNNN.png frames: give a video file or a frames folder "
                          f"written by vidgen")
    frames = []
    for name in names:
        try:
            with Image.open(folder / name) as picture:
                frames.append(np.asarray(picture.convert("RGB")))
        except (OSError, ValueError) as exc:  # UnidentifiedImageError is an OSError
            raise VidgenError(f"{folder / name} cannot be read as a frame ({type(exc).__name__}): replace it or give "
                              f"the clip as a video file") from None
        if frames[-1].shape != frames[0].shape:
            raise VidgenError(f"{folder / name} is {frames[-1].shape[1]}x{frames[-1].shape[0]}, the folder's first "
                              f"frame {frames[0].shape[1]}x{frames[0].shape[0]}: every frame must be the same size")
    frames = np.stack(frames)  # (f h w 3)
    metadata = read_sidecar(folder) or {}
    return frames, float(metadata.get("fps", 8.0)), metadata


def read_clip(path: str | os.PathLike, option: str = "CLIP") -> Clip:
    """A user's clip (a video file PyAV or decord reads, or a folder of PNG frames), all frames."""
    from ..data.reader import probe_video, read_frames
    from ..video_io import read_metadata

    path = Path(path)
    if not path.exists():
        raise VidgenError(f"{option} {path} does not exist: give a video file (MP4, GIF, ...) or a PNG frames folder")
    if path.is_dir():
        frames, fps, metadata = _png_folder(path)
        return Clip(frames, fps, str(path), metadata)
    try:
        info = probe_video(path)
        frames = read_frames(path)
        metadata = read_metadata(path)
    except VidgenError as exc:
        raise VidgenError(f"{option} {path} cannot be read as video: {exc}") from None
    except (ValueError, OSError) as exc:
        raise VidgenError(f"{option} {path} cannot be read as video ({type(exc).__name__})") from None
    if len(frames) < 1:
        raise VidgenError(f"{option} {path} holds no frames")
    fps = float(metadata.get("fps") or info.fps or 8.0)
    return Clip(frames, fps, str(path), metadata if isinstance(metadata, dict) else {})


def picture_notes(index) -> dict:
    """What a clip's sidecar says about how a model (its vidgen.json `index`) read the user's picture."""
    return {"image_base_stage": bool(index.image_base),  # the model's image-to-video base stage ran, around it
            "picture_as_anchor": bool(index.image_base or index.anchor.image_model)}  # a base read it at every frame


def own_anchor_refusal(position: float, given: str) -> str:
    """Why a model whose base stage draws its own anchor frame (at `position`) cannot start from `given`."""
    if given == "a longer clip":
        return ("this model's base stage draws its own anchor frame, which the windows of a longer clip do not carry "
                "on: leave seconds out (--seconds), or use a model whose base stage has none")
    if given == "a picture" and position != 0:
        return (f"this model's base stage draws its own anchor frame at {position} of the clip, not at its start: "
                f"a picture can take the place only of a first-frame anchor (anchor.position 0)")
    return (f"this model's base stage draws its own anchor frame: starting from {given} needs a base stage without "
            f"one (a picture, with --image, can take the place of a first-frame anchor)")
