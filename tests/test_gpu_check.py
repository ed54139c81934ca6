"""tools/gpu_check.py: its CPU dry run exercises every section and writes the JSON report; without
CUDA and without --dry-run it refuses in one line. (The figures themselves need a GPU.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import gpu_check  # noqa: E402


def test_dry_run_writes_every_section_and_without_cuda_a_real_run_is_refused(tmp_path, capsys, monkeypatch):
    out = tmp_path / "report.json"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    step = report["step"]["contenders"]
    assert set(step) == {"vidgen", "diffusers-3d", "diffusers-motion"}
    assert all(row["latency_s"] > 0 and row["tflop"] > 0 and 0 < row["mfu"] for row in step.values())
    assert report["generation"]["output_shape"][1] == report["generation"]["frames"] == 4
    training = report["training"]
    assert 0 < training["tflop_model"] < training["tflop_executed"] and training["clips_per_s"] > 0
    assert report["resume"] == {**report["resume"], "resumed": True, "ema_in_checkpoint": True, "exported": True,
                                "generated": True}
    assert report["resume"]["resumed_to"] == report["resume"]["killed_after_checkpoint"] + 2
    assert set(report["met"]) == set(gpu_check.TARGETS)
    printed = capsys.readouterr().out
    assert "target >= 40%" in printed and "target <= 10 GB" in printed and "target >= 30%" in printed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "real.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "real.json").exists()
