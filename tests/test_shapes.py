"""The shapes world (docs/shapes-world.md): corpus, captions, prompts, the judge, and `vidgen data shapes`."""

import hashlib
import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from vidgen.cli import main
from vidgen.config import load_config
from vidgen.data.judge import judge_clip, label_components
from vidgen.data.reader import probe_video, read_frames
from vidgen.data.shapes import (BACKGROUNDS, COLORS, DIRECTIONS, HELDOUT, SHAPES, SIZES, SLOTS, TRAVEL, VOCABULARY,
                                Scene, PromptError, ShapesConfig, ShapesFrameDataset, corpus_scene, full_caption,
                                make_corpus, parse_prompt, render_clip, sample_scene)
from vidgen.video_io import save_video

JUDGED_CRF = 18  # save_video's default: the quality generated samples are written with


def corpus_files(folder) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_records(manifest) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def triple(slots: dict) -> tuple[str, str, str]:
    return slots["color"], slots["shape"], slots["direction"]


def centred(color="red", shape="square", size="small", direction="right", background="black",
            half=0.115, travel=0.35, y=0.5) -> Scene:
    """A clip whose path is centred in the frame (at height y for left/right motion)."""
    ux, uy = DIRECTIONS[direction]
    start = (0.5 - ux * travel / 2, (y if uy == 0 else 0.5) - uy * travel / 2)
    return Scene(color, shape, size, direction, background, half, start, travel)


def judged(frames: np.ndarray, tmp_path, name="clip"):
    """Judge frames the way a generated clip is judged: written to MP4, read back."""
    return judge_clip(save_video(frames, tmp_path / f"{name}.mp4", fps=24, crf=JUDGED_CRF, sidecar=False,
                                 overwrite=True))  # a scratch file, written again and again


# --- the corpus ---------------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_other_clips(tmp_path):
    cfg = ShapesConfig(videos=4, size=32, frames=8)
    make_corpus(tmp_path / "a", cfg, progress=False)
    make_corpus(tmp_path / "b", cfg, progress=False)
    make_corpus(tmp_path / "c", replace(cfg, seed=1), progress=False)
    a, b, c = (corpus_files(tmp_path / name) for name in "abc")
    assert set(a) == {"manifest.jsonl", "config.yaml"} | {f"clips/{i:05d}.mp4" for i in range(4)}
    assert a == b
    assert a["manifest.jsonl"] != c["manifest.jsonl"]
    assert all(a[f"clips/{i:05d}.mp4"] != c[f"clips/{i:05d}.mp4"] for i in range(4))


def test_a_clip_does_not_depend_on_how_many_are_rendered(tmp_path):
    make_corpus(tmp_path / "short", ShapesConfig(videos=2, size=32, frames=8), progress=False)
    make_corpus(tmp_path / "long", ShapesConfig(videos=3, size=32, frames=8), progress=False)
    short, long = corpus_files(tmp_path / "short"), corpus_files(tmp_path / "long")
    assert all(short[f"clips/{i:05d}.mp4"] == long[f"clips/{i:05d}.mp4"] for i in range(2))


def test_manifest_describes_each_clip(tmp_path):
    cfg = ShapesConfig(videos=3, size=48, frames=12, fps=12)
    manifest = make_corpus(tmp_path, cfg, progress=False)
    assert load_config(ShapesConfig, tmp_path / "config.yaml") == cfg
    for record in read_records(manifest):
        assert set(record) == {"path", "frames", "fps", "duration", "width", "height", "caption", "full_caption",
                               "slots", "motion"}
        info = probe_video(tmp_path / record["path"])
        assert (info.num_frames, info.fps, info.width, info.height) == (12, 12.0, 48, 48)
        assert (record["frames"], record["fps"], record["duration"], record["width"], record["height"]) == (
            12, 12.0, 1.0, 48, 48)
        slots = record["slots"]
        assert set(slots) == set(SLOTS) and all(slots[slot] in VOCABULARY[slot] for slot in SLOTS)
        assert record["full_caption"] == full_caption(slots)
        motion = record["motion"]
        assert SIZES[slots["size"]][0] <= motion["half_extent"] <= SIZES[slots["size"]][1]
        travel = np.hypot(*motion["velocity"]) * (cfg.frames - 1)
        assert TRAVEL[0] <= travel <= TRAVEL[1]
        clip = corpus_scene(cfg, int(record["path"][6:11]))[0]
        decoded = read_frames(tmp_path / record["path"]).astype(int)
        assert np.abs(decoded - render_clip(clip, cfg.size, cfg.frames)).mean() < 2  # crf keeps frames clean


