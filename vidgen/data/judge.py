"""Does a clip obey its prompt? The judge of docs/shapes-world.md "When a clip obeys its prompt".

    judgement = judge_clip("sample.mp4")              # or uint8 frames (f h w c)
    judgement.obeys("a red circle moving left")       # -> bool
    judgement.failures("a red circle moving left")    # -> ['color: asked red, saw blue', ...]

How it measures, so that anti-aliased edges and H.264 (yuv420p halves the chroma resolution,
which smears coloured edges) do not fool it:
- the background is each frame's median colour (the object covers at most a sixth of a frame);
- object pixels are those far from the background in RGB; blobs are their 8-connected
  components, with one-pixel gaps bridged (chroma smear can leave a faint column inside an edge);
- how much of each pixel the object covers is where the pixel's colour lies between the
  background and the object's own colour, read mostly from luma, which yuv420p keeps sharp;
- area, extents and centre are sums of that coverage, exact to a fraction of a pixel.

Every threshold sits at the midpoint between the classes it separates (constants below), so
the noisier clips of generative models are judged as fairly as renders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .reader import read_frames
from .shapes import BACKGROUNDS, COLORS, SIZES, SLOTS, parse_prompt

_PALETTE = np.array(list(COLORS.values()), np.float32)  # (6 c)
_BACKDROPS = np.array(list(BACKGROUNDS.values()), np.float32)  # (2 c)

# A pixel is object when its RGB distance from the background exceeds half the smallest contrast
# between a color and a background of the world (gray against any color: 220).
CONTRAST = 0.5 * float(np.linalg.norm(_PALETTE[:, None] - _BACKDROPS[None], axis=-1).min())
# Fill of the bounding box: triangle 0.5, circle pi/4, square 1.0; split at the midpoints.
FILL = {"triangle": 0.5, "circle": np.pi / 4, "square": 1.0}
FILL_SPLITS = ((FILL["triangle"] + FILL["circle"]) / 2, (FILL["circle"] + FILL["square"]) / 2)  # 0.643, 0.893
# Half-extent, fraction of the side: small 0.10-0.13, large 0.16-0.20; split at 0.145.
SIZE_SPLIT = (SIZES["small"][1] + SIZES["large"][0]) / 2
MIN_TRAVEL = 0.15  # the centre moves at least this fraction of the side along the named axis ...
MAX_CROSS = 1 / 3  # ... and less than this fraction of that across it
# Blobs under a tenth of the smallest object of the world (a small triangle, 2 * 0.10^2 of the
# frame) are specks, not objects.
MIN_BLOB = 0.1 * 2 * SIZES["small"][0] ** 2
# Jumps between consecutive frames: half the smallest distance between two colors of the world
# (255), half the smallest gap between two fill classes (0.215), and the geometric midpoint of
# the smallest small-to-large area ratio ((0.16 / 0.13)^2 = 1.51, so 1.23).
COLOR_JUMP = 0.5 * float(min(np.linalg.norm(a - b) for i, a in enumerate(_PALETTE) for b in _PALETTE[i + 1:]))
FILL_JUMP = 0.5 * min(FILL["circle"] - FILL["triangle"], FILL["square"] - FILL["circle"])
AREA_JUMP = SIZES["large"][0] / SIZES["small"][1]
# Coverage is measured in YCbCr (BT.601) with chroma weighted down: luma is sharp in yuv420p.
# Chroma keeps a little weight so a color with the background's luma (green on gray differs by
# only 22 levels) still has a contrast.
_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)
CHROMA_WEIGHT = 0.02
_COVERAGE_SPACE = (_YCBCR * np.sqrt([1.0, CHROMA_WEIGHT, CHROMA_WEIGHT])[:, None]).T.astype(np.float32)  # (rgb ycc)


@dataclass
class Judgement:
    """What the judge saw in a clip. Slots are None where they could not be told (no object, no
    straight motion). Lengths and positions are fractions of the frame side, areas of the frame."""

    background: str
    one_object: bool  # exactly one object in every frame
    steady: bool  # its color, shape and area never jump between consecutive frames
    areas: list[float]  # per frame, 0 where there is no object
    background_rgb: tuple[float, float, float]
    color: str | None = None
    shape: str | None = None
    size: str | None = None
    direction: str | None = None
    object_rgb: tuple[float, float, float] | None = None  # median over frames
    fill: float = 0.0  # object area / bounding-box area, median over frames
    half_extent: float = 0.0  # of the judged shape with the measured area, median over frames
    displacement: tuple[float, float] = (0.0, 0.0)  # centre (x, y), first quarter to last, y down
    reasons: list[str] = field(default_factory=list)  # why one_object, steady or the motion fail

    def check(self, slots_or_prompt: str | dict) -> dict[str, bool]:
        """For each slot the prompt (or a slots dict) names, whether the clip shows it."""
        slots = _slots(slots_or_prompt)
        return {slot: getattr(self, slot) == want for slot, want in slots.items() if slot in SLOTS and want is not None}

    def failures(self, slots_or_prompt: str | dict) -> list[str]:
        """Every way the clip breaks the prompt: the wrong slots, then the judgement's reasons."""
        slots = _slots(slots_or_prompt)
        wrong = [f"{slot}: asked {slots[slot]}, saw {getattr(self, slot)}"
                 for slot, right in self.check(slots).items() if not right]
        return wrong + self.reasons

    def obeys(self, slots_or_prompt: str | dict) -> bool:
        """docs/shapes-world.md "When a clip obeys its prompt": the named slots right, one steady object, straight motion."""
        return not self.failures(slots_or_prompt)


