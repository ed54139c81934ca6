"""`vidgen eval shapes` (vidgen.evaluation): prompts over the shapes world, clips judged against them
(docs/shapes-world.md "When a clip obeys its prompt"), accuracies per slot for seen and held-out triples."""

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest

from vidgen.cli import main
from vidgen.data.reader import read_frames
from vidgen.data.shapes import COLORS, HELDOUT, SLOTS, TRIPLE, parse_prompt, render_clip, sample_scene
from vidgen.evaluation import (METRICS, EvalPrompt, eval_prompts, evaluate, format_table, judge_prompt,
                               summarize)

SIZE, FRAMES = 64, 16  # renders the judge tells right at crf 18 (tests/test_shapes.py)
N = 6  # prompts per group


def other_color(color: str) -> str:
    colors = list(COLORS)
    return colors[(colors.index(color) + 1) % len(colors)]


def unsteady(clip, frames: np.ndarray) -> np.ndarray:
    """The clip with its last 3 frames in another color: a jump the judge sees, too short to move
    the median color."""
    frames[-3:] = render_clip(replace(clip, color=other_color(clip.color)), SIZE, FRAMES)[-3:]
    return frames


SPOILERS = {  # how a clip is made wrong: (Scene, its right frames) -> frames
    "color": lambda clip, frames: render_clip(replace(clip, color=other_color(clip.color)), SIZE, FRAMES),
    "direction": lambda clip, frames: frames[::-1],  # the same path, backwards
    "static": lambda clip, frames: render_clip(replace(clip, travel=0.0), SIZE, FRAMES),
    "unsteady": unsteady,
}


def renderer(spoil: dict[int, str] | None = None):
    """A generate_fn rendering each prompt's clip, except the clips whose running index `spoil`
    maps to a SPOILERS key."""
    made = itertools.count()

    def generate_fn(texts, seed):
        clips = []
        for j, text in enumerate(texts):
            clip = sample_scene(np.random.default_rng([seed, j]), slots=parse_prompt(text))
            frames = render_clip(clip, SIZE, FRAMES)
            how = (spoil or {}).get(next(made))
            clips.append(SPOILERS[how](clip, frames) if how else frames)
        return np.stack(clips)  # (b f h w 3)

    return generate_fn


def named(prompts, group, slot) -> int:
    return sum(parse_prompt(p.text)[slot] is not None for p in prompts if p.group == group)


def accuracies(report, group) -> dict:
    return {m: (v["correct"], v["scored"]) for m, v in report["groups"][group]["metrics"].items()}


@pytest.fixture(scope="module")
def prompts():
    return eval_prompts(N, seed=0, heldout=True)


# --- prompts ------------------------------------------------------------------------------------

def test_prompts_cover_the_vocabulary_in_full_and_short_forms():
    seen = eval_prompts(66, seed=1)
    slots = [parse_prompt(p.text) for p in seen]
    triples = {tuple(s[slot] for slot in TRIPLE) for s in slots}
    assert len(seen) == 66 and {p.group for p in seen} == {"seen"}
    assert len(triples) == 66 and not triples & set(HELDOUT)  # every seen triple once, none held out
    for slot in ("size", "background"):
        assert 0.3 < np.mean([s[slot] is not None for s in slots]) < 0.7  # named about half the time

    both = eval_prompts(8, seed=1, heldout=True)
    assert both[:8] == eval_prompts(8, seed=1)  # adding the held-out group leaves the seen prompts be
    held = [tuple(parse_prompt(p.text)[slot] for slot in TRIPLE) for p in both[8:]]
    assert {p.group for p in both[8:]} == {"heldout"} and held == [*HELDOUT, *HELDOUT[:2]]  # cycled
    assert eval_prompts(8, seed=1, heldout=True) == both and eval_prompts(8, seed=2) != both[:8]


def test_judge_prompt_scores_only_the_slots_a_prompt_names():
    clip = sample_scene(np.random.default_rng(0), slots=parse_prompt("a small red circle moving left"))
    record = judge_prompt(render_clip(clip, SIZE, FRAMES), "a small red circle moving left")
    assert record["asked"] == {"size": "small", "color": "red", "shape": "circle", "direction": "left"}
    assert record["correct"] == dict.fromkeys(record["asked"], True)
    assert set(record["saw"]) == set(SLOTS) and record["saw"]["background"] == clip.background
    assert record["obeys"] and record["steady"] and record["one_object"] and record["failures"] == []


