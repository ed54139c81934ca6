"""Generation and evaluation under `accelerate launch` on two CPU processes (gloo): every clip of a
prompt file is written exactly once, a rerun writes none, and a two-process eval report equals
the one-process report. Three launches in all (they are the slow part)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from launch_helpers import launch_two

from vidgen.cli import main
from vidgen.distributed import already_written, clips_to_make, Processes

SAMPLING = ["--steps", "2", "--frames", "4", "--seed", "3", "--no-progress"]


def test_two_processes_write_each_prompt_line_once_and_a_rerun_writes_none(video_model, tmp_path):
    prompts = ["a red circle moving left", "", "a blue square moving up", "a green star", "a small red circle",
               "a big blue circle moving right"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    out = tmp_path / "clips" / "clip.gif"
    out.parent.mkdir()
    argv = ["generate", "--model", str(video_model), "--prompts", str(tmp_path / "prompts.txt"), "-o", str(out),
            *SAMPLING]
    printed = launch_two(tmp_path, argv).stdout
    wrote = re.findall(r"wrote (\S+) \(", printed)  # anywhere in a line: the two ranks share one pipe
    expected = [str(out.with_name(f"clip_{i:03d}.gif")) for i in range(5)]  # named by non-empty line, as in one process
    assert sorted(wrote) == expected, printed  # each exactly once, between the two processes
    sidecars = [json.loads(Path(p + ".json").read_text()) for p in expected]
    assert [s["prompt"] for s in sidecars] == [p for p in prompts if p]
    before = {p: Path(p).stat().st_mtime_ns for p in expected}

    printed = launch_two(tmp_path, argv).stdout  # the rerun: everything is there with these settings
    assert "wrote" not in printed
    assert sum(map(int, re.findall(r"skipped (\d+) clip", printed))) == 5
    assert {p: Path(p).stat().st_mtime_ns for p in expected} == before

    # a launched rerun with other settings would make them again: the sidecar no longer matches
    made = {key: sidecars[0][key] for key in ("negative_prompt", "model", "steps", "guidance", "seed", "format")}
    assert already_written(expected[0], {**made, "prompt": prompts[0]})
    assert not already_written(expected[0], {**made, "prompt": prompts[0], "steps": 3})
    assert not already_written(expected[0], {**made, "prompt": prompts[2]})
    # without a launcher: every job, none skipped (today's behaviour: vidgen replaces its own clips)
    jobs = [(prompts[0], Path(expected[0]))]
    assert clips_to_make(jobs, made, Processes()) == (jobs, 0)


def test_two_process_eval_report_equals_the_one_process_report(video_model, tmp_path, capsys):
    argv = ["eval", "shapes", "--model", str(video_model), "--n", "3", "--heldout", "--batch-size", "2", *SAMPLING]
    assert main([*argv, "-o", str(tmp_path / "one.json")]) == 0
    one_printed = capsys.readouterr().out
    printed = launch_two(tmp_path, [*argv, "-o", tmp_path / "two.json"]).stdout
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert [c["index"] for c in two["clips"]] == list(range(6))  # 3 batches over 2 processes, gathered in order
    assert two == one
    assert printed.count("wrote ") == 1  # rank 0 alone writes and prints the report
    table = one_printed.splitlines()[1:-1]
    assert all(line in printed for line in table)