def test_heldout_triples_excluded_by_default_and_kept_when_asked(tmp_path):
    heldout = set(HELDOUT)
    default = ShapesConfig(videos=2000)
    assert not any(triple(corpus_scene(default, i)[0].slots) in heldout for i in range(2000))
    kept = {triple(corpus_scene(replace(default, exclude_heldout=False), i)[0].slots) for i in range(2000)}
    assert heldout <= kept
    small = dict(videos=120, size=16, frames=2)
    excluded = read_records(make_corpus(tmp_path / "x", ShapesConfig(**small), progress=False))
    included = read_records(make_corpus(tmp_path / "k", ShapesConfig(**small, exclude_heldout=False), progress=False))
    assert not any(triple(r["slots"]) in heldout for r in excluded)
    assert any(triple(r["slots"]) in heldout for r in included)


def test_heldout_list_comes_from_the_config():
    cfg = ShapesConfig(heldout=[["red", "circle", "left"]])
    assert all(triple(corpus_scene(cfg, i)[0].slots) != ("red", "circle", "left") for i in range(1000))
    assert any(triple(corpus_scene(cfg, i)[0].slots) == ("red", "triangle", "up") for i in range(1000))


@pytest.mark.parametrize("drop", [0.0, 0.3, 0.5, 1.0])
def test_caption_drops_size_and_background_at_the_configured_rate(drop):
    n = 2000
    captions = [corpus_scene(ShapesConfig(caption_drop=drop), i) for i in range(n)]
    named = [parse_prompt(text) for _, text in captions]
    for (clip, _), slots in zip(captions, named):
        assert {slot: word for slot, word in slots.items() if word} == {
            slot: word for slot, word in clip.slots.items() if slots[slot]}  # what it names is right
    sized = np.array([slots["size"] is not None for slots in named])
    backed = np.array([slots["background"] is not None for slots in named])
    for kept in (sized, backed):
        assert abs((1 - kept.mean()) - drop) < 0.04
    assert abs((~sized & ~backed).mean() - drop * drop) < 0.04  # dropped independently


# --- prompts ------------------------------------------------------------------------------------

def test_parse_full_and_short_prompts():
    assert parse_prompt("a small red circle moving left on a black background") == {
        "color": "red", "shape": "circle", "size": "small", "direction": "left", "background": "black"}
    assert parse_prompt("a red circle moving left") == {
        "color": "red", "shape": "circle", "size": None, "direction": "left", "background": None}
    assert parse_prompt("  A Large blue triangle moving up.") == {
        "color": "blue", "shape": "triangle", "size": "large", "direction": "up", "background": None}
    assert parse_prompt("a cyan square moving down on a gray background")["background"] == "gray"
    for values in itertools.product(*(VOCABULARY[slot] for slot in SLOTS)):
        slots = dict(zip(SLOTS, values))
        assert parse_prompt(full_caption(slots)) == slots


@pytest.mark.parametrize("prompt, named", [
    ("a purple circle moving left", "'purple'"),
    ("a red hexagon moving left", "'hexagon'"),
    ("a red circle moving sideways", "'sideways'"),
    ("a red circle moving left on a white background", "'white'"),
])
def test_unknown_words_are_named(prompt, named):
    with pytest.raises(ValueError, match=named) as err:
        parse_prompt(prompt)
    assert isinstance(err.value, PromptError) and "red, yellow" in str(err.value)


@pytest.mark.parametrize("prompt", ["a circle red moving left", "a red circle", "red circle moving left", ""])
def test_words_out_of_order_show_the_grammar(prompt):
    with pytest.raises(PromptError, match=r"does not read 'a \[size\] \{color\}"):
        parse_prompt(prompt)


