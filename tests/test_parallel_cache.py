"""`vidgen data cache` under accelerate: two CPU processes split the clips, each writing its parts;
rank 0 writes one index covering every clip once; it is the cache the training-time builder makes
(so a run with data.latent_cache reuses it); a rerun does no work, and a lost part is redone alone."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from vidgen.cli import main
from vidgen.data.latent_cache import LatentCache, build_latent_cache, vae_fingerprint
from vidgen.data.manifest import read_manifest
from vidgen.data.parallel_cache import load_vae

from launch_helpers import launch_two
from video_factory import make_mp4


def stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.safetensors"))}


def test_two_processes_cache_every_clip_once_and_a_rerun_does_no_work(sd_image_model, tmp_path, capsys):
    for i in range(6):
        make_mp4(tmp_path / "clips" / f"c{i}.mp4", n=4 + i, fps=8, height=32, width=40)
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"not a video" * 10)
    manifest = tmp_path / "manifest.jsonl"
    records = [{"path": f"clips/c{i}.mp4"} for i in range(6)] + [{"path": "clips/broken.mp4"}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    cache = tmp_path / "cache"
    argv = ["data", "cache", manifest, "--model", sd_image_model, "--size", 32, "-o", cache, "--part-size", 2,
            "--no-progress"]
    done = launch_two(tmp_path, argv)
    assert "7 encoded now by 2 processes, 0 parts already done" in done.stdout

    paths = [r["path"] for r in read_manifest(manifest)]
    index = json.loads((cache / "index.json").read_text())
    assert sorted(index["videos"]) == sorted(paths[:6]) and list(index["failed"]) == [paths[6]]
    assert sorted(e["file"] for e in index["videos"].values()) == [f"{i:06d}.safetensors" for i in range(6)]
    parts = [json.loads(p.read_text()) for p in sorted((cache / "parts").iterdir())]
    assert [p["process"] for p in parts] == [0, 1, 0, 1]  # 4 parts of 2 clips, dealt in turn

    vae = load_vae(sd_image_model)  # the same cache as the training-time builder's, which would reuse it
    assert LatentCache.matches(cache, vae_fingerprint(vae, 32))
    alone = build_latent_cache(read_manifest(manifest), vae, 32, tmp_path / "alone", progress=False)
    assert {p: (e.file, e.frames) for p, e in alone.videos.items()} == {
        p: (e["file"], e["frames"]) for p, e in index["videos"].items()}
    for name in ("000000.safetensors", "000005.safetensors"):
        mine, theirs = load_file(cache / name), load_file(tmp_path / "alone" / name)
        assert torch.allclose(mine["mean"].float(), theirs["mean"].float(), atol=1e-3)

    before = stamps(cache)
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 0  # a rerun, one process: every part is done
    assert "0 encoded now by 1 processes, 4 parts already done" in capsys.readouterr().out
    assert stamps(cache) == before
    (cache / "parts" / "part-00001.json").unlink()  # a part lost (a killed process): redone alone
    assert main([str(a) for a in argv]) == 0
    assert "2 encoded now by 1 processes, 3 parts already done" in capsys.readouterr().out
    changed = {name for name, stamp in stamps(cache).items() if stamp != before[name]}
    assert changed == {"000002.safetensors", "000003.safetensors"}
    assert json.loads((cache / "index.json").read_text()) == index

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["data", "cache", str(manifest), "--model", str(sd_image_model), "--size", "32", "-o",
                 str(tmp_path / "other")]) == 2
    assert "notes.txt" in capsys.readouterr().err
