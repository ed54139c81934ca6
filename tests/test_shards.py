"""WebDataset shards: `vidgen data shard` writes video2dataset's layout; the readers (processes x
DataLoader workers) share no shard and see every clip once per epoch; a resumed epoch yields
exactly the clips not yet trained on; a corrupt member is skipped and counted; two processes with
two workers each train the tiny video preset on shards and resume mid-epoch (one subprocess test,
two launches)."""

from __future__ import annotations

import json
import logging
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from vidgen.cli import main
from vidgen.data.dataset import SkippedSample, VideoClipDataset
from vidgen.data.shard_dataset import ShardClipDataset
from vidgen.data.shards import scan_shards
from vidgen.errors import VidgenError

from launch_helpers import launch_two
from test_training import TINY, read_log
from video_factory import make_mp4

CLIPS = 8
PATTERN = "{00000..00003}.tar"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """8 clips of 10..17 frames, the even ones captioned."""
    folder = tmp_path_factory.mktemp("corpus") / "clips"
    for i in range(CLIPS):
        make_mp4(folder / f"c{i}.mp4", n=10 + i, fps=12, height=32, width=40)
        if i % 2 == 0:
            (folder / f"c{i}.txt").write_text(f"clip number {i}", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def shard_set(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "set"
    assert main(["data", "shard", str(corpus), "-o", str(out), "--per-shard", "2", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def inflated(sd_image_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("video") / "inflated"
    assert main(["inflate", "--image-model", str(sd_image_model), "--out", str(out), "--max-frames", "8"]) == 0
    return out


def clips_dataset() -> VideoClipDataset:
    return VideoClipDataset([], num_frames=4, size=32, stride=1)


def names(items) -> list[str]:
    return [item.path if isinstance(item, SkippedSample) else item["path"] for item, _ in items]


def test_data_shard_writes_the_video2dataset_layout_and_refuses_a_foreign_folder(shard_set, corpus, tmp_path, capsys):
    with tarfile.open(shard_set / "00000.tar") as tar:
        members = tar.getnames()
        assert members == ["000000000.json", "000000000.mp4", "000000000.txt", "000000001.json", "000000001.mp4"]
        assert tar.extractfile("000000000.mp4").read() == (corpus / "c0.mp4").read_bytes()  # the file's bytes
        assert tar.extractfile("000000000.txt").read().decode() == "clip number 0"
        assert json.loads(tar.extractfile("000000001.json").read())["source"] == "c1.mp4"
    index = json.loads((shard_set / "shards.json").read_text())
    assert index["samples"] == CLIPS and index["pattern"] == PATTERN
    assert [s.samples for s in scan_shards(str(shard_set / PATTERN))] == [2, 2, 2, 2]
    recorded = tmp_path / "recorded"  # counts come from shards.json while the files are the ones it names
    recorded.mkdir()
    for name in ("00000.tar", "shards.json"):
        (recorded / name).write_bytes((shard_set / name).read_bytes())
    index["shards"][0]["samples"] = 7
    (recorded / "shards.json").write_text(json.dumps(index))
    assert [s.samples for s in scan_shards(str(recorded / "00000.tar"))] == [7]
    index["shards"][0]["bytes"] += 1  # another file of that name: its headers are read
    (recorded / "shards.json").write_text(json.dumps(index))
    assert [s.samples for s in scan_shards(str(recorded / "00000.tar"))] == [2]

    again = tmp_path / "again"  # its own output is written over; shards beyond the new count go
    assert main(["data", "shard", str(corpus), "-o", str(again), "--per-shard", "2", "--no-progress"]) == 0
    assert main(["data", "shard", str(corpus), "-o", str(again), "--per-shard", "3", "--no-progress"]) == 0
    assert sorted(p.name for p in again.iterdir()) == ["00000.tar", "00001.tar", "00002.tar", "shards.json"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["data", "shard", str(corpus), "-o", str(foreign), "--per-shard", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidgen data: error:") and "notes.txt" in err[0]
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_a_folder_of_tar_files_vidgen_did_not_write_is_refused_and_left_untouched(corpus, tmp_path, capsys):
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    for name in ("00000.tar", "00001.tar"):
        (foreign / name).write_bytes(b"their own archive " + name.encode())
    capsys.readouterr()
    assert main(["data", "shard", str(corpus), "-o", str(foreign), "--per-shard", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(foreign) in err[0] and "new or empty folder" in err[0]
    assert sorted(p.name for p in foreign.iterdir()) == ["00000.tar", "00001.tar"]
    assert (foreign / "00000.tar").read_bytes() == b"their own archive 00000.tar"
    interrupted = tmp_path / "interrupted"  # a set whose writing stopped (its marker, no shards.json) is ours
    interrupted.mkdir()
    (interrupted / ".vidgen-shards-writing").write_text("")
    (interrupted / "00005.tar").write_bytes(b"partial")
    assert main(["data", "shard", str(corpus), "-o", str(interrupted), "--per-shard", "4", "--no-progress"]) == 0
    assert sorted(p.name for p in interrupted.iterdir()) == ["00000.tar", "00001.tar", "shards.json"]


def test_a_manifest_record_that_is_not_a_video_is_skipped_reported_once_and_not_counted(corpus, tmp_path, capsys):
    import pandas as pd

    (tmp_path / "v.xyz").write_bytes(b"not a video")
    (tmp_path / "noext").write_bytes(b"no suffix")
    paths = [str(corpus / "c0.mp4"), str(tmp_path / "v.xyz"), str(tmp_path / "noext"), str(corpus / "c1.mp4")]
    pd.DataFrame({"path": paths, "caption": ["a", "b", "c", "d"]}).to_csv(tmp_path / "m.csv", index=False)
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["data", "shard", str(tmp_path / "m.csv"), "-o", str(out), "--per-shard", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("v.xyz") == 1 and err.count("noext") == 1 and "not a video file" in err
    index = json.loads((out / "shards.json").read_text())
    assert index["samples"] == 2 and [s["samples"] for s in index["shards"]] == [1, 1]
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar", "00001.tar", "shards.json"]
    with tarfile.open(out / "00001.tar") as tar:
        assert tar.getnames() == ["000000001.json", "000000001.mp4", "000000001.txt"]


def test_an_unbalanced_pattern_is_refused_and_a_shard_named_twice_is_read_once(shard_set):
    with pytest.raises(VidgenError, match=r"data.shards=.*\{00000..00001.tar: the pattern cannot be expanded"):
        scan_shards(str(shard_set / "{00000..00001.tar"))
    twice = f"{shard_set / '{00000..00001}.tar'}::{shard_set / '.' / '00001.tar'}"
    assert [Path(s.path).name for s in scan_shards(twice)] == ["00000.tar", "00001.tar"]


def test_a_video2dataset_shard_reads_json_captions_and_a_damaged_one_reads_to_the_damage(corpus, tmp_path, caplog):
    import webdataset as wds

    from vidgen.data.shards import count_samples, read_shard

    video = (corpus / "c1.mp4").read_bytes()
    with open(tmp_path / "v2d.tar", "wb") as stream, wds.TarWriter(stream) as sink:
        sink.write({"__key__": "000010025", "mp4": video, "json": {"caption": " a  dog ", "status": "success"}})
        sink.write({"__key__": "000010026", "txt": "a caption and no video"})  # not a sample
        sink.write({"__key__": "000010027", "webm": video, "txt": "its own caption", "json": {"caption": "not this"}})
    samples = list(read_shard(str(tmp_path / "v2d.tar")))
    assert count_samples(str(tmp_path / "v2d.tar")) == 2 == len(samples)
    assert [(s.key, s.caption, str(s.video)) for s in samples] == [
        ("000010025", "a dog", "v2d.tar:000010025.mp4"), ("000010027", "its own caption", "v2d.tar:000010027.webm")]
    assert samples[0].meta["status"] == "success" and samples[0].video.data == video
    whole = (tmp_path / "v2d.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(whole[:len(whole) - len(video) // 2 - 3000])  # into the second video
    with caplog.at_level(logging.WARNING, logger="vidgen.data"):
        assert [s.key for s in read_shard(str(tmp_path / "cut.tar"))] == ["000010025"]
    assert "could not be read to its end" in caplog.text


@pytest.mark.parametrize("processes, workers", [(2, 2), (1, 3)])
def test_readers_share_no_shard_and_see_every_clip_once_per_epoch(shard_set, processes, workers):
    dataset = ShardClipDataset(scan_shards(str(shard_set / PATTERN)), clips_dataset(), shuffle_buffer=3)
    readers = processes * workers
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        seen, shards_read, quotas = Counter(), [], []
        for rank in range(processes):
            dataset.split(rank, processes, workers, batch_size=2)
            for reader in range(rank * workers, (rank + 1) * workers):
                items = list(dataset.reader_stream(reader))
                quotas.append(len(items))
                seen.update(names(items))
                shards_read.append({name.split(":")[0] for name in names(items)})
        assert set(seen) == {f"{n // 2:05d}.tar:{n:09d}.mp4" for n in range(CLIPS)}
        assert all(a.isdisjoint(b) for i, a in enumerate(shards_read) for b in shards_read[i + 1:])
        assert len(set(quotas)) == 1 and quotas[0] % 2 == 0  # whole batches, the same on every rank
        if readers == 4:  # 4 equal groups: each clip exactly once
            assert set(seen.values()) == {1}
        else:  # 4 shards of 2 for 3 readers: groups of 4, 2, 2 samples; the small ones pad to 4
            assert sum(seen.values()) == 12 and sorted(seen.values()) == [1] * 4 + [2] * 4
    with pytest.raises(VidgenError, match="fewer than the 6 readers"):
        dataset.split(0, 2, 3, batch_size=2)


@pytest.mark.parametrize("shuffle_buffer", [1, 3, 100])
def test_a_resumed_reader_yields_exactly_the_clips_it_had_not_yet(shard_set, shuffle_buffer):
    dataset = ShardClipDataset(scan_shards(str(shard_set / PATTERN)), clips_dataset(), shuffle_buffer=shuffle_buffer)
    dataset.split(0, 1, 1, batch_size=2)  # one reader streams all 8 clips
    whole = names(dataset.reader_stream(0))
    assert sorted(whole) == sorted(set(whole)) and len(whole) == CLIPS
    for cut in (2, 5, 7):
        before = list(dataset.reader_stream(0))[:cut]
        _, yielded, read, buffered = before[-1][1]
        assert yielded == cut and len(buffered) == read - cut <= max(0, shuffle_buffer - 1)
        after = names(dataset.reader_stream(0, yielded, read, buffered))
        assert sorted(names(before) + after) == sorted(whole)  # the rest, none twice
    if shuffle_buffer == 1:
        pairs = [whole[i:i + 2] for i in range(0, CLIPS, 2)]  # shards in a drawn order, each read through in order
        assert all(a.split(":")[0] == b.split(":")[0] and a < b for a, b in pairs)
        assert names(dataset.reader_stream(0, 3, 3, ())) == whole[3:]


def test_a_corrupt_member_is_skipped_counted_and_logged_once(corpus, inflated, tmp_path, caplog):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video" * 20)
    records = [{"path": str(corpus / f"c{i}.mp4")} for i in range(3)] + [{"path": str(garbage)}]
    manifest = tmp_path / "with-garbage.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    shards = tmp_path / "shards"
    assert main(["data", "shard", str(manifest), "-o", str(shards), "--per-shard", "4", "--no-progress"]) == 0
    run = tmp_path / "run"
    # one reader, 4 clips, batch 4: an epoch is 1 step; 2 epochs draw the garbage member twice
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--no-progress", str(TINY / "video.yaml"), f"data.shards={shards}/00000.tar",
                     f"model.pretrained={inflated}", f"train.output_dir={run}", "train.max_steps=2",
                     "train.batch_size=4", "train.ema_decay=0", "train.checkpoint_every=2"]) == 0
    assert [row["skipped_clips"] for row in read_log(run)][-1] == 2
    told = [r.getMessage() for r in caplog.records]
    assert len([m for m in told if m.startswith("skipped 00000.tar:000000003.mp4")]) == 1  # each file once
    assert any("a pass over" in m and "skipped 1 unreadable" in m for m in told)  # the end-of-epoch summary


@pytest.mark.parametrize("overrides, named", [
    (["data.manifest=m.jsonl"], "give exactly one of data.manifest and data.shards (both are set)"),
    (["data.shards=''"], "give exactly one of data.manifest and data.shards (neither is set)"),
    (["data.shuffle_buffer=-1"], "data.shuffle_buffer must be at least 0"),
    (["data.shards=nowhere/{00000..00003}.tar"], "4 of its 4 shards do not exist (e.g. nowhere/00000.tar)"),
    (["data.latent_cache=cache"], "data.latent_cache does not go with data.shards"),
    (["data.captioned_repeat=3"], "data.captioned_repeat=3 does not go with data.shards"),
    (["stage=critic"], "the critic stage picks its captioned clips from a manifest"),
    (["data.shards=''", "data.manifest=m.jsonl", "data.clip_log=true"], "data.clip_log records the clips a run streams"),
    (["data.num_workers=5"], "names 4 shards, fewer than the 5 readers"),
])
def test_a_bad_shards_config_exits_2_naming_the_key(shard_set, inflated, tmp_path, capsys, overrides, named):
    (tmp_path / "m.jsonl").write_text('{"path": "a.mp4"}\n')
    argv = ["train", "--no-progress", TINY / "video.yaml", f"data.shards={shard_set / PATTERN}",
            f"model.pretrained={inflated}", f"train.output_dir={tmp_path / 'bad'}", *overrides]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert main([str(a) for a in argv]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("vidgen train: error:") and named in error[0]
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_two_processes_with_two_workers_train_on_shards_each_clip_once_per_epoch_and_resume_mid_epoch(
        shard_set, inflated, tmp_path):
    run = tmp_path / "ddp"

    def launch(max_steps: int) -> None:
        argv = ["train", "--no-progress", TINY / "video.yaml", f"data.shards={shard_set / PATTERN}",
                f"model.pretrained={inflated}", f"train.output_dir={run}", f"train.max_steps={max_steps}",
                "train.checkpoint_every=1", "train.ema_decay=0", "data.num_workers=2", "data.clip_log=true"]
        launch_two(tmp_path, argv)

    def clips_seen() -> dict[int, list[tuple[str, str]]]:  # rank -> [(epoch, clip)] in the order trained on
        return {rank: [tuple(line.split("\t")) for line in (run / f"rank-{rank}-clips.txt").read_text().splitlines()]
                for rank in (0, 1)}

    # each rank: 2 readers x 2 clips, batch 2: 2 steps per epoch; stop after the first
    launch(max_steps=1)
    first = clips_seen()
    assert [len(first[rank]) for rank in (0, 1)] == [2, 2]
    launch(max_steps=4)  # resumes at step 1: the rest of epoch 0, then epoch 1
    seen = clips_seen()
    every = {f"{n // 2:05d}.tar:{n:09d}.mp4" for n in range(CLIPS)}
    for epoch in ("0", "1"):
        clips = Counter(clip for rank in (0, 1) for e, clip in seen[rank] if e == epoch)
        assert set(clips) == every and set(clips.values()) == {1}  # every clip once, across both ranks
    resumed = {clip for rank in (0, 1) for e, clip in seen[rank][len(first[rank]):] if e == "0"}
    assert resumed == every - {clip for rank in (0, 1) for _, clip in first[rank]}  # the epoch went on
    assert [row["step"] for row in read_log(run)] == [1, 2, 3, 4]
    state = json.loads((run / "checkpoints" / "step-00000004" / "trainer.json").read_text())["shards"]
    assert state["epoch"] == 1 and state["layout"] == [2, 2, 2] and len(state["readers"]) == 4