def test_sample_scene_keeps_the_slots_a_prompt_fixes():
    for i in range(50):
        clip = sample_scene(np.random.default_rng(i), slots=parse_prompt("a green circle moving left"))
        assert triple(clip.slots) == ("green", "circle", "left")
    with pytest.raises(ValueError, match="held out"):
        sample_scene(np.random.default_rng(0), frozenset(HELDOUT), slots=parse_prompt("a red triangle moving up"))
    with pytest.raises(ValueError, match="color='purple'"):
        sample_scene(np.random.default_rng(0), slots={"color": "purple"})


# --- the judge gets renders right ---------------------------------------------------------------

def covering_clips(n: int, seed: int) -> list[Scene]:
    """n clips that take every (color, shape) pair in turn; the other slots and the motion at random."""
    pairs = list(itertools.product(COLORS, SHAPES))
    return [sample_scene(np.random.default_rng([seed, i]), slots=dict(zip(("color", "shape"), pairs[i % len(pairs)])))
            for i in range(n)]


@pytest.mark.parametrize("size, frames, n", [(64, 48, 72), (64, 16, 36), (128, 48, 6), (128, 16, 12)])
def test_judge_gets_every_rendered_clip_right(tmp_path, size, frames, n):
    clips = covering_clips(n, seed=size + frames)
    if size == 64:
        assert all({getattr(c, slot) for c in clips} == set(VOCABULARY[slot]) for slot in SLOTS)
    wrong = {}
    for i, clip in enumerate(clips):
        judgement = judged(render_clip(clip, size, frames), tmp_path, f"{i}")
        if not (judgement.obeys(clip.slots) and judgement.one_object and judgement.steady):
            wrong[full_caption(clip.slots)] = judgement
    assert not wrong, wrong


@pytest.mark.parametrize("half", [SIZES["small"][0], SIZES["small"][1], SIZES["large"][0], SIZES["large"][1]])
def test_judge_at_the_ends_of_the_size_ranges(tmp_path, half):
    size = "small" if half <= SIZES["small"][1] else "large"
    for shape, direction, background in zip(SHAPES, ("left", "up", "down"), ("gray", "black", "gray")):
        clip = centred("magenta", shape, size, direction, background, half=half, travel=TRAVEL[0])
        judgement = judged(render_clip(clip, 64, 16), tmp_path)
        assert judgement.obeys(clip.slots), judgement


def test_judge_reports_its_measurements(tmp_path):
    clip = centred("yellow", "circle", "large", "down", "gray", half=0.18, travel=0.4)
    judgement = judged(render_clip(clip, 64, 48), tmp_path)
    assert judgement.fill == pytest.approx(np.pi / 4, abs=0.03)
    assert judgement.half_extent == pytest.approx(0.18, abs=0.005)
    dx, dy = judgement.displacement
    assert abs(dx) < 0.01 and dy == pytest.approx(0.4 * 36 / 47, abs=0.01)  # quarters' mean frames: 5.5 and 41.5
    assert len(judgement.areas) == 48 and np.ptp(judgement.areas) < 0.005
    assert judgement.background_rgb == pytest.approx((128, 128, 128), abs=2)


# --- the judge catches clips that break a rule --------------------------------------------------

