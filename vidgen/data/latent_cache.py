"""VAE latents of a corpus cached on disk, so the U-Net stages do not encode every frame of every
clip again each epoch.

For each video the cache holds the VAE posterior of every frame (resized and centre-cropped to
the training size): its mean and standard deviation, scaled as the diffusion stages expect,
in half precision. A clip is then a slice of frames, and its latents a fresh posterior sample,
`mean + std * noise`, exactly what encoding the frames would give.

    CACHE/index.json          {"fingerprint", "size", "videos": {path: {"file", "frames", "fps"}}, "failed": {...}}
    CACHE/000000.safetensors  {"mean": (c F h w), "std": (c F h w)}

The fingerprint covers the VAE's config and weights and the frame size: a cache made with
another VAE is rebuilt, never silently reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..errors import VidgenError
from ..fs import write_text_atomic
from .clips import frames_to_tensor
from .reader import probe_video, read_frames

INDEX_NAME = "index.json"


def vae_fingerprint(vae, size: int) -> str:
    # diffusers' private config entries (_name_or_path: the folder it was loaded from) are left
    # out: the same VAE copied into another model folder encodes the same latents.
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    digest.update(str(size).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class CachedVideo:
    file: str
    frames: int
    fps: float


class LatentCache:
    """Read side of a cache folder."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        index = json.loads((self.folder / INDEX_NAME).read_text(encoding="utf-8"))
        self.fingerprint, self.size = index["fingerprint"], index["size"]
        self.videos = {path: CachedVideo(**entry) for path, entry in index["videos"].items()}
        self.failed: dict[str, str] = index["failed"]

    def entry(self, path: str) -> CachedVideo:
        if path in self.videos:
            return self.videos[path]
        reason = self.failed.get(path, "not in the latent cache (rebuild it: delete the cache folder)")
        raise VidgenError(reason)

    def load(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of every frame of a video, each (c, F, h, w) float32."""
        from safetensors.torch import load_file

        tensors = load_file(self.folder / self.entry(path).file)
        return tensors["mean"].float(), tensors["std"].float()

    @staticmethod
    def matches(folder: str | os.PathLike, fingerprint: str) -> bool:
        index = Path(folder) / INDEX_NAME
        return index.is_file() and json.loads(index.read_text(encoding="utf-8")).get("fingerprint") == fingerprint


@torch.no_grad()
def _encode_frames(vae, frames: torch.Tensor, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, F, H, W) in [-1, 1] -> scaled posterior (mean, std), each (c', F, h, w)."""
    shift, scale = vae.config.shift_factor or 0.0, vae.config.scaling_factor
    means, stds = [], []
    for chunk in frames.transpose(0, 1).split(chunk_size):  # (n c H W)
        posterior = vae.encode(chunk.to(vae.device, vae.dtype)).latent_dist
        means.append((posterior.mean - shift) * scale)
        stds.append(posterior.std * scale)
    return torch.cat(means).transpose(0, 1), torch.cat(stds).transpose(0, 1)  # (c' F h w)


def build_latent_cache(records: Sequence[dict], vae, size: int, folder: str | os.PathLike, chunk_size: int = 16,
                       progress: bool = True) -> LatentCache:
    """Encode every frame of every video at `size` px into `folder`, unless a matching cache is there
    (`vidgen data cache` builds the same folder in parallel: vidgen.data.parallel_cache)."""
    folder = Path(folder)
    fingerprint = vae_fingerprint(vae, size)
    if LatentCache.matches(folder, fingerprint):
        return LatentCache(folder)
    folder.mkdir(parents=True, exist_ok=True)
    videos, failed = {}, {}
    for i, record in enumerate(tqdm(records, desc="caching latents", unit="video", disable=not progress)):
        try:
            videos[record["path"]] = cache_video(vae, record["path"], size, folder, i, chunk_size)
        except VidgenError as exc:
            failed[record["path"]] = str(exc)
    write_index(folder, fingerprint, size, videos, failed)
    return LatentCache(folder)


def cache_video(vae, path: str, size: int, folder: Path, number: int, chunk_size: int = 16) -> dict:
    """Encode one video into `folder`/{number:06d}.safetensors; returns its index entry. A video that
    cannot be read raises VidgenError (the caller lists it under "failed")."""
    from safetensors.torch import save_file

    info = probe_video(path)
    frames = frames_to_tensor(read_frames(path), size)  # (c F H W)
    mean, std = _encode_frames(vae, frames, chunk_size)
    name = f"{number:06d}.safetensors"
    save_file({"mean": mean.half().contiguous().cpu(), "std": std.half().contiguous().cpu()}, folder / name)
    return {"file": name, "frames": int(frames.shape[1]), "fps": info.fps}


def write_index(folder: Path, fingerprint: str, size: int, videos: dict, failed: dict) -> None:
    index = {"fingerprint": fingerprint, "size": size, "videos": videos, "failed": failed}
    write_text_atomic(folder / INDEX_NAME, json.dumps(index) + "\n")  # last: a cache without it is incomplete
