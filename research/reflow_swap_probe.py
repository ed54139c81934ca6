"""Does a base stage read the direction word on its reflow pairs? (docs/experiments.md, "Reflow".)

    python research/reflow_swap_probe.py PAIRS_FOLDER MODEL [MODEL ...]

For 48 pairs of a `vidgen data pairs` folder, each noised with its own noise to t = 999, 900 and
700, the error of the network's clean-clip estimate under the pair's caption and under the same
caption with the direction word swapped for its opposite. A network that reads the word does
worse under the swap; one that ignores it does the same under both. One-off; not imported.
"""
import re
import sys

import torch

from vidgen.pipeline import VideoPipeline
from vidgen.training.reflow_pairs import OPPOSITE, PairDataset

data = PairDataset(sys.argv[1])
idx = torch.arange(0, len(data), max(1, len(data)//48))[:48]
for model in sys.argv[2:]:
    pipe = VideoPipeline.from_pretrained(model)
    unet, sched = pipe.model.stages["base"].eval(), pipe.model.scheduler
    out = []
    for t in (999, 900, 700):
        errs = {"true": 0.0, "swap": 0.0}
        for kind in errs:
            caps = [data.captions[i] for i in idx]
            if kind == "swap":
                caps = [re.sub(r"moving (\w+)", lambda m: "moving " + OPPOSITE[m.group(1)], c) for c in caps]
            cond = pipe.encode_prompts(caps)
            x0, z = data.latents[idx], data.noise[idx]
            tt = torch.full((len(idx),), t)
            x_t = sched.add_noise(x0, z, tt)
            with torch.no_grad():
                eps = torch.cat([unet(x_t[i:i+16], tt[i:i+16], cond[i:i+16], fps=torch.full((len(x_t[i:i+16]),), 8.0)) for i in range(0, len(idx), 16)])
            a = sched.alphas_cumprod[t]
            x0_hat = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
            errs[kind] = float(((x0_hat - x0) ** 2).mean())
        out.append(f"t={t}: x0 err true {errs['true']:.4f} swap {errs['swap']:.4f} (+{100*(errs['swap']/errs['true']-1):.1f}%)")
    print(model, "; ".join(out), flush=True)
