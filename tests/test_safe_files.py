"""The safe-file layer: vidgen replaces its own outputs and nothing else, writes nothing half-way,
cleans the temporaries of a killed writer, and takes the run lock with its pid already in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vidgen.cli import main
from vidgen.errors import VidgenError
from vidgen.fs import atomic_path, remove_stale_partials
from vidgen.video_io import save_video

FRAMES = np.zeros((3, 8, 8, 3), np.uint8)  # (f h w c)


def generate(model: Path, *args: str) -> int:
    return main(["generate", "a red circle", "--model", str(model), "--steps", "2", "--no-progress", *args])


def test_a_users_folder_survives_generate_and_overwrite_touches_only_vidgens_own_files(video_model, tmp_path,
                                                                                       capsys):
    folder = tmp_path / "holiday"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "photo.jpg").write_bytes(b"mine too")
    assert generate(video_model, "-o", str(folder)) == 2
    assert "holding files vidgen did not write" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "photo.jpg"]

    assert generate(video_model, "-o", str(folder), "--overwrite") == 0
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "00002.png", "00003.png",
                                                        "notes.txt", "photo.jpg"]
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "photo.jpg").read_bytes() == b"mine too"
    assert json.loads((tmp_path / "holiday.json").read_text())["frames"] == 4

    # Fewer frames the second time: vidgen's own extra frames go, the user's files stay.
    assert generate(video_model, "-o", str(folder), "--overwrite", "--frames", "2") == 0
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "notes.txt", "photo.jpg"]


def test_vidgens_own_outputs_are_replaced_without_being_asked(video_model, tmp_path):
    for out in (tmp_path / "clip.mp4", tmp_path / "frames"):
        assert generate(video_model, "-o", str(out), "--seed", "1") == 0
        assert generate(video_model, "-o", str(out), "--seed", "2") == 0
        assert json.loads((out.with_name(out.name + ".json")).read_text())["seed"] == 2


def test_a_file_vidgen_did_not_write_is_kept_unless_overwrite(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"someone's film")
    with pytest.raises(VidgenError, match="was not written by vidgen"):
        save_video(FRAMES, clip, fps=8)
    assert clip.read_bytes() == b"someone's film"
    save_video(FRAMES, clip, fps=8, overwrite=True)
    assert clip.read_bytes() != b"someone's film" and (tmp_path / "clip.mp4.json").is_file()


def test_a_killed_writers_temporaries_are_removed_by_the_next_write_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has exited
    orphan = tmp_path / f".clip.{dead_pid}.abcd1234.partial.mp4"
    orphan.write_bytes(b"half a clip")
    orphan_dir = tmp_path / f".frames.{dead_pid}.abcd1234.partial"
    orphan_dir.mkdir()
    live = tmp_path / f".other.{os.getpid()}.abcd1234.partial.mp4"  # being written by this process
    live.write_bytes(b"in progress")
    unrelated = tmp_path / ".hidden.partial.notes"  # not a name vidgen gives a temporary
    unrelated.write_text("mine")
    with atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("done")
    assert not orphan.exists() and not orphan_dir.exists()
    assert live.exists() and unrelated.exists() and (tmp_path / "out.txt").read_text() == "done"
    assert remove_stale_partials(tmp_path) == []


def test_sigkill_during_a_write_leaves_no_final_file_and_the_next_run_cleans_up(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from vidgen.fs import atomic_path
        with atomic_path({str(tmp_path / 'big.bin')!r}) as tmp:
            tmp.write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9
    assert not (tmp_path / "big.bin").exists()
    assert [p.name for p in tmp_path.iterdir() if ".partial" in p.name]  # the orphan, until the next write
    save_video(FRAMES, tmp_path / "next.mp4", fps=8)
    assert not [p.name for p in tmp_path.iterdir() if ".partial" in p.name]


def test_the_run_lock_appears_with_its_pid_in_it(tmp_path, monkeypatch):
    from vidgen.training import lock

    seen = []
    real_link = os.link

    def link_and_look(source, target):
        real_link(source, target)
        seen.append(Path(target).read_text())  # the moment the lock exists, it names its holder

    monkeypatch.setattr(lock.os, "link", link_and_look)
    with lock.run_lock(tmp_path):
        assert (tmp_path / "run.lock").read_text().split() == [str(os.getpid())]
    assert seen == [f"{os.getpid()}\n"] and not (tmp_path / "run.lock").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary left beside it
