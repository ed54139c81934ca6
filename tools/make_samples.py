"""Make samples/: clips of the embedded default model (MP4 and GIF) for seen and held-out prompts,
each judged, with samples/README.md listing the prompts, seeds, verdicts and exact commands.

    python tools/make_samples.py                  # the embedded default model into samples/
    python tools/make_samples.py --model DIR --out /tmp/samples

Every clip is made by running the `vidgen generate` command written beside it in the README,
once with `-o NAME.mp4` and once with `-o NAME.gif` (same seed: the same frames).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDIA_SECTION = "## Your media in"  # samples/README.md's section on media/ (tools/make_media_samples.py), kept as it is

# (prompt, seed); the held-out (color, shape, direction) triples of docs/shapes-world.md never appear in
# training, so those clips show whether the model composes what it learned.
PROMPTS = [
    ("a red circle moving left", 0),
    ("a large blue triangle moving up on a gray background", 1),
    ("a small yellow square moving right on a black background", 2),
    ("a cyan square moving down", 3),
    ("a green triangle moving right on a gray background", 4),
    ("a large magenta circle moving down", 5),
    ("a red triangle moving up", 6),
    ("a green circle moving left on a gray background", 7),
    ("a blue square moving right", 8),
    ("a small cyan circle moving up on a black background", 9),
]


def slug(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.removeprefix("a ").lower()).strip("-")


def command(prompt: str, seed: int, out: str, model: str | None) -> list[str]:
    return ["vidgen", "generate", prompt, "--seed", str(seed), "-o", out, *(["--model", model] if model else [])]


def shown(cmd: list[str]) -> str:
    return " ".join(f'"{part}"' if " " in part else part for part in cmd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="vidgen model folder (default: the embedded default model)")
    parser.add_argument("--out", default=str(ROOT / "samples"), help="folder to fill (default: samples/)")
    args = parser.parse_args()

    from vidgen.data.judge import judge_clip
    from vidgen.data.shapes import HELDOUT, TRIPLE, parse_prompt
    from vidgen.fs import write_text_atomic

    out = Path(args.out)
    if args.model:
        args.model = str(Path(args.model).resolve())  # the commands run inside `out`
    out.mkdir(parents=True, exist_ok=True)
    heldout = {tuple(t) for t in HELDOUT}
    rows = []
    for i, (prompt, seed) in enumerate(PROMPTS):
        name = f"{i:02d}-{slug(prompt)}"
        for ext in ("mp4", "gif"):
            cmd = command(prompt, seed, f"{name}.{ext}", args.model)
            print("+", shown(cmd), flush=True)
            subprocess.run([sys.executable, "-m", "vidgen", *cmd[1:], "--no-progress"], check=True, cwd=out,
                           stdout=subprocess.DEVNULL)
        slots = parse_prompt(prompt)
        judgement = judge_clip(out / f"{name}.mp4")
        failures = judgement.failures(slots)
        verdict = "obeys" if not failures else "; ".join(failures[:2]) + (" (and more)" if len(failures) > 2 else "")
        group = "held-out" if tuple(slots[s] for s in TRIPLE) in heldout else "seen"
        rows.append((name, prompt, seed, group, verdict, shown(command(prompt, seed, f"{name}.mp4", args.model))))

    lines = [
        "# Samples",
        "",
        "Clips of the embedded default shapes model (see the main README), made by `tools/make_samples.py`.",
        "Each was written by the command in its row, run in this folder (and again with `-o NAME.gif` for",
        "the GIF); the sidecar `NAME.mp4.json` beside it holds the prompt, seed and settings. The verdict",
        "is the project's shapes judge (vidgen.data.judge) reading the MP4 back. Held-out prompts use",
        "(color, shape, direction) triples that never appear in the training corpus.",
        "",
        "| clip | prompt | seed | triple | judge |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| ![{name}]({name}.gif) [mp4]({name}.mp4) | {prompt} | {seed} | {group} | {verdict} |"
              for name, prompt, seed, group, verdict, _ in rows]
    lines += ["", "Commands:", "", "```"] + [cmd for *_, cmd in rows] + ["```", ""]
    readme = out / "README.md"
    kept = readme.read_text().partition(MEDIA_SECTION)[1:] if readme.is_file() else ("", "")
    write_text_atomic(readme, "\n".join(lines) + ("\n" + "".join(kept) if kept[0] else ""))  # media/'s section kept
    obeyed = sum(row[4] == "obeys" for row in rows)
    print(f"wrote {len(rows)} clips to {out}; {obeyed} obey their prompt")


if __name__ == "__main__":
    main()
