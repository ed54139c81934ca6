import json
import os
from fractions import Fraction

import av
import numpy as np
import pytest

from vidgen.data.reader import probe_video, read_frames
from vidgen.errors import VideoReadError, VidgenError
from vidgen.video_io import read_metadata, save_video, sidecar_path

from video_factory import gray_frames, index_of, make_mp4, make_with_ffmpeg

# --- reading ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {
        "mp4": make_mp4(folder / "a.mp4"),
        "avi": make_with_ffmpeg(folder / "b.avi", "mjpeg"),
        "ogg": make_with_ffmpeg(folder / "c.ogv", "libtheora"),
    }


@pytest.mark.parametrize("kind", ["mp4", "avi", "ogg"])
@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_reads_every_container_with_each_backend(sample_files, kind, backend):
    info = probe_video(sample_files[kind], backend=backend)
    assert (info.num_frames, info.fps, info.width, info.height) == (20, 10.0, 64, 48)
    assert info.duration == pytest.approx(2.0)
    frames = read_frames(sample_files[kind], [0, 7, 19], backend=backend)
    assert frames.shape == (3, 48, 64, 3) and frames.dtype == np.uint8
    assert [index_of(f) for f in frames] == [0, 7, 19]


def test_ogg_theora_falls_back_to_pyav(sample_files):
    with pytest.raises(VideoReadError, match="decord"):
        probe_video(sample_files["ogg"], backend="decord")
    assert probe_video(sample_files["ogg"]).backend == "pyav"
    assert probe_video(sample_files["mp4"]).backend == "decord"


def test_repeated_and_unsorted_indices_keep_their_order(sample_files):
    frames = read_frames(sample_files["ogg"], [5, 2, 5], backend="pyav")
    assert [index_of(f) for f in frames] == [5, 2, 5]


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty"), (b"this is plain text, not a video" * 20, "cannot open")],
)
def test_unreadable_files_raise_a_readable_error(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoReadError, match=reason):
        probe_video(path)


def test_truncated_file_is_an_error_not_a_crash(sample_files, tmp_path):
    data = sample_files["avi"].read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoReadError):
        info = probe_video(path)
        read_frames(path, [info.num_frames - 1])


# --- writing ------------------------------------------------------------------------------


def _stream_facts(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(video=0))
        return {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "rate": Fraction(stream.average_rate),
            "size": (stream.codec_context.width, stream.codec_context.height),
            "frames": count,
            "tags": dict(container.metadata),
        }


@pytest.mark.parametrize("n, fps", [(48, 24), (17, 30000 / 1001), (5, 8)])
def test_mp4_has_the_frames_fps_codec_and_pixel_format_asked_for(tmp_path, n, fps):
    path = save_video(gray_frames(n, 32, 48), tmp_path / "clip.mp4", fps=fps, metadata={"prompt": "a red circle", "seed": 7})
    facts = _stream_facts(path)
    assert facts["codec"] == "h264" and facts["pix_fmt"] == "yuv420p"
    assert facts["frames"] == n and facts["size"] == (48, 32)
    assert float(facts["rate"]) == pytest.approx(fps, rel=1e-6)
    assert facts["tags"]["title"] == "a red circle"
    assert json.loads(facts["tags"]["comment"]) == {"prompt": "a red circle", "seed": 7}
    assert [index_of(f) for f in read_frames(path)] == list(range(n))


def test_odd_sizes_are_padded_to_even_for_yuv420p(tmp_path):
    path = save_video(gray_frames(4, 31, 45), tmp_path / "odd.mp4", fps=10)
    assert _stream_facts(path)["size"] == (46, 32)


def test_float_clip_in_minus_one_one_is_accepted(tmp_path):
    video = np.linspace(-1, 1, 3 * 6 * 16 * 16, dtype=np.float32).reshape(3, 6, 16, 16)  # (c f h w)
    frames = read_frames(save_video(video, tmp_path / "f.mp4", fps=6))
    assert frames.shape == (6, 16, 16, 3)


def test_gif_and_png_folder_with_sidecar_metadata(tmp_path):
    frames = gray_frames(6, 16, 16)
    meta = {"prompt": "a blue square moving up", "seed": 3, "model": "tiny"}
    gif = save_video(frames, tmp_path / "clip.gif", fps=10, metadata=meta)
    png = save_video(frames, tmp_path / "clip", fps=10, metadata=meta)
    assert read_frames(gif).shape == (6, 16, 16, 3)
    assert sorted(os.listdir(png)) == [f"{i:05d}.png" for i in range(6)]
    for path, fmt in ((gif, "gif"), (png, "png")):
        side = json.loads(sidecar_path(path).read_text())
        assert side["prompt"] == meta["prompt"] and side["format"] == fmt and side["frames"] == 6 and side["fps"] == 10
    assert sidecar_path(gif) != sidecar_path(png)
    assert read_metadata(gif)["seed"] == 3


def test_mp4_metadata_survives_without_the_sidecar(tmp_path):
    path = save_video(gray_frames(3, 16, 16), tmp_path / "c.mp4", fps=10, metadata={"prompt": "p", "seed": 1})
    sidecar_path(path).unlink()
    assert read_metadata(path) == {"prompt": "p", "seed": 1}


def test_a_failed_write_leaves_no_file_behind(tmp_path, monkeypatch):
    import vidgen.video_io as video_io

    def explode(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C arrived mid-encode

    existing = save_video(gray_frames(3, 16, 16), tmp_path / "keep.mp4", fps=10)
    before = existing.read_bytes()
    monkeypatch.setattr(video_io, "_write_mp4", explode)
    for name in ("new.mp4", "keep.mp4"):
        with pytest.raises(KeyboardInterrupt):
            save_video(gray_frames(3, 16, 16), tmp_path / name, fps=10)
    assert not (tmp_path / "new.mp4").exists()
    assert existing.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4", "keep.mp4.json"]


def test_bad_format_or_fps_is_refused(tmp_path):
    with pytest.raises(VidgenError, match="format"):
        save_video(gray_frames(2, 8, 8), tmp_path / "x.avi", fps=10)
    with pytest.raises(VidgenError, match="fps"):
        save_video(gray_frames(2, 8, 8), tmp_path / "x.mp4", fps=0)


def test_written_files_get_the_usual_permissions_not_the_temporary_files_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        clip = save_video(gray_frames(2, 8, 8), tmp_path / "p.mp4", fps=10)
        folder = save_video(gray_frames(2, 8, 8), tmp_path / "frames", fps=10)
    finally:
        os.umask(old)
    assert clip.stat().st_mode & 0o777 == 0o644
    assert sidecar_path(clip).stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_mode & 0o777 == 0o755
