"""The shapes world of docs/shapes-world.md: one solid shape moving in a straight line per clip.

    clip = sample_scene(clip_rng(seed=0, index=7))          # a Scene: slots + motion, resolution-free
    frames = render_clip(clip, size=64, frames=48)          # uint8 (f h w c)
    full_caption(clip.slots)  # 'a small red circle moving left on a black background'
    make_corpus("corpus/", ShapesConfig(videos=100))        # clips/*.mp4 + manifest.jsonl + config.yaml

Geometry is in fractions of the frame side, with x to the right and y down, so one clip renders
at any size. Every shape fills the square [centre - half, centre + half]^2: its half-extent is
the radius, the half side, or the half base of a triangle whose height equals its base, and its
centre is the centre of that square.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import save_config
from ..errors import ConfigError, VidgenError
from ..fs import check_writable_folder
from ..video_io import save_video
from .manifest import write_manifest

# --- vocabulary (docs/shapes-world.md "Vocabulary") ------------------------------------------------

COLORS = {
    "red": (255, 0, 0),
    "yellow": (255, 255, 0),
    "green": (0, 255, 0),
    "cyan": (0, 255, 255),
    "blue": (0, 0, 255),
    "magenta": (255, 0, 255),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": (0.10, 0.13), "large": (0.16, 0.20)}  # half-extent, fraction of the side
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # unit (x, y), y down
BACKGROUNDS = {"black": (0, 0, 0), "gray": (128, 128, 128)}
TRAVEL = (0.30, 0.45)  # distance the centre travels over the whole clip, fraction of the side
MARGIN = 0.02  # the shape keeps this far from the frame edges (fraction of the side)

HELDOUT = (
    ("red", "triangle", "up"),
    ("green", "circle", "left"),
    ("blue", "square", "right"),
    ("yellow", "triangle", "down"),
    ("cyan", "circle", "up"),
    ("magenta", "square", "left"),
)
SUPERSAMPLE = 4  # render at 4x and area-downsample (docs/shapes-world.md: anti-aliased edges)

SLOTS = ("color", "shape", "size", "direction", "background")
TRIPLE = ("color", "shape", "direction")  # the slots the held-out combinations are made of
VOCABULARY = {"color": tuple(COLORS), "shape": SHAPES, "size": tuple(SIZES), "direction": tuple(DIRECTIONS),
              "background": tuple(BACKGROUNDS)}


@dataclass
class ShapesConfig:
    """How `make_corpus` renders a corpus (`vidgen data shapes`, any field as key=value)."""

    videos: int = 100
    seed: int = 0
    size: int = 64  # frame side in pixels
    frames: int = 48
    fps: float = 24.0
    exclude_heldout: bool = True  # leave the `heldout` (color, shape, direction) triples out
    heldout: list[list[str]] = field(default_factory=lambda: [list(t) for t in HELDOUT])
    caption_drop: float = 0.5  # probability of dropping the size phrase, and (apart) the background phrase
    # H.264 quality of the clips: 10 keeps training frames clean and stays in the yuv420p High
    # profile that every player opens (0, lossless, would need High 4:4:4).
    crf: int = 10


def check_config(cfg: ShapesConfig) -> None:
    """Raise ConfigError naming the field whose value cannot make a corpus."""
    for name, low in (("videos", 1), ("size", 16), ("frames", 2)):
        if getattr(cfg, name) < low:
            raise ConfigError(f"{name} must be at least {low}, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.caption_drop <= 1.0:
        raise ConfigError(f"caption_drop must be a probability in [0, 1], got {cfg.caption_drop}")
    if not cfg.fps > 0:
        raise ConfigError(f"fps must be positive, got {cfg.fps}")
    if not 0 <= cfg.crf <= 51:
        raise ConfigError(f"crf must be an H.264 quality in [0, 51] (lower is better), got {cfg.crf}")
    for triple in cfg.heldout:
        if len(triple) != 3 or any(word not in VOCABULARY[slot] for word, slot in zip(triple, TRIPLE)):
            raise ConfigError(f"heldout entry {list(triple)} is not a [color, shape, direction] of the shapes world")
    if not _allowed_triples(heldout_set(cfg), {}):
        raise ConfigError("heldout lists every (color, shape, direction): nothing is left to render")


def heldout_set(cfg: ShapesConfig) -> frozenset[tuple[str, str, str]]:
    """The triples a corpus made with `cfg` leaves out (none when exclude_heldout is false)."""
    return frozenset(tuple(t) for t in cfg.heldout) if cfg.exclude_heldout else frozenset()


# --- one clip -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scene:
    """The slots of a clip and its motion, in fractions of the frame side (x right, y down)."""

    color: str
    shape: str
    size: str
    direction: str
    background: str
    half: float  # half-extent
    start: tuple[float, float]  # centre (x, y) in the first frame
    travel: float  # distance the centre covers from the first frame to the last

    @property
    def slots(self) -> dict[str, str]:
        return {slot: getattr(self, slot) for slot in SLOTS}

    def centres(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centre (x, y) at clip times t in [0, 1] (0 the first frame, 1 the last)."""
        ux, uy = DIRECTIONS[self.direction]
        return self.start[0] + ux * self.travel * t, self.start[1] + uy * self.travel * t

    def motion(self, frames: int) -> dict:
        """The motion numbers a manifest records: half-extent, start centre, velocity per frame."""
        ux, uy = DIRECTIONS[self.direction]
        step = self.travel / (frames - 1)
        return {"half_extent": self.half, "start": list(self.start), "velocity": [ux * step, uy * step]}


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """Scene `index` of corpus `seed` draws from its own generator: it does not depend on the others."""
    return np.random.default_rng([seed, index])