def _slots(slots_or_prompt: str | dict) -> dict:
    return parse_prompt(slots_or_prompt) if isinstance(slots_or_prompt, str) else slots_or_prompt


# --- image helpers ------------------------------------------------------------------------------

def _max3x3(a: np.ndarray, fill) -> np.ndarray:
    """Maximum over each pixel's 3x3 neighbourhood within its frame, (f h w) -> (f h w)."""
    padded = np.pad(a, ((0, 0), (1, 1), (1, 1)), constant_values=fill)
    rows = np.maximum(np.maximum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])  # (f h w+2)
    return np.maximum(np.maximum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


def dilate(mask: np.ndarray) -> np.ndarray:
    return _max3x3(mask, False)


def erode(mask: np.ndarray) -> np.ndarray:
    return ~_max3x3(~mask, True)


def label_components(mask: np.ndarray) -> np.ndarray:
    """8-connected components of each frame of a bool (f h w) mask, all frames at once.

    Every pixel starts labelled with its own flat index and repeatedly takes the largest label in
    its 3x3 neighbourhood, then the label that its label's pixel holds (pointer jumping: a few
    rounds rather than one per pixel of diameter). Returns int64 (f h w): each component's
    largest flat index, -1 outside the mask.
    """
    labels = np.where(mask, np.arange(mask.size).reshape(mask.shape), -1)
    while True:
        spread = np.where(mask, _max3x3(labels, -1), -1)
        spread = np.where(mask, spread.ravel()[spread.clip(0)].reshape(mask.shape), -1)
        if np.array_equal(spread, labels):
            return labels
        labels = spread


def _frame_list(frames) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    runs = []
    for frame in frames:
        if runs and frame == runs[-1][1] + 1:
            runs[-1][1] = frame
        else:
            runs.append([frame, frame])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _nearest(names, table: np.ndarray, rgb: np.ndarray) -> str:
    return list(names)[int(np.linalg.norm(table - rgb, axis=-1).argmin())]


# --- finding and measuring the object -----------------------------------------------------------

def _find_object(frames: np.ndarray, backgrounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: how many blobs are not specks, and the pixels of the largest blob.

    frames (f h w c), backgrounds (f c) -> counts int (f,), blob bool (f h w) (empty: no object).
    """
    f, h, w, _ = frames.shape
    far = np.linalg.norm(frames - backgrounds[:, None, None], axis=-1) > CONTRAST  # (f h w)
    labels = label_components(dilate(far))  # one-pixel gaps bridged
    roots, sizes = np.unique(labels[far], return_counts=True)  # sizes count object pixels only
    roots, sizes = roots[sizes >= MIN_BLOB * h * w], sizes[sizes >= MIN_BLOB * h * w]
    frame_of = roots // (h * w)
    order = np.lexsort((-sizes, frame_of))  # by frame, largest first
    _, first = np.unique(frame_of[order], return_index=True)  # each frame's largest blob
    return np.bincount(frame_of, minlength=f), far & np.isin(labels, roots[order[first]])


def _object_colors(frames: np.ndarray, blob: np.ndarray) -> np.ndarray:
    """Mean colour of each frame's blob interior (its rim mixes with the background), (f c)."""
    core = erode(blob)
    core = np.where(core.any(axis=(1, 2), keepdims=True), core, blob)  # too thin to erode: all of it
    weight = core[..., None].astype(np.float32)  # (f h w 1)
    return (frames * weight).sum(axis=(1, 2)) / np.maximum(weight.sum(axis=(1, 2)), 1.0)  # (f c)


def _coverage(frames: np.ndarray, backgrounds: np.ndarray, colors: np.ndarray, blob: np.ndarray) -> np.ndarray:
    """Fraction of each pixel the object covers: where the pixel lies from the background (0) to
    the object colour (1), in the luma-weighted space; counted on the blob and the ring around it.

    frames (f h w c), backgrounds and colors (f c), blob (f h w) -> (f h w)
    """
    span = ((colors - backgrounds) @ _COVERAGE_SPACE)[:, None, None, :]  # (f 1 1 c)
    offset = (frames - backgrounds[:, None, None, :]) @ _COVERAGE_SPACE  # (f h w c)
    along = (offset * span).sum(-1) / np.maximum((span * span).sum(-1), 1.0)  # (f h w)
    return np.where(dilate(blob), along.clip(0.0, 1.0), 0.0)


@dataclass
class _Measures:
    """Per-frame numbers of the object: areas in frame areas, the rest in fractions of the side."""

    present: np.ndarray  # bool (f,)
    colors: np.ndarray  # (f c)
    areas: np.ndarray  # (f,)
    fills: np.ndarray  # (f,)
    centres: np.ndarray  # (f xy)


def _measure(cover: np.ndarray, colors: np.ndarray, present: np.ndarray) -> _Measures:
    """Area is the summed coverage, the centre its mean position. Width sums each column's largest
    coverage (so a partly covered edge column counts by the part covered); height likewise."""
    f, h, w = cover.shape
    area = cover.sum(axis=(1, 2))  # (f,) pixels
    width, height = cover.max(axis=1).sum(axis=1), cover.max(axis=2).sum(axis=1)  # (f,) pixels
    mass = np.maximum(area, 1e-6)
    x = (cover.sum(axis=1) * (np.arange(w) + 0.5) / w).sum(axis=1) / mass  # (f,)
    y = (cover.sum(axis=2) * (np.arange(h) + 0.5) / h).sum(axis=1) / mass
    fills = area / np.maximum(width * height, 1e-6)
    return _Measures(present, colors, area / (h * w), fills, np.stack([x, y], axis=1))


# --- the rules ----------------------------------------------------------------------------------

def _shape_of(fill: float) -> str:
    return "triangle" if fill < FILL_SPLITS[0] else "circle" if fill < FILL_SPLITS[1] else "square"


def _half_extent(area: float, shape: str) -> float:
    """Half-extent of `shape` with this area (a fraction of the frame): area is the measure that
    anti-aliasing and compression disturb least, extents lose a little at sharp corners."""
    return float(np.sqrt(area / (4 * FILL[shape])))


def _displacement(m: _Measures) -> np.ndarray:
    """Mean centre over the last quarter of the frames minus over the first quarter, (xy)."""
    quarter = max(1, len(m.centres) // 4)
    first, last = m.present[:quarter], m.present[-quarter:]
    if not first.any() or not last.any():
        return np.zeros(2)
    return m.centres[-quarter:][last].mean(axis=0) - m.centres[:quarter][first].mean(axis=0)


def _direction_of(displacement: np.ndarray) -> str | None:
    """docs/shapes-world.md: >= MIN_TRAVEL along one axis and less than MAX_CROSS of that across."""
    dx, dy = displacement
    along_x = abs(dx) >= abs(dy)
    main, cross = (dx, dy) if along_x else (dy, dx)
    if abs(main) < MIN_TRAVEL or abs(cross) >= MAX_CROSS * abs(main):
        return None
    if along_x:
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def _count_reasons(counts: np.ndarray) -> list[str]:
    reasons = []
    if (counts == 0).any():
        reasons.append(f"no object in frames {_frame_list(np.flatnonzero(counts == 0))}")
    if (counts > 1).any():
        reasons.append(f"more than one object in frames {_frame_list(np.flatnonzero(counts > 1))}")
    return reasons


def _jump_reasons(m: _Measures) -> list[str]:
    """Jumps between consecutive frames that both show the object."""
    both = m.present[1:] & m.present[:-1]
    ratio = np.maximum(m.areas[1:], 1e-9) / np.maximum(m.areas[:-1], 1e-9)
    jumps = {
        "color": np.linalg.norm(np.diff(m.colors, axis=0), axis=-1) > COLOR_JUMP,
        "shape": np.abs(np.diff(m.fills)) > FILL_JUMP,
        "area": np.maximum(ratio, 1 / ratio) > AREA_JUMP,
    }
    return [f"{what} jumps between frames " + ", ".join(f"{i}-{i + 1}" for i in np.flatnonzero(both & jumped))
            for what, jumped in jumps.items() if (both & jumped).any()]


def _motion_reasons(found: dict) -> list[str]:
    if not found or found["direction"] is not None:
        return []
    dx, dy = found["displacement"]
    return [f"no straight motion: the centre moved ({dx:+.3f}, {dy:+.3f}) of the side; a direction needs "
            f">= {MIN_TRAVEL} along one axis and less than {MAX_CROSS:.2f} of that across"]


def _as_frames(video) -> np.ndarray:
    """uint8 frames (f h w c) from a path or an array."""
    if isinstance(video, (str, os.PathLike)):
        return read_frames(video)
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"judge_clip takes a video path or uint8 frames (f, h, w, 3), got {video.dtype} {video.shape}")
    return video


def _describe_object(m: _Measures) -> dict:
    """The object's slots and numbers (Judgement fields), from the frames that show it."""
    object_rgb = np.median(m.colors[m.present], axis=0)
    fill = float(np.median(m.fills[m.present]))
    shape = _shape_of(fill)
    half = _half_extent(float(np.median(m.areas[m.present])), shape)
    displacement = _displacement(m)
    return {
        "color": _nearest(COLORS, _PALETTE, object_rgb),
        "shape": shape,
        "size": "small" if half < SIZE_SPLIT else "large",
        "direction": _direction_of(displacement),
        "object_rgb": tuple(float(c) for c in object_rgb),
        "fill": fill,
        "half_extent": half,
        "displacement": (float(displacement[0]), float(displacement[1])),
    }


def judge_clip(video) -> Judgement:
    """Judge a clip (a path, read back with read_frames, or uint8 frames (f h w c)) by the rules of
    docs/shapes-world.md "When a clip obeys its prompt"; then ask `.obeys(prompt)`."""
    frames = _as_frames(video).astype(np.float32)  # (f h w c)
    backgrounds = np.median(frames.reshape(len(frames), -1, 3), axis=1)  # (f c)
    counts, blob = _find_object(frames, backgrounds)
    colors = _object_colors(frames, blob)
    m = _measure(_coverage(frames, backgrounds, colors, blob), colors, blob.any(axis=(1, 2)))
    jumps = _jump_reasons(m)
    found = _describe_object(m) if m.present.any() else {}
    background_rgb = np.median(backgrounds, axis=0)
    return Judgement(
        background=_nearest(BACKGROUNDS, _BACKDROPS, background_rgb),
        one_object=bool((counts == 1).all()),
        steady=not jumps,
        areas=[float(a) for a in m.areas],
        background_rgb=tuple(float(c) for c in background_rgb),
        reasons=_count_reasons(counts) + jumps + _motion_reasons(found),
        **found,
    )
