"""The server's state: one loaded pipeline, one clip made at a time, the clips of this run.

Gradio's queue orders the requests (and shows each its place); `Studio.make` also holds a lock,
so two clips never share the CPU whatever calls it. A request is cancelled through its session's
flag: set while it waits (`expect` made the flag when it was queued), it ends as soon as it
starts; set while it runs, the pipeline's step callback raises `Cancelled` after the current
denoising step. Every clip is written through vidgen's own writer (atomic file,
sidecar JSON), into the server's output folder. Nothing here imports gradio.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..commands.generate import clip_metadata
from ..errors import VidgenError
from ..media.inputs import picture_notes
from ..video_io import save_video
from .form import ClipRequest

Progress = Callable[[str, int, int], None]  # (part, step, steps), vidgen.pipeline.StepCallback


class Cancelled(VidgenError):
    """The clip was cancelled by its user; nothing was written."""


@dataclass(frozen=True)
class Clip:
    """A clip this server made: its file and what made it (its sidecar's record)."""

    number: int
    path: Path
    record: dict

    def caption(self) -> str:
        r = self.record
        return (f"#{self.number} {r['prompt']!r}: seed {r['seed']}, {r['steps']} steps, guidance {r['guidance']:g}, "
                f"{r['frames']} frames at {r['fps']:g} fps")


class Studio:
    """A loaded pipeline, the folder its clips go to, and the clips made since the server started."""

    def __init__(self, pipe, out_dir: str | Path, model: str | Path, scheduler: str = "ddim", dtype: str = "float32"):
        self.pipe, self.out_dir, self.model = pipe, Path(out_dir), model
        self.scheduler, self.dtype = scheduler, dtype
        self.clips: list[Clip] = []
        self._lock = threading.Lock()  # one clip at a time: the CPU is shared by every step
        self._cancel: dict[str, threading.Event] = {}  # session -> the cancel flag of its queued or running clip
        self._numbers = itertools.count(self._first_free_number())

    def _first_free_number(self) -> int:
        taken = [int(p.stem.split("-")[1]) for p in self.out_dir.glob("clip-*.mp4") if p.stem.split("-")[1].isdigit()]
        return max(taken, default=0) + 1

    def expect(self, session: str) -> None:
        """The session has queued a clip: from now on `cancel(session)` reaches it."""
        self._cancel[session] = threading.Event()

    def forget(self, session: str) -> None:
        """The session's queued clip will not be made (its request was refused)."""
        self._cancel.pop(session, None)

    def make(self, request: ClipRequest, progress: Progress | None = None, session: str = "") -> Clip:
        """Sample and write one clip; `progress(part, step, steps)` after each denoising step.
        Raises Cancelled where `cancel(session)` was called since `expect(session)` or meanwhile."""
        flag = self._cancel.setdefault(session, threading.Event())

        def on_step(part: str, step: int, steps: int) -> None:
            if flag.is_set():
                raise Cancelled("cancelled: no clip was written")
            if progress is not None:
                progress(part, step, steps)

        try:
            with self._lock:
                on_step("starting", 0, 1)  # cancelled while it waited
                started = time.perf_counter()
                out = self.pipe(request.prompt, negative_prompt=request.negative,
                                **dataclasses.asdict(request.settings), seed=request.seed, progress=False,
                                stages=request.stages, callback=on_step, **request.media)
                size = self.pipe.output_size(out.settings, out.stages)
                number = next(self._numbers)
                path = self.out_dir / f"clip-{number:04d}.mp4"
                metadata = clip_metadata(out, request.prompt, request.negative, request.seed, self.model,
                                         self.scheduler, 0.0, self.dtype, size)
                metadata.update({k: str(v) if k in ("image", "video") else v for k, v in request.media.items()})
                if "image" in request.media:
                    metadata.update(picture_notes(self.pipe.model.index))
                save_video(out.frames[0], path, fps=size[3], fmt="mp4", metadata=metadata)  # H.264, yuv420p
                clip = Clip(number, path, {**metadata, "file": path.name, "seconds": time.perf_counter() - started})
                self.clips.append(clip)
                return clip
        finally:
            if self._cancel.get(session) is flag:
                del self._cancel[session]

    def cancel(self, session: str = "") -> bool:
        """Stop the session's clip: a queued one when it starts, a running one after its current
        step; False where the session has none."""
        flag = self._cancel.get(session)
        if flag is None:
            return False
        flag.set()
        return True
