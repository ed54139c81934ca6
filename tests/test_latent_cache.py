import torch

from vidgen.data.dataset import VideoClipDataset, collate_clips
from vidgen.data.latent_cache import LatentCache, build_latent_cache
from vidgen.data.clips import frames_to_tensor
from vidgen.data.reader import read_frames

from conftest import make_vae
from video_factory import make_mp4


def test_cache_holds_the_vae_posterior_of_every_frame_and_feeds_the_dataset(tmp_path):
    video = make_mp4(tmp_path / "a.mp4", n=12, fps=12, height=40, width=48)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 10)
    records = [{"path": str(video), "caption": "gray"}, {"path": str(broken)}]
    vae = make_vae()
    cache = build_latent_cache(records, vae, size=32, folder=tmp_path / "cache", progress=False)

    mean, std = cache.load(str(video))
    assert mean.shape == std.shape == (4, 12, 16, 16)  # (c F h w): 32 px frames, latent factor 2
    frames = frames_to_tensor(read_frames(video), 32)  # (c F H W)
    with torch.no_grad():
        posterior = vae.encode(frames.transpose(0, 1)).latent_dist
    expected = (posterior.mean * vae.config.scaling_factor).transpose(0, 1)
    assert torch.allclose(mean, expected, atol=2e-3)  # stored in half precision
    assert str(broken) in cache.failed

    dataset = VideoClipDataset(records, num_frames=4, size=32, stride=2, latent_cache=cache)
    batch = collate_clips([dataset[0], dataset[1]])
    assert batch["video"] is None and batch["latent_mean"].shape == (1, 4, 4, 16, 16)
    starts = [s for s in range(6) if torch.equal(batch["latent_mean"][0], mean[:, [s, s + 2, s + 4, s + 6]])]
    assert len(starts) == 1  # the clip is every second cached frame from a random start
    assert batch["fps"].tolist() == [6.0] and [s.path for s in batch["skipped"]] == [str(broken)]


def test_a_low_resolution_cache_gives_the_same_frames_at_the_smaller_size(tmp_path):
    video = make_mp4(tmp_path / "a.mp4", n=12, fps=12, height=32, width=32)
    records = [{"path": str(video), "caption": "gray"}]
    vae = make_vae()
    high = build_latent_cache(records, vae, size=32, folder=tmp_path / "32px", progress=False)
    low = build_latent_cache(records, vae, size=16, folder=tmp_path / "16px", progress=False)
    dataset = VideoClipDataset(records, num_frames=4, size=32, stride=3, latent_cache=high, low_res_cache=low)
    batch = collate_clips([dataset[0]])
    assert batch["latent_mean"].shape == (1, 4, 4, 16, 16) and batch["low_latent_mean"].shape == (1, 4, 4, 8, 8)
    high_mean, _ = high.load(str(video))
    low_mean, _ = low.load(str(video))
    starts = [s for s in range(3) if torch.equal(batch["latent_mean"][0], high_mean[:, s::3])]
    assert len(starts) == 1 and torch.equal(batch["low_latent_mean"][0], low_mean[:, starts[0]::3])


def test_cache_is_reused_for_the_same_vae_and_rebuilt_for_another(tmp_path):
    video = make_mp4(tmp_path / "a.mp4", n=4, fps=8, height=32, width=32)
    records = [{"path": str(video)}]
    folder = tmp_path / "cache"
    build_latent_cache(records, make_vae(seed=0), 32, folder, progress=False)
    first = (folder / "000000.safetensors").stat().st_mtime_ns
    build_latent_cache(records, make_vae(seed=0), 32, folder, progress=False)
    assert (folder / "000000.safetensors").stat().st_mtime_ns == first
    same = LatentCache(folder).fingerprint
    other = build_latent_cache(records, make_vae(seed=1), 32, folder, progress=False)
    assert other.fingerprint != same and LatentCache(folder).fingerprint == other.fingerprint
    assert (folder / "000000.safetensors").stat().st_mtime_ns != first


def test_the_same_vae_loaded_from_another_folder_reuses_the_cache(tmp_path):
    from diffusers import AutoencoderKL

    from vidgen.data.latent_cache import vae_fingerprint

    vae = make_vae(seed=0)
    vae.save_pretrained(tmp_path / "a")
    vae.save_pretrained(tmp_path / "model" / "vae")  # as a later stage's export copies it
    first, copied = AutoencoderKL.from_pretrained(tmp_path / "a"), AutoencoderKL.from_pretrained(tmp_path / "model" / "vae")
    assert first.config._name_or_path != copied.config._name_or_path
    assert vae_fingerprint(first, 32) == vae_fingerprint(copied, 32)


def test_time_reversal_plays_captioned_clips_backwards_with_their_motion_words_swapped(tmp_path):
    video = make_mp4(tmp_path / "a.mp4", n=12, fps=12, height=32, width=32)
    records = [{"path": str(video), "caption": "a red circle moving left"}, {"path": str(video), "caption": "a red circle"},
               {"path": str(video)}]
    cache = build_latent_cache(records[:1], make_vae(), size=32, folder=tmp_path / "cache", progress=False)
    mean, _ = cache.load(str(video))
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    plain = VideoClipDataset(records, num_frames=4, size=32, stride=2, latent_cache=cache)
    reversing = VideoClipDataset(records, num_frames=4, size=32, stride=2, latent_cache=cache, time_reverse=opposite)
    seen = set()
    for epoch in range(12):
        plain.set_epoch(epoch)
        reversing.set_epoch(epoch)
        for i, record in enumerate(records):
            before, after = plain[i], reversing[i]
            if after["caption"] == "a red circle moving right":  # reversed: the same frames, last first
                assert torch.equal(after["latent_mean"], before["latent_mean"].flip(1))
                assert torch.equal(after["latent_std"], before["latent_std"].flip(1))
                seen.add("reversed")
            else:  # kept as it was, as every clip whose caption names no motion word
                assert after["caption"] == record.get("caption", "")
                assert torch.equal(after["latent_mean"], before["latent_mean"])
                seen.add("kept" if i == 0 else "no motion word")
    assert seen == {"reversed", "kept", "no motion word"}  # about half of the epochs each for the first clip
    starts = [s for s in range(6) if torch.equal(reversing[0]["latent_mean"].flip(1), mean[:, [s, s + 2, s + 4, s + 6]])
              or torch.equal(reversing[0]["latent_mean"], mean[:, [s, s + 2, s + 4, s + 6]])]
    assert len(starts) == 1
