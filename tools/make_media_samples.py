"""Make samples/media/: one example of each media mode of the default model (docs/media.md), each
written by the `vidgen` command listed in samples/README.md, then shown beside its input as a GIF.

    nice -n 10 python tools/make_media_samples.py            # into samples/media/
    python tools/make_media_samples.py --only extend,upscale

Inputs are rendered from the shapes world (vidgen.data.shapes), so what they show is known.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

PICTURE_PROMPT = "a large yellow square moving right on a gray background"
RED_PROMPT = "a large red circle moving down on a black background"
COMMANDS = {  # name -> (input shown beside it, vidgen arguments)
    "image-to-video": ("in-picture.png", ["generate", PICTURE_PROMPT, "--image", "in-picture.png", "--seed", "0",
                                          "-o", "image-to-video.mp4"]),
    "video-to-video": ("in-red-2s.mp4", ["generate", RED_PROMPT.replace("red", "blue"), "--video", "in-red-2s.mp4",
                                         "--strength", "0.6", "--seed", "0", "--candidates", "1", "-o",
                                         "video-to-video.mp4"]),
    "extend": ("in-red-1s.mp4", ["extend", "in-red-1s.mp4", "--seconds", "1", "--seed", "0", "-o", "extend.mp4"]),
    "interpolate": ("in-red-8fps.mp4", ["interpolate", "in-red-8fps.mp4", "--factor", "3", "--seed", "0",
                                        "-o", "interpolate.mp4"]),
    "upscale": ("in-red-2s.mp4", ["upscale", "in-red-2s.mp4", "--seed", "0", "-o", "upscale.mp4"]),
    "long-4s": (None, ["generate", "a green circle moving left", "--seconds", "4", "--seed", "0", "--candidates", "1",
                       "-o", "long-4s.mp4"]),
}


def render_inputs(folder: Path) -> None:
    from PIL import Image

    from vidgen.data.shapes import Scene, render_clip, sample_scene, clip_rng, parse_prompt
    from vidgen.video_io import save_video

    square = sample_scene(clip_rng(7, 0), slots=parse_prompt(PICTURE_PROMPT))
    Image.fromarray(render_clip(square, 64, 48, indices=[0])[0]).save(folder / "in-picture.png")
    red: Scene = sample_scene(clip_rng(7, 1), slots=parse_prompt(RED_PROMPT))
    meta = {"prompt": RED_PROMPT}
    save_video(render_clip(red, 64, 48), folder / "in-red-2s.mp4", fps=24, metadata=meta, overwrite=True)
    save_video(render_clip(red, 64, 48, indices=range(24)), folder / "in-red-1s.mp4", fps=24, metadata=meta,
               overwrite=True)
    save_video(render_clip(red, 64, 46, indices=range(0, 46, 3)), folder / "in-red-8fps.mp4", fps=8, metadata=meta,
               overwrite=True)


def beside(given: np.ndarray | None, frames: np.ndarray, pace: float = 1.0) -> np.ndarray:
    """input | output, uint8 (f h w 3): the input scaled to the output's height (nearest) and shown
    at its own pace (`pace` output frames per input frame), a picture or a shorter clip holding its
    last frame."""
    if given is None:
        return frames
    h = frames.shape[1]
    scale = max(1, h // given.shape[1])
    given = given.repeat(scale, axis=1).repeat(scale, axis=2)
    given = given[np.minimum((np.arange(len(frames)) / pace).astype(int), len(given) - 1)]
    gap = np.full((len(frames), h, 4, 3), 255, np.uint8)
    return np.concatenate([given, gap, frames], axis=2)


def side_by_side(folder: Path, shown: str | None, output: str, name: str) -> None:
    from PIL import Image

    from vidgen.media.inputs import read_clip
    from vidgen.video_io import save_video

    out = read_clip(folder / output)
    given, pace = None, 1.0
    if shown is not None and shown.endswith(".png"):
        given = np.asarray(Image.open(folder / shown).convert("RGB"))[None]
    elif shown is not None:
        clip = read_clip(folder / shown)
        given, pace = clip.frames, out.fps / clip.fps
    save_video(beside(given, out.frames, pace), folder / f"{name}.gif", fps=out.fps,
               metadata={"made_from": output, "input": shown}, overwrite=True)


def from_eval(keep: Path, folder: Path) -> None:
    """Side-by-side GIFs of the first clip of each part tools/eval_media.py --keep saved."""
    from vidgen.video_io import save_video

    paces = {"interpolate": 3.0}
    for part in ("image", "video", "extend", "interpolate", "upscale", "long"):
        outs = sorted(keep.glob(f"{part}_*_out.npy"))
        if not outs:
            continue
        out = np.load(outs[0])
        given_path = Path(str(outs[0]).replace("_out.npy", "_in.npy"))
        given = np.load(given_path) if given_path.is_file() else None
        save_video(beside(given, out, paces.get(part, 1.0)), folder / f"eval-{outs[0].stem[:-4]}.gif", fps=24,
                   metadata={"made_by": "tools/eval_media.py --keep", "part": part}, overwrite=True)
        print("wrote", folder / f"eval-{outs[0].stem[:-4]}.gif")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "samples" / "media"))
    parser.add_argument("--only", help="comma-separated names of COMMANDS")
    parser.add_argument("--from-eval", metavar="KEEP", help="instead: GIFs from the arrays tools/eval_media.py --keep "
                        "saved (no sampling)")
    args = parser.parse_args()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    if args.from_eval:
        from_eval(Path(args.from_eval), folder)
        return
    render_inputs(folder)
    for name in (args.only.split(",") if args.only else COMMANDS):
        shown, argv = COMMANDS[name]
        print("vidgen", " ".join(f'"{a}"' if " " in a else a for a in argv), flush=True)
        subprocess.run([sys.executable, "-m", "vidgen", *argv, "--overwrite", "--no-progress"], cwd=folder, check=True)
        side_by_side(folder, shown, argv[argv.index("-o") + 1], name)


if __name__ == "__main__":
    main()
