"""Diagnostic: do the motion words bind when they come in exactly as the oracle's direction code does?

research/oracle_direction.py hands an anchored base its clip's direction as a code, embedded by an
MLP whose first layer is random and whose last starts at zero, added to the time embedding; on
runs/shapes/snap-1000 it began to bind within 600 steps. This script puts the prompt's words on
the same road: the word ids of the caption (TextEncoder.word_codes, one-hots of two residues),
summed over the prompt, through an MLP of the same form (first layer random with --word-std, so
every word starts with a distinct vector, as every code does; last layer zero), added to the time
embedding by a forward hook of this script's own. With --odd the words' vector is multiplied by
each frame's signed distance from the clip's middle (-1 first frame, +1 last) before it is
added: a term odd in time cannot carry what is the same in every frame (color, shape,
background), only what changes across the clip.

The base's own word readers (text queries, text words, bag) are dropped first; the rest is the
oracle's recipe: the video stage's settings with captioned clips listed 6 times and posterior
means, AdamW at 1e-4 for the network and --lr-new for the MLP. Every 200 steps it compares the
noise-prediction error of 24 captioned clips under the true caption, the caption with the
opposite direction, with the other axis, and with none, at the same noise. Nothing is saved.

    python research/word_path_probe.py --model runs/shapes/snap-1000/model \\
        --manifest runs/shapes/corpus64/manifest.jsonl --latent-cache runs/shapes/latents64 --steps 600 [--odd]
"""
import argparse
import dataclasses
import time

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader

from vidgen import checkpoint as ckpt
from vidgen.config import load_config
from vidgen.data.dataset import VideoClipDataset, collate_clips
from vidgen.data.latent_cache import LatentCache
from vidgen.data.manifest import read_manifest
from vidgen.diffusion.losses import diffusion_loss
from vidgen.diffusion.noise import frame_noise
from vidgen.models import cascade
from vidgen.models.inflate import InflationOptions, VideoUNet
from vidgen.pipeline import VideoPipeline
from vidgen.training.config import RunConfig
from vidgen.training.stages import NOISE_SCHEDULE, drop_captions, repeat_captioned, withhold_captions

WORD_READERS = ("text_queries.", "text_bag.")
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
OTHER_AXIS = {"left": "up", "right": "down", "up": "left", "down": "right"}


class WordPath(nn.Module):
    """Summed word codes (b n d) -> (b e), the oracle code's MLP form: random first layer, zero last."""

    def __init__(self, code_dim: int, time_dim: int, word_std: float):
        super().__init__()
        self.words = nn.Linear(code_dim, time_dim, bias=False)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_dim, time_dim)
        nn.init.normal_(self.words.weight, std=word_std)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.words(codes.sum(dim=1))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--latent-cache", required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--odd", action="store_true", help="the words' vector times each frame's signed place in the clip")
    parser.add_argument("--word-std", type=float, default=0.5, help="std of the first layer's weights")
    parser.add_argument("--lr-new", type=float, default=1e-3, help="learning rate of the word MLP")
    parser.add_argument("--config", default="configs/shapes/video.yaml", help="the video stage's training config")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = load_config(RunConfig, args.config, ["data.captioned_repeat=6", "data.posterior=mean"])
    d, m = cfg.data, cfg.model
    pipe = VideoPipeline.from_pretrained(args.model)
    model = without_word_readers(pipe.stages["base"])
    time_dim = model.unet.time_embedding.linear_2.out_features
    path = WordPath(pipe.text_encoder.hidden_size, time_dim, args.word_std)
    state = {"codes": None, "frames": 1}

    def add_words(module, inputs, output):  # output: ((b f) e), the time embedding of every frame
        frames = state["frames"]
        vector = path(state["codes"]).to(output.dtype)  # (b e)
        if args.odd:
            place = torch.linspace(-1.0, 1.0, frames, device=output.device, dtype=output.dtype)  # (f,)
            return output + rearrange(vector[:, None] * place[None, :, None], "b f e -> (b f) e")
        return output + vector.repeat_interleave(frames, dim=0)

    model.unet.time_embedding.register_forward_hook(add_words)
    anchored = pipe.image_unet is not None
    n = pipe.text_encoder.max_length
    encoded = {}

    def encode(captions):  # -> tokens in context (b n d), word codes (b n d)
        with torch.no_grad():
            for c in set(captions) - set(encoded):
                encoded[c] = pipe.text_encoder.encode([c], words="ids")[0]
        both = torch.stack([encoded[c] for c in captions])
        return both[:, :n], both[:, n:]

    def denoise(x_t, t, x0, captions, fps):
        tokens, state["codes"] = encode(captions)
        state["frames"] = x_t.shape[2]
        if anchored:
            index = cascade.anchor_index(x0.shape[2], pipe.index.anchor.position)
            x_t = cascade.anchor_input(x_t, x0[:, :, index], index)
        return model(x_t, t, tokens, fps=fps)

    records = read_manifest(args.manifest)
    records = repeat_captioned(withhold_captions(records, d.withhold_captions, cfg.train.seed), d.captioned_repeat)
    data = VideoClipDataset(records, d.num_frames, d.size, fps_range=tuple(d.fps_range), seed=cfg.train.seed,
                            latent_cache=LatentCache(args.latent_cache))
    loader = DataLoader(data, batch_size=cfg.train.batch_size, shuffle=True, collate_fn=collate_clips, num_workers=1,
                        generator=torch.Generator().manual_seed(0))
    schedule = DDPMScheduler(**NOISE_SCHEDULE, prediction_type=m.prediction_type)
    optimizer = torch.optim.AdamW([{"params": model.parameters(), "lr": 1e-4},
                                   {"params": path.parameters(), "lr": args.lr_new}], weight_decay=cfg.train.weight_decay)
    probe_items = [data[i] for i in [i for i, r in enumerate(records) if r.get("caption")][::60][:24]]
    g, step, started = torch.Generator().manual_seed(0), 0, time.time()
    model.train()
    while step < args.steps:
        for batch in loader:
            captions = drop_captions(batch["caption"], d.caption_dropout, g)
            x0 = batch["latent_mean"].float()
            loss = diffusion_loss(lambda x, t: denoise(x, t, x0, captions, batch["fps"]), schedule, x0, g,
                                  m.prediction_type, weighting=m.loss_weighting,
                                  noise_correlation=m.frame_noise_correlation)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*model.parameters(), *path.parameters()], 1.0)
            optimizer.step()
            step += 1
            if step % 50 == 0:
                print(step, round(loss.item(), 5), round(time.time() - started), flush=True)
            if step % 200 == 0 or step == args.steps:
                probe(model, path, denoise, encode, schedule, probe_items, m.frame_noise_correlation)
            if step >= args.steps:
                break


