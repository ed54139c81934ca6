"""CSV and parquet manifests (vidgen.data.tables) read like the JSON-lines one, in the column names
corpora ship with (WebVid's videoid/name), and train the tiny video preset."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from vidgen.cli import main
from vidgen.data.dataset import VideoClipDataset
from vidgen.data.manifest import read_manifest
from vidgen.errors import VidgenError

from test_training import TINY, read_log
from video_factory import make_mp4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """3 clips and their JSON-lines manifest (from `vidgen data index`); clips 0 and 2 captioned."""
    folder = tmp_path_factory.mktemp("tables")
    for i in range(3):
        make_mp4(folder / f"{1000 + i}.mp4", n=12, fps=12, height=32, width=32)
        if i != 1:
            (folder / f"{1000 + i}.txt").write_text(f"caption {i}", encoding="utf-8")
    assert main(["data", "index", str(folder), "-o", str(folder / "manifest.jsonl"), "--no-progress"]) == 0
    return folder


def test_csv_and_parquet_manifests_read_like_json_lines(corpus):
    lines = read_manifest(corpus / "manifest.jsonl")
    captions = [r.get("caption") for r in lines]
    # a CSV with path/caption columns (an empty caption: an unlabeled clip) and a frame count kept as it is
    pd.DataFrame({"path": [Path(r["path"]).name for r in lines], "caption": [c or "" for c in captions],
                  "frames": [r["frames"] for r in lines]}).to_csv(corpus / "m.csv", index=False)
    # WebVid's parquet: videoid names {videoid}.mp4 beside the table, name is the caption
    pd.DataFrame({"videoid": [Path(r["path"]).stem for r in lines], "name": captions,
                  "page_dir": ["001"] * 3}).to_parquet(corpus / "webvid.parquet")
    csv, parquet = read_manifest(corpus / "m.csv"), read_manifest(corpus / "webvid.parquet")
    for table in (csv, parquet):
        assert [r["path"] for r in table] == [r["path"] for r in lines]
        assert [r.get("caption") for r in table] == captions == ["caption 0", None, "caption 2"]
    assert [r["frames"] for r in csv] == [12, 12, 12] and parquet[0]["page_dir"] == "001"
    a, b = (VideoClipDataset(records, num_frames=4, size=32, fps_range=(6.0, 12.0), seed=3) for records in (lines, csv))
    assert all((a[i]["video"] == b[i]["video"]).all() and a[i]["fps"] == b[i]["fps"] for i in range(3))


def test_a_parquet_list_column_is_left_out_of_the_record(corpus, tmp_path):
    pd.DataFrame({"path": [str(corpus / "1000.mp4"), str(corpus / "1001.mp4")], "caption": ["a", "b"],
                  "tags": [["dog", "park"], ["cat"]], "frames": [12, 12]}).to_parquet(tmp_path / "tags.parquet")
    records = read_manifest(tmp_path / "tags.parquet")
    assert [sorted(r) for r in records] == [["caption", "frames", "path"]] * 2
    assert [r["caption"] for r in records] == ["a", "b"] and records[0]["frames"] == 12


@pytest.mark.parametrize("columns, named", [
    ({"url": ["a.mp4"], "caption": ["x"]}, "has no video column: name one of path, videoid, contentUrl"),
    ({"contentUrl": ["https://example.com/a.mp4"], "name": ["x"]}, "download the corpus first"),
    ({"path": [""], "caption": ["x"]}, "the path cell is empty"),
])
def test_a_table_without_a_usable_video_column_is_refused_naming_the_fix(tmp_path, columns, named):
    pd.DataFrame(columns).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(VidgenError, match=named):
        read_manifest(tmp_path / "m.csv")


def test_a_parquet_manifest_trains_the_tiny_video_preset_and_shards(corpus, sd_image_model, tmp_path):
    lines = read_manifest(corpus / "manifest.jsonl")
    pd.DataFrame({"videoid": [Path(r["path"]).stem for r in lines],
                  "name": [r.get("caption") for r in lines]}).to_parquet(corpus / "train.parquet")
    inflated = tmp_path / "inflated"
    assert main(["inflate", "--image-model", str(sd_image_model), "--out", str(inflated), "--max-frames", "8"]) == 0
    run = tmp_path / "run"
    assert main(["train", "--no-progress", str(TINY / "video.yaml"), f"data.manifest={corpus / 'train.parquet'}",
                 f"model.pretrained={inflated}", f"train.output_dir={run}", "train.max_steps=1",
                 "train.ema_decay=0"]) == 0
    assert [row["step"] for row in read_log(run)] == [1] and (run / "model" / "vidgen.json").is_file()
    shards = tmp_path / "shards"  # `data shard` takes a table too
    assert main(["data", "shard", str(corpus / "train.parquet"), "-o", str(shards), "--no-progress"]) == 0
    assert json.loads((shards / "shards.json").read_text())["samples"] == 3