def with_second_half(first: Scene, second: Scene, frames: int = 48) -> np.ndarray:
    """The first half of `first`'s frames, then the second half of `second`'s."""
    video = render_clip(first, 64, frames)
    video[frames // 2:] = render_clip(second, 64, frames)[frames // 2:]
    return video


def with_gap(clip: Scene, gap: slice) -> np.ndarray:
    video = render_clip(clip, 64, 48)
    video[gap] = BACKGROUNDS[clip.background]
    return video


def with_second_object(clip: Scene, other: Scene) -> np.ndarray:
    video, extra = render_clip(clip, 64, 48), render_clip(other, 64, 48)
    return np.where((extra != BACKGROUNDS[other.background]).any(-1, keepdims=True), extra, video)


def drifting_down(clip: Scene, pixels_per_frame: int) -> np.ndarray:
    """The clip with its frames shifted down a little more each frame: diagonal motion."""
    video = render_clip(clip, 64, 48)
    return np.stack([np.roll(frame, i * pixels_per_frame // 4, axis=0) for i, frame in enumerate(video)])


BASE = centred("red", "square", "small", "right", "black", y=0.3)
BROKEN = {  # case: (frames of a clip that breaks a rule, the reason the judge gives, the verdict it fails)
    "static": (lambda: render_clip(replace(BASE, travel=0.0), 64, 48), "no straight motion", "direction"),
    "diagonal": (lambda: drifting_down(BASE, 1), "no straight motion", "direction"),
    "vanishes": (lambda: with_gap(BASE, slice(10, 18)), "no object in frames 10-17", "one_object"),
    "two objects": (lambda: with_second_object(BASE, centred("red", "circle", "small", "right", "black", y=0.75)),
                    "more than one object in frames 0-47", "one_object"),
    "color jumps": (lambda: with_second_half(BASE, replace(BASE, color="blue")), "color jumps between frames 23-24",
                    "steady"),
    "area jumps": (lambda: with_second_half(BASE, replace(BASE, size="large", half=0.18)),
                   "area jumps between frames 23-24", "steady"),
    "shape jumps": (lambda: with_second_half(BASE, replace(BASE, shape="triangle")),
                    "shape jumps between frames 23-24", "steady"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_judge_catches_each_broken_rule(tmp_path, case):
    make_video, reason, rule = BROKEN[case]
    judgement = judged(make_video(), tmp_path)
    prompt = full_caption(BASE.slots)
    assert not judgement.obeys(prompt)
    assert any(reason in text for text in judgement.failures(prompt)), judgement.failures(prompt)
    if rule == "direction":
        assert judgement.direction is None and judgement.one_object and judgement.steady
    else:
        assert not getattr(judgement, rule)


def test_judge_checks_each_slot_against_the_prompt(tmp_path):
    judgement = judged(render_clip(BASE, 64, 48), tmp_path)
    assert judgement.obeys("a red square moving right") and judgement.obeys(full_caption(BASE.slots))
    assert judgement.check("a large blue square moving right on a gray background") == {
        "color": False, "shape": True, "size": False, "direction": True, "background": False}
    assert judgement.failures("a blue square moving right") == ["color: asked blue, saw red"]
    assert not judgement.obeys("a red circle moving left")


def test_blank_clip_has_no_object():
    judgement = judge_clip(np.full((8, 32, 32, 3), 128, np.uint8))
    assert (judgement.background, judgement.color, judgement.one_object) == ("gray", None, False)
    assert judgement.reasons == ["no object in frames 0-7"]


def test_label_components_counts_8_connected_blobs():
    mask = np.zeros((2, 6, 6), bool)
    mask[0, 0, 0] = mask[0, 1, 1] = True  # diagonal neighbours: one blob
    mask[0, 4:, 4:] = True
    mask[1, :, 2] = True
    labels = label_components(mask)
    assert [len(np.unique(labels[f][mask[f]])) for f in range(2)] == [2, 1]
    assert (labels[~mask] == -1).all()


# --- the command line and the frame dataset -----------------------------------------------------

def test_cli_renders_a_corpus_with_overrides(tmp_path, capsys):
    out = tmp_path / "corpus"
    assert main(["data", "shapes", "--out", str(out), "--videos", "2", "--size", "32", "--no-progress",
                 "frames=4", "caption_drop=0.0"]) == 0
    records = read_records(out / "manifest.jsonl")
    assert [(r["frames"], r["width"], r["caption"] == r["full_caption"]) for r in records] == [(4, 32, True)] * 2
    assert "rendered 2 clips" in capsys.readouterr().out


@pytest.mark.parametrize("override, key", [("colour=red", "colour"), ("caption_drop=1.5", "caption_drop"),
                                           ("heldout=[[red,hexagon,up]]", "heldout")])
def test_cli_bad_config_exits_2_naming_the_key(tmp_path, capsys, override, key):
    assert main(["data", "shapes", "--out", str(tmp_path), "--videos", "1", "--no-progress", override]) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "manifest.jsonl").exists()


def test_frame_dataset_renders_corpus_frames_with_captions():
    cfg = ShapesConfig(videos=3, size=32, frames=4)
    dataset = ShapesFrameDataset(cfg)
    assert len(dataset) == 12
    item = dataset[6]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() < item["image"].max() <= 1.0
    clip, text = corpus_scene(cfg, 1)
    assert item["caption"] == text
    expected = torch.from_numpy(render_clip(clip, 32, 4)[2]).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(item["image"], expected)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=5)))
    assert batch["image"].shape == (5, 3, 32, 32) and len(batch["caption"]) == 5
    with pytest.raises(IndexError):
        dataset[12]