def _pick(rng: np.random.Generator, choices: Sequence):
    return choices[int(rng.integers(len(choices)))]


def _fixed_slots(slots: dict | None) -> dict[str, str]:
    """The slots given a value, checked against the vocabulary."""
    fixed = {slot: word for slot, word in (slots or {}).items() if word is not None}
    for slot, word in fixed.items():
        if word not in VOCABULARY.get(slot, ()):
            raise ValueError(f"{slot}={word!r} is not in the shapes world: slots and their words are {VOCABULARY}")
    return fixed


def _allowed_triples(heldout: frozenset, fixed: dict) -> list[tuple[str, str, str]]:
    """The (color, shape, direction) triples that agree with `fixed` and are not held out."""
    options = [(fixed[slot],) if slot in fixed else VOCABULARY[slot] for slot in TRIPLE]
    return [triple for triple in itertools.product(*options) if triple not in heldout]


def _start_range(half: float, travel: float, unit: int) -> tuple[float, float]:
    """Where the centre may start on one axis so the shape stays inside for the whole clip."""
    low, high = half + MARGIN, 1.0 - half - MARGIN
    if unit > 0:
        return low, high - travel
    if unit < 0:
        return low + travel, high
    return low, high


def sample_scene(rng: np.random.Generator, heldout: frozenset = frozenset(), slots: dict | None = None) -> Scene:
    """Draw the slots and the motion of one clip (docs/shapes-world.md "Vocabulary"), uniformly over the
    (color, shape, direction) triples not held out. `slots` fixes any of the five slots (None
    leaves one to chance): `sample_scene(rng, slots=parse_prompt(text))` draws a clip of a prompt."""
    fixed = _fixed_slots(slots)
    allowed = _allowed_triples(heldout, fixed)
    if not allowed:
        raise ValueError(f"no clip has the slots {fixed}: every (color, shape, direction) they allow is held out")
    color, shape, direction = _pick(rng, allowed)
    size = fixed.get("size") or _pick(rng, VOCABULARY["size"])
    background = fixed.get("background") or _pick(rng, VOCABULARY["background"])
    half = float(rng.uniform(*SIZES[size]))
    travel = float(rng.uniform(*TRAVEL))
    start = tuple(float(rng.uniform(*_start_range(half, travel, unit))) for unit in DIRECTIONS[direction])
    return Scene(color, shape, size, direction, background, half, start, travel)


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Which points (offsets from the centre, broadcast together) lie inside the shape."""
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # triangle pointing up: apex at (0, -half), base from (-half, half) to (half, half)
    return (np.abs(dx) <= (dy + half) / 2) & (dy <= half)


def coverage(clip: Scene, size: int, times: np.ndarray) -> np.ndarray:
    """Fraction of each pixel the shape covers at clip times t in [0, 1], float32 (f h w).

    Sampled on a SUPERSAMPLE x SUPERSAMPLE grid per pixel and averaged (an area filter).
    """
    fine = size * SUPERSAMPLE
    grid = (np.arange(fine, dtype=np.float32) + 0.5) / fine  # sample centres, fraction of the side
    cx, cy = (c.astype(np.float32) for c in clip.centres(times))
    dx = grid[None, None, :] - cx[:, None, None]  # (f 1 W)
    dy = grid[None, :, None] - cy[:, None, None]  # (f H 1)
    inside = _inside(clip.shape, dx, dy, np.float32(clip.half))  # (f H W)
    blocks = inside.reshape(len(times), size, SUPERSAMPLE, size, SUPERSAMPLE)
    return blocks.sum(axis=(2, 4), dtype=np.float32) / SUPERSAMPLE**2  # (f h w)


def render_clip(clip: Scene, size: int = 64, frames: int = 48, indices: Sequence[int] | None = None) -> np.ndarray:
    """The clip as uint8 RGB frames (f h w c): `frames` frames spanning the whole motion, or only
    those at `indices`."""
    indices = np.arange(frames) if indices is None else np.asarray(indices)
    cover = coverage(clip, size, indices / (frames - 1))[..., None]  # (f h w 1)
    background = np.array(BACKGROUNDS[clip.background], np.float32)
    color = np.array(COLORS[clip.color], np.float32)
    return np.rint(background + cover * (color - background)).astype(np.uint8)  # (f h w c)


# --- captions (docs/shapes-world.md "Captions") ------------------------------------------------------

def caption(color: str, shape: str, direction: str, size: str | None = None, background: str | None = None) -> str:
    """A caption naming the given slots; size and background are left out where None."""
    size_phrase = f"{size} " if size else ""
    background_phrase = f" on a {background} background" if background else ""
    return f"a {size_phrase}{color} {shape} moving {direction}{background_phrase}"


def full_caption(slots: dict) -> str:
    return caption(**{slot: slots[slot] for slot in SLOTS})


def training_caption(slots: dict, rng: np.random.Generator, drop: float) -> str:
    """The caption with the size phrase, and apart from it the background phrase, each dropped with
    probability `drop`."""
    keep_size, keep_background = rng.random(2) >= drop
    return caption(**{slot: slots[slot] for slot in TRIPLE},
                   size=slots["size"] if keep_size else None,
                   background=slots["background"] if keep_background else None)


class PromptError(VidgenError, ValueError):
    """A prompt the shapes world cannot draw: an unknown word, or words out of order."""


_GRAMMAR = "a [size] {color} {shape} moving {direction} [on a {background} background]"


def _alternatives(slot: str) -> str:
    return "(?P<%s>%s)" % (slot, "|".join(VOCABULARY[slot]))


_PROMPT = re.compile(
    rf"an? (?:{_alternatives('size')} )?{_alternatives('color')} {_alternatives('shape')} "
    rf"moving {_alternatives('direction')}(?: on an? {_alternatives('background')} background)?"
)


def _unknown_words(words: list[str]) -> list[str]:
    known = {"a", "an", "moving", "on", "background"}.union(*VOCABULARY.values())
    return [word for word in words if word not in known]


def parse_prompt(text: str) -> dict[str, str | None]:
    """The slots a prompt names, e.g. 'a red circle moving left' -> {'color': 'red', 'shape':
    'circle', 'direction': 'left', 'size': None, 'background': None}. Case, extra spaces and a
    final period are ignored. Raises PromptError (a ValueError) for a prompt outside the world."""
    words = text.lower().strip().rstrip(".").split()
    match = _PROMPT.fullmatch(" ".join(words))
    if match:
        return {slot: match.group(slot) for slot in SLOTS}
    unknown = _unknown_words(words)
    if unknown:
        vocabulary = "; ".join(f"{slot}: {', '.join(VOCABULARY[slot])}" for slot in SLOTS)
        raise PromptError(f"prompt {text!r}: the shapes world has no word {', '.join(map(repr, unknown))} "
                          f"(it knows {vocabulary})")
    raise PromptError(f"prompt {text!r} does not read '{_GRAMMAR}', e.g. '{caption('red', 'circle', 'left')}'")


# --- the corpus --------------------------------------------------------------------------------

def corpus_scene(cfg: ShapesConfig, index: int) -> tuple[Scene, str]:
    """Scene `index` of the corpus `cfg` describes, and its training caption."""
    rng = clip_rng(cfg.seed, index)
    clip = sample_scene(rng, heldout_set(cfg))
    return clip, training_caption(clip.slots, rng, cfg.caption_drop)


def clip_record(index: int, clip: Scene, text: str, cfg: ShapesConfig) -> dict:
    """The manifest record of clip `index` of a corpus (its path relative to the corpus folder)."""
    return {
        "path": f"clips/{index:05d}.mp4",
        "frames": cfg.frames,
        "fps": float(cfg.fps),
        "duration": cfg.frames / cfg.fps,
        "width": cfg.size,
        "height": cfg.size,
        "caption": text,
        "full_caption": full_caption(clip.slots),
        "slots": clip.slots,
        "motion": clip.motion(cfg.frames),
    }


def check_corpus_destination(out: Path, overwrite: bool = False) -> None:
    """A corpus goes into a new or empty folder, or over a corpus rendered before (its manifest.jsonl
    and config.yaml are there); another folder only with `overwrite`, and then only clips/NNNNN.mp4,
    manifest.jsonl and config.yaml are written."""
    check_writable_folder(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not overwrite and not (
            (out / "manifest.jsonl").is_file() and (out / "config.yaml").is_file()):
        raise VidgenError(f"--out {out} holds files that are not a shapes corpus: give a new or empty folder, or add "
                          f"--overwrite (then only clips/NNNNN.mp4, manifest.jsonl and config.yaml are written)")


def make_corpus(out_dir, cfg: ShapesConfig, progress: bool = True, overwrite: bool = False) -> Path:
    """Render `cfg.videos` clips into `out_dir`/clips/NNNNN.mp4 and write `manifest.jsonl` (one
    record per clip: caption, full_caption, slots, motion) and `config.yaml`. Returns the
    manifest's path. Scene i depends only on (seed, i) (docs/shapes-world.md: same seed, same corpus)."""
    check_config(cfg)
    out = Path(out_dir)
    check_corpus_destination(out, overwrite)
    records = []
    for index in tqdm(range(cfg.videos), desc="rendering", unit="clip", disable=not progress):
        clip, text = corpus_scene(cfg, index)
        record = clip_record(index, clip, text, cfg)
        save_video(render_clip(clip, cfg.size, cfg.frames), out / record["path"], fps=cfg.fps,
                   metadata={"prompt": record["full_caption"]}, crf=cfg.crf, sidecar=False, overwrite=True)
        records.append(record)
    save_config(cfg, out / "config.yaml")
    return write_manifest(records, out / "manifest.jsonl")


# --- text-image pairs for the image model -------------------------------------------------------

class ShapesFrameDataset(torch.utils.data.Dataset):
    """Single frames of the corpus `cfg` describes, rendered on the fly (no video decoding, no
    codec loss): item i is frame i % cfg.frames of clip i // cfg.frames, with that clip's training
    caption, so `len` is cfg.videos * cfg.frames. Raise cfg.videos for more variety; an index
    always gives the same image and caption.

    Yields {"image": float32 (c h w) in [-1, 1], "caption": str}.
    """

    def __init__(self, cfg: ShapesConfig | None = None):
        self.cfg = cfg or ShapesConfig()
        check_config(self.cfg)

    def __len__(self) -> int:
        return self.cfg.videos * self.cfg.frames

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} frames")
        clip_index, frame = divmod(index, self.cfg.frames)
        clip, text = corpus_scene(self.cfg, clip_index)
        pixels = render_clip(clip, self.cfg.size, self.cfg.frames, indices=[frame])[0]  # (h w c)
        image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1.0  # (c h w)
        return {"image": image, "caption": text}
