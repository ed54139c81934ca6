"""Image and clip inputs of the page, offered only where the pipeline takes them.

Make-A-Video's interpolation network animates an image (first frame given) and SDEdit over a
clip's latents makes variations of it (DESIGN.md, "User media in"). Whether this vidgen's
VideoPipeline takes them is read from the pipeline itself, never assumed:

- `image`: `VideoPipeline.__call__` has an `image` parameter (a path to a picture);
- `video`: it has `video` and `strength` parameters (a path to a clip, and how much of it to redo);
- and where the pipeline has a `supports_input(kind)` method, that method must also say yes for
  the loaded model (e.g. image-to-video needs a model with an interpolation stage).

The page shows an input only where its kind is supported, so it works the same without them.
"""

from __future__ import annotations

import inspect

from ..errors import VidgenError

KINDS = ("image", "video")
_NEEDS = {"image": ("image",), "video": ("video", "strength")}


def supported_inputs(pipe) -> tuple[str, ...]:
    """The media kinds ("image", "video") that `pipe` and its loaded model take."""
    parameters = inspect.signature(type(pipe).__call__).parameters
    kinds = [kind for kind in KINDS if all(name in parameters for name in _NEEDS[kind])]
    check = getattr(pipe, "supports_input", None)
    return tuple(kind for kind in kinds if check is None or check(kind))


def check_image(path: str) -> None:
    """Refuse a picture that cannot be read, before any sampling."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            picture.convert("RGB").load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise VidgenError(f"the image {_name(path)} cannot be read as a picture ({exc.__class__.__name__}): "
                          f"give a PNG, JPEG or WebP file") from None


def check_video(path: str) -> None:
    """Refuse a clip that cannot be read, before any sampling (the pipeline refuses the sizes its
    model cannot take)."""
    from ..data.reader import probe_video

    info = probe_video(path)  # VideoReadError (a VidgenError) names what is wrong
    if info.num_frames < 1:
        raise VidgenError(f"the clip {_name(path)} has no frames: give another clip")


def read_media(pipe, image: str | None, video: str | None, strength: float | None) -> dict:
    """The pipeline arguments for the given media: refused where unreadable, or where the pipeline
    does not take that kind (an API caller may send what the page would not show)."""
    supported, extra = supported_inputs(pipe), {}
    for kind, path in (("image", image), ("video", video)):
        if not path:
            continue
        if kind not in supported:
            raise VidgenError(f"this model or vidgen version takes no {kind} input: leave the {kind} out")
        (check_image if kind == "image" else check_video)(path)
        extra[kind] = path
    if "video" in extra and strength is not None:
        if strength <= 0:
            raise VidgenError(f"strength {strength:g} keeps the clip as it is: give a strength above 0, up to 1")
        extra["strength"] = strength
    return extra


def _name(path: str) -> str:
    from pathlib import Path

    return Path(path).name