# --- accuracy comes from the clips --------------------------------------------------------------

def test_right_clips_score_every_slot_in_full(prompts, tmp_path):
    report = evaluate(renderer(), prompts, seed=5, batch_size=4, clip_dir=tmp_path, settings={"model": "renders"},
                      progress=False)
    assert set(report) == {"settings", "groups", "clips"}
    assert report["settings"] | {"vidgen_version": None} == {
        "model": "renders", "seed": 5, "batch_size": 4, "fps": 24.0, "prompts": {"seen": N, "heldout": N},
        "vidgen_version": None}
    for group in ("seen", "heldout"):
        assert report["groups"][group]["clips"] == N and set(report["groups"][group]["metrics"]) == set(METRICS)
        scored = {m: N for m in METRICS} | {s: named(prompts, group, s) for s in ("size", "background")}
        assert accuracies(report, group) == {m: (n, n) for m, n in scored.items()}
        assert all(v["accuracy"] == (1.0 if v["scored"] else None) for v in report["groups"][group]["metrics"].values())

    clips = report["clips"]
    assert [c["prompt"] for c in clips] == [p.text for p in prompts]
    assert [c["seed"] for c in clips] == [5 + i // 4 for i in range(2 * N)]  # batch k: seed + k
    assert [c["group"] for c in clips] == ["seen"] * N + ["heldout"] * N
    assert all(c["obeys"] and c["failures"] == [] for c in clips)
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == [f"{c['index']:04d}_{c['group']}.mp4" for c in clips]
    assert all((tmp_path / f"{c['index']:04d}_{c['group']}.mp4.json").is_file() for c in clips)  # sidecars: vidgen's
    assert clips[0]["file"] == str(tmp_path / "0000_seen.mp4")
    json.dumps(report)  # all of it is JSON


def test_wrong_clips_lower_their_slot_by_exactly_their_number(prompts):
    spoil = {1: "color", 2: "direction", 4: "static", N + 3: "unsteady", N + 5: "color"}
    report = evaluate(renderer(spoil), prompts, batch_size=5, progress=False)
    seen, heldout = accuracies(report, "seen"), accuracies(report, "heldout")
    assert {m: seen[m] for m in ("color", "shape", "direction", "steady", "one_object", "all")} == {
        "color": (N - 1, N), "shape": (N, N), "direction": (N - 2, N), "steady": (N, N), "one_object": (N, N),
        "all": (N - 3, N)}
    assert {m: heldout[m] for m in ("color", "direction", "steady", "all")} == {
        "color": (N - 1, N), "direction": (N, N), "steady": (N - 1, N), "all": (N - 2, N)}
    failures = {c["index"]: " ".join(c["failures"]) for c in report["clips"] if not c["obeys"]}
    assert set(failures) == set(spoil)
    assert "color: asked" in failures[1] and "direction: asked" in failures[2]
    assert "no straight motion" in failures[4] and "color jumps" in failures[N + 3]


def test_travel_is_measured_along_the_asked_direction_from_the_clips(prompts):
    seen = [p for p in prompts if p.group == "seen"]
    right = evaluate(renderer(), seen, progress=False)
    # The first quarter of the frames to the last covers about 3/4 of the clip's 30-45 % of the side.
    assert all(0.15 < c["travel"] < 0.45 for c in right["clips"])
    for c in right["clips"]:
        dx, dy = c["displacement"]
        assert c["travel"] == pytest.approx(max(abs(dx), abs(dy)))  # all of it along the asked axis
    backwards = evaluate(renderer({0: "direction"}), seen, progress=False)
    assert backwards["clips"][0]["travel"] == pytest.approx(-right["clips"][0]["travel"], abs=0.02)
    static = evaluate(renderer({0: "static"}), seen, progress=False)
    assert abs(static["clips"][0]["travel"]) < 0.02
    assert backwards["groups"]["seen"]["travel"]["asked_way"] == {"accuracy": (N - 1) / N, "correct": N - 1, "scored": N}
    assert right["groups"]["seen"]["travel"]["median"] == pytest.approx(np.median([c["travel"] for c in right["clips"]]))
    table = {line.split()[0]: line for line in format_table(backwards).splitlines()[1:]}
    assert f"({N - 1}/{N})" in table["asked"] and "of the side (median)" in table["travel"]


def test_size_and_background_are_scored_only_where_named_and_the_table_shows_it():
    prompts = [EvalPrompt("a red circle moving left", "seen"), EvalPrompt("a blue square moving up", "seen")]
    report = evaluate(renderer({1: "direction"}), prompts, progress=False)
    assert "heldout" not in report["groups"]  # only the groups asked for
    metrics = report["groups"]["seen"]["metrics"]
    assert metrics["size"] == metrics["background"] == {"accuracy": None, "correct": 0, "scored": 0}
    table = format_table(report).splitlines()
    assert table[0].split() == ["seen", "(2", "clips)"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:]}
    assert list(rows) == [*METRICS, "asked", "travel"]
    assert rows["size"] == ["-"] and rows["color"] == ["100.0%", "(2/2)"] and rows["direction"] == ["50.0%", "(1/2)"]


