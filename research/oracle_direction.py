"""Diagnostic: can the base stage learn a clean direction code, where the motion words have not bound?

Fine-tunes a copy of a model's base stage for --steps on the shapes corpus with the video stage's
settings (--config, default configs/shapes/video.yaml, plus the video-rep overrides: captioned
clips listed 6 times, posterior means), with one more condition: the clip's direction
slot from the manifest (none/left/right/up/down, as 0-4 x 100), embedded like fps and added to
the time embedding, given only where the caption is kept. Then it compares the noise-prediction
error under the true code, the opposite one and none on 24 captioned clips, at the same noise.
The model is not saved: this measures whether the objective teaches a model to use a direction it
is handed, not how to make one. With --eval N it then samples N seen prompts with the base stage,
the true code handed in and then none, and judges the clips as `vidgen eval shapes` does: does a
code the network uses steer the motion it draws? An anchored base (model.image_conditioning) reads its anchor frame as
in training, where the direction is worth most (research/direction_value.py).

    python research/oracle_direction.py --model runs/shapes/video-rep/model \
        --manifest runs/shapes/corpus64/manifest.jsonl --latent-cache runs/shapes/latents64 --steps 700 [--eval 16]
"""
import argparse
import json
import time

import torch
from diffusers import DDPMScheduler
from torch.utils.data import DataLoader
from vidgen.pipeline import VideoPipeline
from vidgen.models import cascade
from vidgen.models.inflate import with_options
from vidgen.data.manifest import read_manifest
from vidgen.data.dataset import VideoClipDataset, collate_clips
from vidgen.data.latent_cache import LatentCache
from vidgen.config import load_config
from vidgen.diffusion.losses import diffusion_loss
from vidgen.diffusion.noise import frame_noise
from vidgen.training.config import RunConfig
from vidgen.training.stages import withhold_captions, repeat_captioned, drop_captions, NOISE_SCHEDULE
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--model", required=True); parser.add_argument("--manifest", required=True)
parser.add_argument("--latent-cache", required=True); parser.add_argument("--steps", type=int, default=700)
parser.add_argument("--config", default="configs/shapes/video.yaml", help="the video stage's training config")
parser.add_argument("--eval", type=int, default=0, metavar="N",
                    help="then generate N seen prompts with the base stage, the true code handed in, and judge them "
                    "(vidgen eval shapes --stages base --steps 25, seed 0): does a bound code steer the sampled motion?")
parser.add_argument("--eval-report", default="oracle_eval", metavar="PREFIX",
                    help="--eval writes its reports to PREFIX-code.json and PREFIX-none.json (default oracle_eval)")
args = parser.parse_args(); steps = args.steps; torch.manual_seed(0)
cfg = load_config(RunConfig, args.config, ["data.captioned_repeat=6", "data.posterior=mean"])
d, m = cfg.data, cfg.model
CODE = {None: 0, "left": 1, "right": 2, "up": 3, "down": 4}; OPP = {1: 2, 2: 1, 3: 4, 4: 3, 0: 0}
pipe = VideoPipeline.from_pretrained(args.model)
model = with_options(pipe.stages['base'], extra_conditions=("direction",)).train()
anchored = pipe.image_unet is not None  # an anchored base (model.image_conditioning) reads its clip's anchor frame


def unet_input(x_t, x0):  # (b c f h w) each -> what the base reads
    if not anchored:
        return x_t
    index = cascade.anchor_index(x0.shape[2], pipe.index.anchor.position)
    return cascade.anchor_input(x_t, x0[:, :, index], index)

recs = read_manifest(args.manifest)
for r in recs: r["code"] = CODE[r["slots"]["direction"]]
recs = repeat_captioned(withhold_captions(recs, d.withhold_captions, cfg.train.seed), d.captioned_repeat)
codes = {r["path"]: (r["code"] if r.get("caption") else 0) for r in recs}
ds = VideoClipDataset(recs, d.num_frames, d.size, fps_range=tuple(d.fps_range), seed=cfg.train.seed, latent_cache=LatentCache(args.latent_cache))
loader = DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True, collate_fn=collate_clips, num_workers=1, generator=torch.Generator().manual_seed(0))
sched = DDPMScheduler(**NOISE_SCHEDULE, prediction_type=m.prediction_type)
new = [p for n, p in model.named_parameters() if n.startswith("condition_embeddings.")]
rest = [p for n, p in model.named_parameters() if not n.startswith("condition_embeddings.")]
opt = torch.optim.AdamW([{"params": rest, "lr": 1e-4}, {"params": new, "lr": 1e-3}], weight_decay=cfg.train.weight_decay)
text = pipe.text_encoder; cache = {}
def embed(caps):
    with torch.no_grad():
        for c in set(caps) - set(cache): cache[c] = pipe.encode_prompts([c])[0]
    return torch.stack([cache[c] for c in caps])
