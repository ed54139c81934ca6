"""Judging a text-to-video model on the shapes world (docs/shapes-world.md), prompt by prompt.

    prompts = eval_prompts(n=48, seed=0, heldout=True)                 # 48 seen + 48 held-out
    report = evaluate(generate_fn, prompts, seed=0, batch_size=8)      # generate_fn(texts, seed) -> uint8 (b f h w 3)
    print(format_table(report))

    report = evaluate_model(VideoPipeline.from_pretrained("my-model"), n=48, heldout=True)

A clip is judged as docs/shapes-world.md "When a clip obeys its prompt" says: written to MP4 and read back, then
checked against its prompt by vidgen.data.judge. Prompts name size and background about half of
the time each (as captions do, docs/shapes-world.md "Captions"), so those two slots are scored only on
the clips whose prompt names them; color, shape, direction and the clip-wide rules on every clip.
Seen prompts draw from the (color, shape, direction) triples a default corpus holds, held-out
prompts from the six it leaves out (docs/shapes-world.md "Held-out triples").
"""

from __future__ import annotations

import dataclasses

import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from . import __version__
from .data.judge import judge_clip
from .data.shapes import DIRECTIONS, HELDOUT, SLOTS, TRIPLE, VOCABULARY, parse_prompt, sample_scene, training_caption
from .video_io import save_video

GROUPS = ("seen", "heldout")  # report groups, in table order
RULES = ("steady", "one_object")  # clip-wide rules of the judge, scored on every clip
METRICS = (*SLOTS, *RULES, "all")  # "all": the clip obeys the whole prompt
CAPTION_DROP = 0.5  # chance that a prompt leaves out the size phrase, and apart from it the background phrase
DEFAULT_FPS = 24.0  # docs/shapes-world.md: native frame rate of the world

GenerateFn = Callable[[list[str], int], np.ndarray]  # (prompts, seed) -> uint8 (b f h w 3)


@dataclass(frozen=True)
class EvalPrompt:
    """A prompt to generate and judge, and the group its accuracies are counted in."""

    text: str
    group: str  # one of GROUPS


# --- prompts ------------------------------------------------------------------------------------