def test_summarize_and_generate_fn_mistakes():
    assert summarize([]) == {}
    with pytest.raises(ValueError, match=r"uint8 clips \(b=2"):
        evaluate(lambda texts, seed: np.zeros((1, 4, 8, 8, 3), np.uint8), eval_prompts(2), progress=False)
    with pytest.raises(ValueError, match="at least 1"):
        eval_prompts(0)


# --- the CLI ------------------------------------------------------------------------------------

def test_eval_shapes_end_to_end_on_a_tiny_random_model(video_model, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["eval", "shapes", "--model", str(video_model), "--n", "2", "--heldout", "--steps", "2",
                 "--frames", "4", "--batch-size", "3", "--seed", "1", "-o", str(out), "--save-clips",
                 str(tmp_path / "clips"), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert {k: report["settings"][k] for k in ("model", "steps", "frames", "height", "width", "seed", "batch_size",
                                                "prompts")} == {
        "model": str(video_model), "steps": 2, "frames": 4, "height": 32, "width": 32, "seed": 1, "batch_size": 3,
        "prompts": {"seen": 2, "heldout": 2}}
    assert report["settings"]["guidance"] == 7.5 and "vidgen_version" in report["settings"]
    assert (report["settings"]["scheduler"], report["settings"]["eta"]) == ("ddim", 0.0)
    assert report["settings"]["stages"] == ["base"] and report["settings"]["keyframes"] == 4
    assert [report["groups"][g]["clips"] for g in ("seen", "heldout")] == [2, 2]
    assert len(report["clips"]) == 4 and len(list((tmp_path / "clips").glob("*.mp4"))) == 4
    assert all(not c["obeys"] and c["failures"] for c in report["clips"])  # noise obeys no prompt
    assert report["settings"]["arrow_check"] is False and not any(c["reversed"] for c in report["clips"])
    printed = capsys.readouterr().out
    assert "seen (2 clips)" in printed and "heldout (2 clips)" in printed and "all" in printed
    assert f"wrote {out}" in printed


def test_eval_shapes_samples_with_the_scheduler_eta_and_precision_it_is_given(video_model, tmp_path, capsys):
    def clips(*flags):
        out = tmp_path / "-".join(flags or ("plain",))
        assert main(["eval", "shapes", "--model", str(video_model), "--n", "1", "--steps", "3", "--frames", "4",
                     "-o", str(out / "r.json"), "--save-clips", str(out), "--no-progress", *flags]) == 0
        return json.loads((out / "r.json").read_text())["settings"], read_frames(next(out.glob("*.mp4")))

    plain_settings, plain = clips()
    settings, stochastic = clips("--eta", "1")
    assert settings["eta"] == 1.0 and not np.array_equal(stochastic, plain)  # fresh noise at every step
    settings, euler = clips("--scheduler", "euler")
    assert settings["scheduler"] == "euler" and not np.array_equal(euler, plain)
    assert plain_settings["autocast"] == "float32"
    settings, fast = clips("--autocast", "bfloat16")
    assert settings["autocast"] == "bfloat16" and not np.array_equal(fast, plain)
    assert "euler 3 steps, eta 0" in capsys.readouterr().out
    assert main(["eval", "shapes", "--model", str(video_model), "--n", "1", "--scheduler", "euler", "--eta", "1",
                 "-o", str(tmp_path / "x.json")]) == 2
    assert "eta=1.0 is a DDIM setting" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_eval_shapes_says_what_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("vidgen.packaged.DEFAULT_MODEL", tmp_path / "no-default-model")
    assert main(["eval", "shapes", "-o", str(tmp_path / "r.json")]) == 2
    assert "no embedded default model" in capsys.readouterr().err and not (tmp_path / "r.json").exists()
    assert main(["eval", "shapes", "--model", "x", "--n", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err