g = torch.Generator().manual_seed(0); step = 0; t0 = time.time()
while step < steps:
    for batch in loader:
        caps = drop_captions(batch["caption"], d.caption_dropout, g)
        code = torch.tensor([codes[p] if c else 0 for p, c in zip(batch["path"], caps)], dtype=torch.float32) * 100
        x0 = batch["latent_mean"].float()
        loss = diffusion_loss(lambda x, t: model(unet_input(x, x0), t, embed(caps), fps=batch["fps"], conditions={"direction": code}),
                              sched, x0, g, m.prediction_type, weighting=m.loss_weighting,
                              noise_correlation=m.frame_noise_correlation)
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); step += 1
        if step % 50 == 0: print(step, round(loss.item(), 5), round(time.time() - t0), flush=True)
        if step >= steps: break
# swap probe: eps MSE with the true code vs the opposite one, same noise, captioned clips
model.eval(); pg = torch.Generator().manual_seed(1)
cap = [i for i, r in enumerate(recs) if r.get("caption")][::60][:24]
items = [ds[i] for i in cap]
x0 = torch.stack([it["latent_mean"] for it in items]).float(); fps = torch.tensor([it["fps"] for it in items])
caps = [it["caption"] for it in items]; true = torch.tensor([codes[it["path"]] for it in items], dtype=torch.float32)
with torch.no_grad():
    for t in (700, 900, 980):
        noise = frame_noise(x0.shape, pg, m.frame_noise_correlation)
        tt = torch.full((len(items),), t)
        x_t = sched.add_noise(x0, noise, tt)
        errs = {}
        for name, c in (("true", true), ("opposite", torch.tensor([OPP[int(v)] for v in true.tolist()], dtype=torch.float32)), ("none", torch.zeros_like(true))):
            pred = torch.cat([model(unet_input(x_t[i:i+8], x0[i:i+8]), tt[i:i+8], embed(caps[i:i+8]), fps=fps[i:i+8], conditions={"direction": c[i:i+8] * 100}) for i in range(0, len(items), 8)])
            errs[name] = ((pred - noise) ** 2).mean().item()
        print(f"t={t}: true {errs['true']:.6f}, opposite code {100*(errs['opposite']/errs['true']-1):+.2f} %, no code {100*(errs['none']/errs['true']-1):+.2f} %", flush=True)

if args.eval:
    # The pipeline stacks guidance as [unconditional, conditional]: the unconditional half gets no code,
    # as the clips whose caption was dropped in training.
    from vidgen.evaluation import evaluate_model, format_table

    class HandedCode(torch.nn.Module):
        """The trained base with each prompt's direction code handed in at every call."""

        def __init__(self, unet):
            super().__init__()
            self.unet, self.options, self.codes = unet, unet.options, None

        def forward(self, x, t, text, fps=None):
            b = self.codes.shape[0]
            code = self.codes if x.shape[0] == b else torch.cat([torch.zeros(x.shape[0] - b), self.codes])
            return self.unet(x, t, text, fps=fps, conditions={"direction": code * 100})

    class Steered:
        """The pipeline, with the codes of each batch's prompts set before it runs."""

        def __init__(self, pipe, base, handed):
            self.pipe, self.base, self.handed = pipe, base, handed

        def __getattr__(self, name):
            return getattr(self.pipe, name)

        def __call__(self, texts, **kwargs):
            self.base.codes = torch.tensor([next((c for w, c in CODE.items() if w and f"moving {w}" in t), 0)
                                            for t in texts], dtype=torch.float32) * self.handed
            return self.pipe(texts, **kwargs)

    base = HandedCode(model.eval())
    pipe.set_stage("base", base)
    for handed in (True, False):  # the same model and noise, with the true code and with none
        with torch.no_grad():
            report = evaluate_model(Steered(pipe, base, handed), n=args.eval, steps=25, stages=["base"], progress=False)
        print(f"sampled with {'the true code' if handed else 'no code'}:\n{format_table(report)}", flush=True)
        with open(f"{args.eval_report}-{'code' if handed else 'none'}.json", "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
