import json

from vidgen.cli import main
from vidgen.data.manifest import read_manifest

from video_factory import make_mp4, make_with_ffmpeg


def test_index_lists_readable_videos_with_captions_and_skips_broken_ones(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    (corpus / "nested" / "deeper").mkdir(parents=True)
    make_mp4(corpus / "a.mp4", n=12, fps=12)
    (corpus / "a.txt").write_text("  a gray  clip\n")
    make_with_ffmpeg(corpus / "nested" / "b.ogv", "libtheora", n=10, fps=5)
    make_with_ffmpeg(corpus / "nested" / "deeper" / "c.avi", "mjpeg", n=8, fps=8)
    (corpus / "empty.mp4").write_bytes(b"")
    (corpus / "notes.mp4").write_text("not a video at all\n" * 50)
    good = (corpus / "a.mp4").read_bytes()
    (corpus / "nested" / "truncated.mp4").write_bytes(good[: len(good) // 2])
    avi = (corpus / "nested" / "deeper" / "c.avi").read_bytes()
    (corpus / "cut.avi").write_bytes(avi[: 2 * len(avi) // 3])  # header intact, last frames gone
    (corpus / "readme.md").write_text("ignored: not a video suffix")

    manifest = tmp_path / "out" / "manifest.jsonl"
    assert main(["data", "index", str(corpus), "-o", str(manifest), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "skipped 4 unreadable files" in err
    for name in ("empty.mp4", "notes.mp4", "truncated.mp4", "cut.avi"):
        assert name in err
    assert "empty" in err

    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [line["path"] for line in lines] == ["../corpus/a.mp4", "../corpus/nested/b.ogv", "../corpus/nested/deeper/c.avi"]
    a, b, c = lines
    assert (a["frames"], a["fps"], a["duration"], a["width"], a["height"]) == (12, 12.0, 1.0, 64, 48)
    assert a["caption"] == "a gray clip" and "caption" not in b
    assert (b["frames"], b["fps"], c["frames"]) == (10, 5.0, 8)
    records = read_manifest(manifest)
    assert records[0]["path"] == str((corpus / "a.mp4").resolve())


def test_index_of_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "index", str(tmp_path / "nope"), "-o", str(tmp_path / "m.jsonl")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "m.jsonl").exists()