def _triples(group: str, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """The (color, shape, direction) triples of a group: held-out ones in table order, seen ones
    (every other triple of the vocabulary) shuffled, so that cycling through them covers it evenly."""
    if group == "heldout":
        return list(HELDOUT)
    seen = [t for t in itertools.product(*(VOCABULARY[slot] for slot in TRIPLE)) if t not in HELDOUT]
    return [seen[i] for i in rng.permutation(len(seen))]


def _group_prompts(group: str, n: int, seed: int, caption_drop: float) -> list[EvalPrompt]:
    """n prompts cycling through the group's triples; size and background drawn at random and each
    named with probability 1 - caption_drop (docs/shapes-world.md "Captions")."""
    g = GROUPS.index(group)
    triples = itertools.cycle(_triples(group, np.random.default_rng([seed, g])))
    prompts = []
    for i, triple in zip(range(n), triples):
        rng = np.random.default_rng([seed, g, i])  # its size, background and phrasing: from (seed, group, i) alone
        slots = sample_scene(rng, slots=dict(zip(TRIPLE, triple))).slots
        prompts.append(EvalPrompt(training_caption(slots, rng, caption_drop), group))
    return prompts


def eval_prompts(n: int, seed: int = 0, heldout: bool = False, caption_drop: float = CAPTION_DROP) -> list[EvalPrompt]:
    """n seen prompts, then with `heldout` n prompts of the held-out triples (cycled). The same
    seed gives the same prompts, and the seen ones do not depend on `heldout`."""
    if n < 1:
        raise ValueError(f"n must be at least 1 prompt per group, got {n}")
    groups = GROUPS if heldout else GROUPS[:1]
    return [p for group in groups for p in _group_prompts(group, n, seed, caption_drop)]


# --- one clip -----------------------------------------------------------------------------------

def judge_prompt(video, prompt: str) -> dict:
    """Judge a clip (a path or uint8 frames (f h w 3)) against its prompt: the slots the prompt
    names (`asked`), what the judge saw for every slot (`saw`), which named slots are right
    (`correct`), the clip-wide rules, whether it obeys the whole prompt, and every failure."""
    judgement = judge_clip(video)
    asked = {slot: word for slot, word in parse_prompt(prompt).items() if word is not None}
    dx, dy = judgement.displacement
    axis = DIRECTIONS.get(asked.get("direction"))  # unit (x, y), y down, as the judge's displacement
    return {
        "prompt": prompt,
        "asked": asked,
        "saw": {slot: getattr(judgement, slot) for slot in SLOTS},
        "correct": judgement.check(asked),
        **{rule: getattr(judgement, rule) for rule in RULES},
        "obeys": judgement.obeys(asked),
        "failures": judgement.failures(asked),
        # How far the centre went, first quarter of the frames to the last, in frame sides: (x, y)
        # and along the asked direction (negative: the other way; None where none is asked).
        "displacement": [dx, dy],
        "travel": None if axis is None else axis[0] * dx + axis[1] * dy,
    }


# --- aggregation --------------------------------------------------------------------------------

def _metric(outcomes: list[bool]) -> dict:
    """accuracy (None when nothing was scored), correct and scored counts."""
    correct = sum(outcomes)
    return {"accuracy": correct / len(outcomes) if outcomes else None, "correct": correct, "scored": len(outcomes)}


def _outcomes(record: dict, metric: str) -> list[bool]:
    """The clip's verdict for one metric: none where its prompt does not name the slot."""
    if metric in SLOTS:
        return [record["correct"][metric]] if metric in record["correct"] else []
    return [record["obeys"] if metric == "all" else record[metric]]


def _travel(records: list[dict]) -> dict:
    """The median travel along the asked direction (in frame sides) and the share of clips that
    went the asked way at all, over the clips whose prompt names a direction."""
    travels = [r["travel"] for r in records if r.get("travel") is not None]
    return {"median": float(np.median(travels)) if travels else None, "asked_way": _metric([t > 0 for t in travels])}


def summarize(records: list[dict]) -> dict:
    """Per group present among the records: its clip count; for every metric of METRICS, the
    accuracy over the clips where it is scored (size and background: where the prompt names them);
    and how far the objects went the asked way (`_travel`)."""
    summary = {}
    for group in GROUPS:
        mine = [r for r in records if r["group"] == group]
        if mine:
            summary[group] = {"clips": len(mine),
                              "metrics": {m: _metric([o for r in mine for o in _outcomes(r, m)]) for m in METRICS},
                              "travel": _travel(mine)}
    return summary


# --- generating and judging ---------------------------------------------------------------------

def _batches(prompts: Sequence[EvalPrompt], batch_size: int) -> list[list[EvalPrompt]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return [list(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)]


def _generate(generate_fn: GenerateFn, texts: list[str], seed: int) -> np.ndarray:
    clips = np.asarray(generate_fn(texts, seed))
    if clips.dtype != np.uint8 or clips.ndim != 5 or len(clips) != len(texts) or clips.shape[-1] != 3:
        raise ValueError(f"generate_fn must return uint8 clips (b={len(texts)}, f, h, w, 3), "
                         f"got {clips.dtype} {clips.shape}")
    return clips


def _export(frames: np.ndarray, folder: Path, index: int, prompt: EvalPrompt, seed: int, fps: float,
            overwrite: bool = False) -> Path:
    """Write clip `index` as MP4 at save_video's default quality, as `vidgen generate` does."""
    metadata = {"prompt": prompt.text, "group": prompt.group, "seed": seed, "vidgen_version": __version__}
    return save_video(frames, folder / f"{index:04d}_{prompt.group}.mp4", fps=fps, metadata=metadata,
                      overwrite=overwrite)


def evaluate(generate_fn: GenerateFn, prompts: Sequence[EvalPrompt], seed: int = 0, batch_size: int = 8,
             fps: float = DEFAULT_FPS, clip_dir: str | os.PathLike | None = None, settings: dict | None = None,
             progress: bool = True, overwrite: bool = False, annotate: Callable[[dict], None] | None = None,
             processes=None) -> dict:
    """Generate a clip per prompt, batch by batch, and judge each against its prompt.

    Batch k (prompts k*batch_size ...) is generated with seed `seed + k`; with batch_size 1 a
    clip is made again by `vidgen generate PROMPT --seed SEED` with the same settings. Each clip
    is judged as read back from its MP4 (docs/shapes-world.md "When a clip obeys its prompt"), written into
    `clip_dir` (kept) or a temporary folder. Returns the report: `settings` (the given ones plus
    seed, batch_size, fps, prompt counts and the vidgen version), `groups` (see `summarize`) and
    `clips` (one record per clip, as `judge_prompt` gives it plus index, group, seed and file).
    `annotate(record)` adds to a clip's record on the process that made it. With `processes`
    (vidgen.distributed.Processes under a launcher) each process takes a contiguous share of the
    batches, and the records are gathered in index order: the same report as one process makes.
    """
    records = []
    batches = list(enumerate(_batches(prompts, batch_size)))
    mine = processes.share(batches) if processes is not None else batches
    with tempfile.TemporaryDirectory(prefix="vidgen-eval-") as scratch:
        folder = Path(clip_dir) if clip_dir is not None else Path(scratch)
        for k, batch in tqdm(mine, desc="eval shapes", unit="batch", disable=not progress):
            clips = _generate(generate_fn, [p.text for p in batch], seed + k)  # (b f h w 3)
            for j, (prompt, frames) in enumerate(zip(batch, clips)):
                index = k * batch_size + j
                path = _export(frames, folder, index, prompt, seed + k, fps, overwrite)
                records.append({"index": index, "group": prompt.group, "seed": seed + k,
                                "file": str(path) if clip_dir is not None else None,
                                **judge_prompt(path, prompt.text)})
                if annotate is not None:
                    annotate(records[-1])
    if processes is not None:
        records = sorted(processes.gather(records), key=lambda record: record["index"])
    counts = {group: sum(p.group == group for p in prompts) for group in GROUPS}
    settings = {**(settings or {}), "seed": seed, "batch_size": batch_size, "fps": fps, "prompts": counts,
                "vidgen_version": __version__}
    return {"settings": settings, "groups": summarize(records), "clips": records}


def evaluate_model(pipe, settings=None, n: int = 48, seed: int = 0, heldout: bool = False, batch_size: int = 8,
                   eta: float = 0.0, scheduler: str = "ddim", model_path: str | os.PathLike | None = None,
                   clip_dir: str | os.PathLike | None = None, progress: bool = True,
                   stages: Sequence[str] | None = None, overwrite: bool = False, processes=None) -> dict:
    """`evaluate` a VideoPipeline on `eval_prompts(n, seed, heldout)` with `settings` (a
    GenerationDefaults; None: the model's defaults) over `stages` (None: all the model has). The
    report's settings record what was used (vidgen.request.settings_record, as a clip's sidecar
    does) and `model_path`; `scheduler` names the one the pipeline was loaded with. Each clip's
    record also says whether the arrow check played it backwards. `processes`: as `evaluate`."""
    from .precision import autocast_dtype, autocast_name
    from .request import settings_record

    s = pipe.settings(stages, **dataclasses.asdict(settings)) if settings is not None else pipe.settings(stages)
    stages = list(pipe.model.stages) if stages is None else list(stages)
    size = pipe.output_size(s, stages)

    reversed_ = {}  # batch seed -> per clip of the batch: played backwards by the arrow check

    def generate_fn(texts: list[str], batch_seed: int) -> np.ndarray:
        out = pipe(texts, **dataclasses.asdict(s), eta=eta, seed=batch_seed, progress=False, stages=stages)
        reversed_[batch_seed] = list(out.reversed)
        return out.frames

    def annotate(record: dict) -> None:
        record["reversed"] = reversed_[record["seed"]][record["index"] % batch_size]

    precision = autocast_name(autocast_dtype(s.autocast, pipe.model.device))
    settings = {"model": None if model_path is None else str(model_path),
                **settings_record(s, stages, scheduler, eta, precision, size)}
    return evaluate(generate_fn, eval_prompts(n, seed, heldout), seed=seed, batch_size=batch_size, fps=size[3],
                    clip_dir=clip_dir, settings=settings, progress=progress, overwrite=overwrite, annotate=annotate,
                    processes=processes)


# --- the table ----------------------------------------------------------------------------------

def _cell(metric: dict) -> str:
    if metric["accuracy"] is None:
        return "-"
    return f"{100 * metric['accuracy']:5.1f}% ({metric['correct']}/{metric['scored']})"


def _median(travel: float | None) -> str:
    return "-" if travel is None else f"{100 * travel:+5.1f}% of the side (median)"


def format_table(report: dict) -> str:
    """Plain-text table: a row per metric (the five slots, steady, one_object, all), a column per
    group, each cell the accuracy in percent with correct/scored clips ('-' where none is scored);
    then the share of clips that moved the asked way at all and the median travel that way."""
    groups = report["groups"]
    rows = [["", *(f"{g} ({groups[g]['clips']} clips)" for g in groups)]]
    rows += [[m, *(_cell(groups[g]["metrics"][m]) for g in groups)] for m in METRICS]
    rows += [["asked way", *(_cell(groups[g]["travel"]["asked_way"]) for g in groups)],
             ["travel", *(_median(groups[g]["travel"]["median"]) for g in groups)]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