def without_word_readers(base: VideoUNet) -> VideoUNet:
    """A copy of `base` without its text queries, text words and bag (the word path replaces them)."""
    unet2d = UNet2DConditionModel.from_config(base.unet.config)
    unet2d.load_state_dict(base.unet.state_dict())
    options = {**dataclasses.asdict(base.options), "text_queries": False, "text_words": False, "text_bag": False,
               "word_table": False}
    model = VideoUNet(unet2d, InflationOptions(**options))
    state = {k: v for k, v in base.temporal_state_dict().items() if not k.startswith(WORD_READERS)}
    ckpt.load_strict(model, state, source="the base video U-Net", only=state.keys())
    return model


@torch.no_grad()
def probe(model, path, denoise, encode, schedule, items, correlation):
    model.eval()
    shapes_words = [f"a red circle moving {w}" for w in OPPOSITE]
    vectors = path(encode(shapes_words)[1])
    print(f"  word path: norm {vectors.norm(dim=1).mean():.2f}, left - right {(vectors[0] - vectors[1]).norm():.2f}")
    x0 = torch.stack([it["latent_mean"] for it in items]).float()
    fps = torch.tensor([it["fps"] for it in items])
    captions = [it["caption"] for it in items]
    variants = {"true": captions, "opposite": [swap(c, OPPOSITE) for c in captions],
                "other axis": [swap(c, OTHER_AXIS) for c in captions], "none": [""] * len(captions)}
    generator = torch.Generator().manual_seed(1)
    for t in (700, 900, 980):
        noise = frame_noise(x0.shape, generator, correlation)
        timesteps = torch.full((len(items),), t)
        x_t = schedule.add_noise(x0, noise, timesteps)
        errors = {}
        for name, caps in variants.items():
            pred = torch.cat([denoise(x_t[i:i + 8], timesteps[i:i + 8], x0[i:i + 8], caps[i:i + 8], fps[i:i + 8])
                              for i in range(0, len(items), 8)])
            errors[name] = ((pred - noise) ** 2).mean().item()
        changes = ", ".join(f"{name} {100 * (errors[name] / errors['true'] - 1):+.2f} %" for name in list(variants)[1:])
        print(f"  t={t}: true {errors['true']:.6f}, {changes}", flush=True)
    model.train()


def swap(caption: str, table: dict) -> str:
    for word, other in table.items():
        if f"moving {word}" in caption:
            return caption.replace(f"moving {word}", f"moving {other}")
    return caption


if __name__ == "__main__":
    main()
