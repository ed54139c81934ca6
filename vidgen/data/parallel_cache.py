"""Building a latent cache (vidgen.data.latent_cache) with many processes: `vidgen data cache`.

    accelerate launch --num_processes 8 -m vidgen data cache corpus/manifest.jsonl --model runs/inflated \\
        --size 256 -o corpus/latents

The manifest's clips are cut into parts of `part_size` clips; process r encodes parts r, r + n,
r + 2n, ... (n processes), writing each clip's latents as the training-time builder names them
(`{clip number:06d}.safetensors`) and, once a part is whole, `parts/part-{k:05d}.json` listing
its entries. A part whose file is there with this VAE's fingerprint and the same clips is done:
a rerun, with any number of processes, skips it. When every process is done, rank 0 merges the
parts into index.json, the file that makes the folder a cache (written last, atomically). The
folder is then the one a training run with data.latent_cache=CACHE (same VAE, data.size) reuses.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import timedelta
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import VidgenError
from ..fs import _PARTIAL, check_writable_folder, write_text_atomic
from .latent_cache import INDEX_NAME, cache_video, vae_fingerprint, write_index
from .manifest import read_manifest

PARTS = "parts"
_CACHE_FILE = re.compile(r"^\d{6}\.safetensors$")


def load_vae(folder: str | os.PathLike):
    """The AutoencoderKL of a vidgen model folder or diffusers text-to-image folder (vae/), or of a VAE folder."""
    from diffusers import AutoencoderKL

    from ..weights import load_diffusers

    folder = Path(folder)
    for candidate in (folder / "vae", folder):
        if (candidate / "config.json").is_file():
            return load_diffusers(AutoencoderKL, candidate).eval().requires_grad_(False)
    raise VidgenError(f"--model {folder}: no VAE there (neither {folder / 'vae' / 'config.json'} nor "
                      f"{folder / 'config.json'}); give a vidgen model folder, a text-to-image folder or a VAE folder")


def check_cache_folder(folder: Path) -> None:
    """A cache folder must be new, empty, or hold only what a cache holds."""
    check_writable_folder(folder, "-o")
    if folder.is_dir():
        foreign = sorted(n for n in os.listdir(folder) if not (n in (INDEX_NAME, PARTS) or _CACHE_FILE.match(n)
                                                               or _PARTIAL.match(n)))
        if foreign:
            raise VidgenError(f"-o {folder} holds files that are not a latent cache's (e.g. {foreign[0]}): give a new "
                              f"or empty folder, or the cache folder itself")


def _part_file(folder: Path, part: int) -> Path:
    return folder / PARTS / f"part-{part:05d}.json"


def part_done(folder: Path, part: int, fingerprint: str, size: int, paths: list[str]) -> dict | None:
    """The part's saved entries where it was completed with this VAE and size for these clips."""
    try:
        saved = json.loads(_part_file(folder, part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = saved.get("fingerprint") == fingerprint and saved.get("size") == size and saved.get("paths") == paths
    return saved if same else None


def encode_part(vae, records: list[dict], first: int, size: int, folder: Path) -> dict:
    """Encode one part's clips; returns its {"videos", "failed"} (VidgenError of a clip: failed, as in training)."""
    videos, failed = {}, {}
    for offset, record in enumerate(records):
        try:
            videos[record["path"]] = cache_video(vae, record["path"], size, folder, first + offset)
        except VidgenError as exc:
            failed[record["path"]] = str(exc)
    return {"videos": videos, "failed": failed}


def cache_in_parallel(manifest: str, model: str, size: int, output: str, part_size: int = 64,
                      progress: bool = True) -> int:
    """`vidgen data cache`; every process of an accelerate launch runs it. Returns the exit code."""
    from accelerate import PartialState
    from accelerate.utils import gather_object, parse_flag_from_env

    folder = Path(output)
    records = read_manifest(manifest)
    check_cache_folder(folder)
    # Processes whose parts take longer than another's keep it waiting at the final gather: a day,
    # not torch's default (10 to 30 minutes), before that counts as a hang.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"), timeout=timedelta(hours=24))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != state.num_processes:
        raise VidgenError(f"{launched} processes were launched but accelerate sees {state.num_processes}: on a machine "
                          "without GPUs set ACCELERATE_USE_CPU=true")
    vae = load_vae(model).to(state.device)
    fingerprint = vae_fingerprint(vae, size)
    started = time.perf_counter()
    (folder / PARTS).mkdir(parents=True, exist_ok=True)
    parts = range(0, -(-len(records) // part_size))
    mine = [k for k in parts if k % state.num_processes == state.process_index]
    encoded = skipped = 0
    bar = tqdm(total=sum(len(records[k * part_size:(k + 1) * part_size]) for k in mine), desc="caching latents",
               unit="video", disable=not (progress and state.is_main_process))
    for k in mine:
        chunk = records[k * part_size:(k + 1) * part_size]
        paths = [r["path"] for r in chunk]
        if part_done(folder, k, fingerprint, size, paths) is None:
            done = encode_part(vae, chunk, k * part_size, size, folder)
            write_text_atomic(_part_file(folder, k), json.dumps({"fingerprint": fingerprint, "size": size, "paths": paths,
                                                                 "process": state.process_index, **done}) + "\n")
            encoded += len(chunk)
        else:
            skipped += 1
        bar.update(len(chunk))
    bar.close()
    counts = gather_object([(encoded, skipped)])
    state.wait_for_everyone()
    if state.is_main_process:
        videos, failed = {}, {}
        for k in parts:
            paths = [r["path"] for r in records[k * part_size:(k + 1) * part_size]]
            saved = part_done(folder, k, fingerprint, size, paths)
            if saved is None:
                raise VidgenError(f"part {k} of {folder} is missing after every process finished: run the command again")
            videos.update(saved["videos"])
            failed.update(saved["failed"])
        write_index(folder, fingerprint, size, videos, failed)
        total_encoded, total_skipped = sum(c[0] for c in counts), sum(c[1] for c in counts)
        print(f"cached {len(videos)} clips ({len(failed)} unreadable) at {size} px in {folder}: {total_encoded} encoded "
              f"now by {state.num_processes} processes, {total_skipped} parts already done, "
              f"in {time.perf_counter() - started:.1f}s")
        for path, reason in list(failed.items())[:10]:
            print(f"unreadable: {path}: {reason}")
    state.wait_for_everyone()
    return 0
