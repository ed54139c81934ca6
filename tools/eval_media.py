"""Judge the media modes (docs/media.md) on the default shapes model with the shapes judge.

    nice -n 10 python tools/eval_media.py --parts image,video,extend,interpolate,upscale,long --n 8 \
        --out samples/media_eval.json

Every input is rendered from the shapes world (vidgen.data.shapes), so what a clip should show is
known exactly. Per part:
- image: the first frame of a rendered clip, animated under its full caption. Passes when the
  clip obeys the prompt (all slots, one steady object, straight motion the named way) and the
  first frame's object centre is within 5 % of the side of the picture's.
- video: a red clip (2 s, 24 fps) redrawn in another color at strength 0.6. Passes when the judge
  sees the new color and the object's centre stays within 8 % of the side of the input's, on
  average over the frames.
- extend: a rendered 1 s clip + 1 s. Passes when the input frames are kept, the whole clip obeys
  its caption (moving the same way) and its largest frame-to-frame jump of the centre is no larger
  than the input's (also reported with 1 px of slack).
- interpolate: a rendered 8 fps clip x3; upscale: a rendered 64 px clip to 128 px. Judged as the
  input was (obeys its caption; the input's own verdict recorded beside it).
- long: clips of --long-seconds from seen prompts: largest frame-to-frame jump, the judge's verdict
  on each 2 s stretch, seconds taken.
Records are written after every clip, so a cut-short run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from vidgen.data import judge
from vidgen.data.shapes import COLORS, caption, clip_rng, full_caption, render_clip, sample_scene
from vidgen.evaluation import judge_prompt
from vidgen.fs import write_text_atomic
from vidgen.media.inputs import Clip


SETTINGS: dict = {}  # --setting KEY=VALUE: GenerationDefaults fields for every sampling call


def centres(frames: np.ndarray) -> np.ndarray:
    """(f 2) object centre per frame in fractions of the side (NaN where no object), as the judge
    measures it."""
    f32 = frames.astype(np.float32)
    backgrounds = np.median(f32.reshape(len(f32), -1, 3), axis=1)
    _, blob = judge._find_object(f32, backgrounds)
    colors = judge._object_colors(f32, blob)
    m = judge._measure(judge._coverage(f32, backgrounds, colors, blob), colors, blob.any(axis=(1, 2)))
    return np.where(m.present[:, None], m.centres, np.nan)


def largest_jump(frames: np.ndarray) -> float:
    c = centres(frames)
    return float(np.nanmax(np.linalg.norm(np.diff(c, axis=0), axis=1)))


def scene(seed: int, i: int, **slots):
    s = sample_scene(clip_rng(seed, i), slots=slots or None)
    return s, full_caption(s.slots)


def verdict(frames: np.ndarray, prompt: str) -> dict:
    r = judge_prompt(frames, prompt)
    return {k: r[k] for k in ("obeys", "steady", "one_object", "saw", "failures", "travel")}


def part_image(pipe, i, seed, steps, candidates=None):
    s, prompt = scene(seed, i)
    picture = render_clip(s, 64, 48, indices=[0])[0]
    out = pipe(prompt, image=picture, seed=i, progress=False, num_inference_steps=steps, **SETTINGS,
               candidates=candidates).frames[0]
    offset = float(np.linalg.norm(centres(out[:1])[0] - centres(picture[None])[0]))
    v = verdict(out, prompt)
    return out, picture[None], {"prompt": prompt, **v, "first_frame_offset": offset,
                                "passes": bool(v["obeys"] and v["steady"] and offset <= 0.05)}


def animate_with_interp(pipe, picture: np.ndarray, prompt: str, seed: int) -> np.ndarray:
    """The other image-to-video option: the interpolation network's "animate" mask (only the first
    of 48 frames at 24 fps known; section 3.3), from noise, then super-resolution."""
    import dataclasses

    import torch

    from vidgen.media.frames import decode_frames, encode_frames, interpolate_window
    from vidgen.sampling_call import Call, new_generator

    model = pipe.model
    index, factor = model.index, model.index.interp.factor
    s = index.defaults
    call = Call(s, 0.0, new_generator(seed, None), False, None, model.device)
    cond, uncond = pipe._text([prompt], None)
    first = encode_frames(pipe, picture[None])  # (1 c 1 h w)
    total = s.num_frames * factor
    known = first.new_zeros(*first.shape[:2], total, *first.shape[3:])
    known[:, :, 0] = first[:, :, 0]
    mask = torch.zeros(total, dtype=torch.bool)
    mask[0] = True
    saved = index.interp
    index.interp = dataclasses.replace(saved, strength=1.0)  # nothing to blend from: from noise
    try:
        with torch.inference_mode():
            dense = interpolate_window(pipe, call, known, mask, s.fps * factor, factor, cond, uncond)
            return decode_frames(pipe, call, dense, s.fps * factor, cond, uncond, (128, 128))[0]
    finally:
        index.interp = saved


def part_image_animate(pipe, i, seed, steps):
    s, prompt = scene(seed, i)
    picture = render_clip(s, 64, 48, indices=[0])[0]
    out = animate_with_interp(pipe, picture, prompt, i)
    offset = float(np.linalg.norm(centres(out[:1])[0] - centres(picture[None])[0]))
    v = verdict(out, prompt)
    return out, picture[None], {"prompt": prompt, **v, "first_frame_offset": offset,
                                "passes": bool(v["obeys"] and v["steady"] and offset <= 0.05)}


def part_video(pipe, i, seed, steps):
    s, _ = scene(seed, i, color="red")
    frames = render_clip(s, 64, 48)
    color = [c for c in COLORS if c != "red"][i % 5]
    prompt = caption(color, s.shape, s.direction, s.size, s.background)
    out = pipe(prompt, video=Clip(frames, 24.0, "<rendered>", {}), strength=0.6, seed=i, progress=False,
               num_inference_steps=steps, **SETTINGS).frames[0]
    n = min(len(out), len(frames))
    distance = np.linalg.norm(centres(out[:n]) - centres(frames[:n]), axis=1)
    v = verdict(out, prompt)
    mean = float(np.nanmean(distance)) if np.isfinite(distance).any() else 1.0
    return out, frames, {"prompt": prompt, **v, "centre_distance_mean": mean,
                         "centre_distance_max": float(np.nanmax(distance)) if np.isfinite(distance).any() else 1.0,
                         "passes": bool(v["saw"]["color"] == color and mean <= 0.08)}


def part_extend(pipe, i, seed, steps):
    s, prompt = scene(seed, i)
    frames = render_clip(s, 64, 48, indices=range(24))  # the first second of a 2 s clip
    out = pipe.extend(Clip(frames, 24.0, "<rendered>", {}), prompt=prompt, seconds=1.0, seed=i, progress=False,
                      num_inference_steps=steps, **SETTINGS).frames[0]
    kept = bool(np.array_equal(out[:24], frames))
    jump, jump_in = largest_jump(out), largest_jump(frames)
    v = verdict(out, prompt)
    return out, frames, {"prompt": prompt, **v, "kept": kept, "largest_jump": jump, "input_largest_jump": jump_in,
                         "seam_jump": largest_jump(out[22:27]),
                         "passes": bool(kept and v["obeys"] and jump <= jump_in),
                         "passes_1px": bool(kept and v["obeys"] and jump <= jump_in + 1 / 64)}


def part_interpolate(pipe, i, seed, steps):
    s, prompt = scene(seed, i)
    frames = render_clip(s, 64, 46, indices=range(0, 46, 3))  # 16 frames at 8 fps
    out = pipe.interpolate(Clip(frames, 8.0, "<rendered>", {}), factor=3, prompt=prompt, seed=i,
                           progress=False).frames[0]
    v = verdict(out, prompt)
    return out, frames, {"prompt": prompt, **v, "input_obeys": verdict(frames, prompt)["obeys"],
                         "kept": bool(np.array_equal(out[::3], frames)), "largest_jump": largest_jump(out),
                         "passes": bool(v["obeys"])}


def part_upscale(pipe, i, seed, steps):
    s, prompt = scene(seed, i)
    frames = render_clip(s, 64, 48)
    out = pipe.upscale(Clip(frames, 24.0, "<rendered>", {}), prompt=prompt, seed=i, progress=False).frames[0]
    v = verdict(out, prompt)
    return out, frames, {"prompt": prompt, **v, "input_obeys": verdict(frames, prompt)["obeys"],
                         "size": list(out.shape[1:3]), "passes": bool(v["obeys"])}


def part_long(pipe, i, seed, steps, seconds):
    s, prompt = scene(seed, i)
    prompt = caption(s.color, s.shape, s.direction)
    started = time.perf_counter()
    out = pipe(prompt, seconds=seconds, seed=i, progress=False, num_inference_steps=steps, **SETTINGS).frames[0]
    took = time.perf_counter() - started
    stretches = [verdict(out[a:a + 48], prompt) for a in range(0, len(out) - 47, 48)]
    jumps = np.linalg.norm(np.diff(centres(out), axis=0), axis=1)
    return out, None, {"prompt": prompt, "seconds": seconds, "frames": len(out), "took_s": took,
                       "largest_jump": float(np.nanmax(jumps)), "median_jump": float(np.nanmedian(jumps)),
                       "frames_without_object": int(np.isnan(centres(out)[:, 0]).sum()),
                       "stretches_obeying": sum(r["obeys"] for r in stretches), "stretches": len(stretches),
                       "stretches_steady": sum(r["steady"] for r in stretches)}


PARTS = {"image": part_image, "image_animate": part_image_animate, "video": part_video, "extend": part_extend, "interpolate": part_interpolate,
         "upscale": part_upscale}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="image,video,extend,interpolate,upscale,long")
    parser.add_argument("--model", help="vidgen model folder (default: the embedded shapes model)")
    parser.add_argument("--n", type=int, default=8, help="clips per part")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (clip i is scene i of this seed)")
    parser.add_argument("--steps", type=int, help="base-stage steps (default: the model's)")
    parser.add_argument("--long-seconds", default="6,20")
    parser.add_argument("--candidates", type=int, help="image part: base-stage candidates (default: the model's)")
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                        help="a generation setting for every call (e.g. continue_strength=0.6); repeatable")
    parser.add_argument("--out", default="samples/media_eval.json")
    parser.add_argument("--keep", help="folder to write each output (and input) as .npy for the samples")
    args = parser.parse_args()

    for item in args.setting:
        key, _, value = item.partition("=")
        SETTINGS[key] = json.loads(value)
    from vidgen.packaged import default_model
    from vidgen.pipeline import VideoPipeline

    pipe = VideoPipeline.from_pretrained(args.model or default_model())
    out_path = Path(args.out)
    report = json.loads(out_path.read_text()) if out_path.is_file() else {}
    report["machine"] = f"{platform.processor() or platform.machine()}, {sys.platform}"
    for part in args.parts.split(","):
        records = report[part] = report.get(part, [])  # a run resumed: the clips judged before kept
        runs = ([(i, float(sec)) for i, sec in enumerate(args.long_seconds.split(","))] if part == "long"
                else [(i, None) for i in range(args.n)])[len(records):]
        for i, seconds in runs:
            started = time.perf_counter()
            fn = PARTS.get(part)
            try:
                out, given, record = (part_long(pipe, i, args.seed, args.steps, seconds) if part == "long"
                                      else part_image(pipe, i, args.seed, args.steps, args.candidates)
                                      if part == "image" else fn(pipe, i, args.seed, args.steps))
            except Exception as exc:  # recorded, and the next clip tried
                out, given, record = None, None, {"error": f"{type(exc).__name__}: {exc}"}
            record["took_s"] = record.get("took_s", time.perf_counter() - started)
            records.append(record)
            if args.keep and out is not None:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                np.save(Path(args.keep) / f"{part}_{i}_out.npy", out)
                if given is not None:
                    np.save(Path(args.keep) / f"{part}_{i}_in.npy", given)
            summary = {k: sum(bool(r.get(k)) for r in records) for k in ("passes", "passes_1px", "obeys") if
                       any(k in r for r in records)}
            report[f"{part}_summary"] = {"clips": len(records), **summary}
            write_text_atomic(out_path, json.dumps(report, indent=1, default=str) + "\n")
            print(part, i, {k: record[k] for k in record if k not in ("saw", "failures")}, flush=True)


if __name__ == "__main__":
    main()
