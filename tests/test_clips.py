import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vidgen.data.clips import clip_indices, frame_step, resize_center_crop, sample_clip
from vidgen.data.dataset import VideoClipDataset, collate_clips
from vidgen.errors import ClipTooShortError, VidgenError

from video_factory import index_of, make_mp4, make_with_ffmpeg


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_mp4(tmp_path_factory.mktemp("clips") / "v.mp4", n=48, fps=24, height=48, width=64)


def _source_indices(clip):
    return [index_of(clip.video[:, i].numpy(), channels_last=False) for i in range(clip.video.shape[1])]


def test_clip_shape_range_and_frames(video):
    clip = sample_clip(video, num_frames=8, size=32, start=5)
    assert clip.video.shape == (3, 8, 32, 32) and clip.video.dtype == torch.float32
    assert clip.video.min() >= -1 and clip.video.max() <= 1
    assert clip.indices == list(range(5, 13)) == _source_indices(clip)
    assert clip.fps == 24


@pytest.mark.parametrize("fps, stride, expected_step, clip_fps", [(12, None, 2, 12), (8, None, 3, 8), (None, 4, 4, 6), (48, None, 0.5, 48)])
def test_fps_and_stride_choose_the_frames(video, fps, stride, expected_step, clip_fps):
    clip = sample_clip(video, num_frames=6, size=16, fps=fps, stride=stride, start=0)
    assert clip.indices == [int(i * expected_step) for i in range(6)] == _source_indices(clip)
    assert clip.fps == pytest.approx(clip_fps)


def test_random_start_is_seeded_and_stays_inside(video):
    starts = {sample_clip(video, 8, 16, stride=2, rng=np.random.default_rng(s)).indices[0] for s in range(20)}
    assert len(starts) > 3 and min(starts) >= 0 and max(starts) <= 48 - 15
    a = sample_clip(video, 8, 16, rng=np.random.default_rng(1)).indices
    assert a == sample_clip(video, 8, 16, rng=np.random.default_rng(1)).indices


def test_short_video_loops_or_is_skipped_by_rule(video):
    looped = sample_clip(video, num_frames=30, size=16, stride=2)
    assert looped.indices == [(2 * i) % 48 for i in range(30)] == _source_indices(looped)
    with pytest.raises(ClipTooShortError, match="48"):
        sample_clip(video, num_frames=30, size=16, stride=2, short_clip="skip")


def test_index_rules_and_errors():
    assert clip_indices(10, 4, 3.0) == [0, 3, 6, 9]
    assert frame_step(30, fps=10) == 3 and frame_step(30) == 1
    with pytest.raises(VidgenError, match="not both"):
        frame_step(30, fps=10, stride=2)
    with pytest.raises(VidgenError, match=r"\[0, 6\]"):
        clip_indices(10, 4, 1.0, start=7)
    with pytest.raises(VidgenError, match="short_clip"):
        clip_indices(10, 4, short_clip="pad")


def test_resize_crops_the_centre_of_wide_and_tall_frames():
    wide = torch.zeros(1, 3, 20, 40)
    wide[..., 6:34] = 1.0  # bright around the centre, dark at the left and right edges
    out = resize_center_crop(wide, 10)
    assert out.shape == (1, 3, 10, 10) and out.mean() > 0.99
    assert resize_center_crop(torch.zeros(2, 3, 40, 20), 8).shape == (2, 3, 8, 8)


def test_dataloader_workers_skip_broken_and_short_videos(tmp_path, video):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    short = make_with_ffmpeg(tmp_path / "short.ogv", "libtheora", n=5, fps=24)
    records = [{"path": str(video), "caption": "gray"}, {"path": str(broken)}, {"path": str(short)}, {"path": str(video)}]
    dataset = VideoClipDataset(records, num_frames=8, size=16, fps_range=(6, 24), short_clip="skip", seed=3)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_clips)
    batch = next(iter(loader))
    assert batch["video"].shape == (2, 3, 8, 16, 16)
    assert batch["caption"] == ["gray", ""]
    assert all(6 <= fps <= 24 for fps in batch["fps"].tolist())
    assert sorted(s.path for s in batch["skipped"]) == sorted([str(broken), str(short)])
    again = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate_clips)))
    assert torch.equal(again["video"], batch["video"])  # same seed and epoch, same clips
