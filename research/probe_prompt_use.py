"""How much a base stage uses each part of its prompt: the noise-prediction error on captioned
training clips with the true caption, with the motion words swapped, and with no caption.

A model that reads a word predicts the noise worse when that word is wrong. If swapping
"left" for "right" (or for "up", the other axis) costs nothing while swapping a color or
dropping the caption costs a lot, the model draws what the caption says about looks and ignores
what it says about motion (the shapes model's state; see README, "How well it does"). Every
caption, timestep and noise draw is the same for all prompts, so the differences come from the
words alone.

A base stage that takes an anchor frame (model.image_conditioning) is given each clip's own
anchor frame under every prompt, and once, with the true caption, the anchor of another clip in
the batch: how much of the prediction comes from the anchor.

With `--attention` it also prints, per timestep, how much of the spatial cross-attention
(the only place tokens enter) falls on each kind of token under the true caption: a word can
be attended to and still ignored downstream.

With `--queries` it also prints, for a base stage with text queries (model.text_queries), how
much each query reads each kind of token of the probe's captions (`TextQueryEmbedding.weights`),
from the words alone where the model has model.text_words.

With `--word-table` it also prints, for a base stage with a word table (model.word_table), the
norm of each shapes word's vector and how far apart the vectors of the words of one slot are
(`WordTableEmbedding`): a table that has learned nothing about a slot has its words' vectors equal.

With `--prior-clips N` it also measures what the words could be worth at pure noise, where the
best prediction of the clean clip is the mean of the clips that share the caption's words: the
mean latent clip of all clips, per (color, background) and per (color, background, direction),
fitted on half of N corpus clips and scored on the other half, and scored against the opposite
direction's mean.

    python research/probe_prompt_use.py --model runs/shapes/video-rep/model \
        --manifest runs/shapes/corpus64/manifest.jsonl --latent-cache runs/shapes/latents64
"""

from __future__ import annotations

import argparse

import torch
from diffusers import DDPMScheduler

from vidgen.data.dataset import VideoClipDataset
from vidgen.data.latent_cache import LatentCache
from vidgen.data.manifest import read_manifest
from vidgen.data.shapes import VOCABULARY
from vidgen.diffusion.noise import frame_noise
from vidgen.models import cascade
from vidgen.pipeline import VideoPipeline
from vidgen.training.stages import NOISE_SCHEDULE

OPPOSITES = {"left": "right", "right": "left", "up": "down", "down": "up"}
# The other axis: a model that knows horizontal from vertical but not the sign pays for this swap only.
CROSSED = {"left": "up", "right": "down", "up": "left", "down": "right"}
# A looks word, for scale: what a word the model does read costs when it is wrong.
RECOLORED = {"red": "green", "green": "blue", "blue": "red", "yellow": "magenta", "magenta": "cyan", "cyan": "yellow"}


def swap_words(caption: str, swaps: dict[str, str]) -> str:
    return " ".join(swaps.get(word, word) for word in caption.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="vidgen model folder (its base stage is probed)")
    parser.add_argument("--manifest", required=True, help="manifest of a captioned corpus")
    parser.add_argument("--latent-cache", required=True, help="its latent cache (vidgen train data.latent_cache)")
    parser.add_argument("--clips", type=int, default=12, help="captioned clips, spread over the corpus (default 12)")
    parser.add_argument("--timesteps", default="100,300,500,650,800,900,980", help="comma-separated timesteps")
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate the clips are read at (default 8)")
    parser.add_argument("--prior-clips", type=int, default=0,
                        help="also score the per-words mean clip on this many corpus clips (0: skip; needs the "
                             "manifest's slots, as `vidgen data shapes` writes them). Each (color, background, "
                             "direction) mean needs some 20 clips or its own noise dominates: give the whole "
                             "corpus (2000 for the shapes one)")
    parser.add_argument("--attention", action="store_true",
                        help="also print the cross-attention mass on each kind of token (color, direction, ...)")
    parser.add_argument("--queries", action="store_true",
                        help="also print what each text query reads (a base stage with model.text_queries)")
    parser.add_argument("--word-table", action="store_true",
                        help="also print the word table's vectors of the shapes words (a base stage with model.word_table)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.clips < 1 or args.prior_clips < 0:
        parser.error("--clips takes a whole number >= 1, --prior-clips one >= 0")
    records = [r for r in read_manifest(args.manifest) if r.get("caption")]
    if not records:
        parser.error(f"{args.manifest} has no captioned clips to probe with")
    if args.prior_clips and not all("slots" in r for r in records):
        parser.error("--prior-clips needs a manifest whose records have slots (one `vidgen data shapes` writes)")

    torch.manual_seed(args.seed)
    pipe = VideoPipeline.from_pretrained(args.model)
    unet = pipe.stages["base"].float().eval()
    frames = pipe.index.defaults.num_frames
    dataset = VideoClipDataset(records, frames, pipe.index.defaults.height, fps_range=(args.fps, args.fps),
                               latent_cache=LatentCache(args.latent_cache))
    picks = [dataset[i] for i in range(0, len(dataset), max(1, len(dataset) // args.clips))][:args.clips]
    x0 = torch.stack([item["latent_mean"] for item in picks]).float()  # (b c f h w)
    captions = [item["caption"] for item in picks]
    prompts = {"true caption": captions, "motion swapped": [swap_words(c, OPPOSITES) for c in captions],
               "axis swapped": [swap_words(c, CROSSED) for c in captions],
               "color swapped": [swap_words(c, RECOLORED) for c in captions],
               "no caption": [""] * len(captions)}
    with torch.no_grad():
        embeddings = {name: pipe.encode_prompts(texts).float() for name, texts in prompts.items()}
    anchor_frame = cascade.anchor_index(frames, pipe.index.anchor.position) if pipe.image_unet is not None else None

    def unet_input(noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:  # (b c f h w): + clean's anchor
        return noisy if anchor_frame is None else cascade.anchor_input(noisy, clean[:, :, anchor_frame], anchor_frame)

    fps = torch.full((len(picks),), args.fps)
    schedule = DDPMScheduler(**NOISE_SCHEDULE)
    generator = torch.Generator().manual_seed(args.seed)
    attention = CrossAttentionMass(unet.unet, pipe.text_encoder.tokenizer, captions) if args.attention else None

    if args.queries:
        print_query_reading(pipe, captions)
    if args.word_table:
        print_word_table(pipe)
    print(f"{args.model}: eps MSE on {len(picks)} captioned clips; in brackets, the change from the true caption")
    for t in (int(v) for v in args.timesteps.split(",")):
        noise = frame_noise(x0.shape, generator, pipe.index.frame_noise_correlation)
        timesteps = torch.full((len(picks),), t)
        noisy = schedule.add_noise(x0, noise, timesteps)
        errors = {}
        for name, embedding in embeddings.items():
            if attention is not None:
                attention.recording = name == "true caption"
            with torch.no_grad():
                errors[name] = ((unet(unet_input(noisy, x0), timesteps, embedding, fps=fps) - noise) ** 2).mean().item()
        if anchor_frame is not None:
            if attention is not None:
                attention.recording = False
            with torch.no_grad():  # the next clip's anchor frame: the same words, another layout
                prediction = unet(unet_input(noisy, x0.roll(1, 0)), timesteps, embeddings["true caption"], fps=fps)
            errors["another clip's anchor"] = ((prediction - noise) ** 2).mean().item()
        base = errors["true caption"]
        cells = [f"{name} {err:.6f}" + ("" if name == "true caption" else f" ({(err - base) / base * 100:+.2f} %)")
                 for name, err in errors.items()]
        print(f"t={t:4d}: " + ", ".join(cells), flush=True)
        if attention is not None:
            print("        cross-attention mass: " + attention.summary(), flush=True)
    if args.prior_clips:
        print_mean_clip_errors(dataset, records, args.prior_clips)


@torch.no_grad()
def print_query_reading(pipe: VideoPipeline, captions: list[str]) -> None:
    """Each text query's mean weight per kind of token over `captions` (the kinds of CrossAttentionMass)."""
    unet = pipe.stages["base"]
    if unet.text_queries is None:
        print("--queries: this base stage has no text queries (model.text_queries)")
        return
    text = pipe.encode_prompts(captions).float()
    n = pipe.text_encoder.max_length
    read = text[:, n:] if unet.options.text_words else pipe.text_encoder.tokens_in_context(text)  # what the queries see
    weights = unet.text_queries.weights(read)  # (b q n)
    kinds = [CrossAttentionMass._kinds(pipe.text_encoder.tokenizer, caption) for caption in captions]
    order = ["color", "direction", "other words", "[CLS]", "[SEP]", "padding"]
    source = "the words alone" if unet.options.text_words else "the tokens in context"
    print(f"text queries, reading {source}: mean weight per kind of token over {len(captions)} captions")
    for q in range(weights.shape[1]):
        mass = dict.fromkeys(order, 0.0)
        for clip_kinds, row in zip(kinds, weights[:, q].tolist()):
            for kind, weight in zip(clip_kinds, row):
                mass[kind] += weight / len(captions)
        print(f"  query {q}: " + ", ".join(f"{kind} {mass[kind]:.2f}" for kind in order))


@torch.no_grad()
def print_word_table(pipe: VideoPipeline) -> None:
    """The word table's vector of each shapes word, and the mean distance between the words of a slot."""
    unet = pipe.stages["base"]
    if unet.word_table is None:
        print("--word-table: this base stage has no word table (model.word_table)")
        return
    slots = {slot: list(VOCABULARY[slot]) for slot in ("direction", "color", "shape", "size", "background")}
    n = pipe.text_encoder.max_length
    empty = unet.word_table(pipe.encode_prompts([""])[:, n:].float())[0]  # [CLS] and [SEP] alone
    print("word table: |vector| per word; per slot, the mean distance between two of its words' vectors")
    for slot, words in slots.items():
        vectors = unet.word_table(pipe.encode_prompts(words)[:, n:].float()) - empty  # (w e): each word's own
        gaps = torch.cdist(vectors, vectors)
        mean_gap = gaps.sum() / (len(words) * (len(words) - 1))
        print(f"  {slot}: " + ", ".join(f"{w} {v.norm():.3f}" for w, v in zip(words, vectors))
              + f"; apart {mean_gap:.3f}")


class CrossAttentionMass:
    """Records the cross-attention weights of a diffusers U-Net (all its attn2 layers) and sums them
    by kind of token: the direction word, the color word, the other words, [CLS], [SEP], padding."""

    def __init__(self, unet, tokenizer, captions: list[str]):
        from diffusers.models.attention_processor import AttnProcessor

        self.kinds = [self._kinds(tokenizer, caption) for caption in captions]  # per clip, per token
        self.mass: dict[str, float] = {}
        self.layers = 0
        self.recording = False
        outer = self

        class Recorder(AttnProcessor):
            def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
                if outer.recording and encoder_hidden_states is not None:
                    outer.add(attn, hidden_states, encoder_hidden_states)
                return super().__call__(attn, hidden_states, encoder_hidden_states, *args, **kwargs)

        unet.set_attn_processor(Recorder())

    @staticmethod
    def _kinds(tokenizer, caption: str) -> list[str]:
        words = tokenizer.convert_ids_to_tokens(tokenizer(caption)["input_ids"])
        named = {**{w: "direction" for w in OPPOSITES}, **{w: "color" for w in RECOLORED}}
        kinds = [named.get(w, w if w in ("[CLS]", "[SEP]") else "other words") for w in words]
        return kinds + ["padding"] * (tokenizer.model_max_length - len(kinds))

    def add(self, attn, hidden_states, encoder_hidden_states) -> None:
        # (b f) pixels tokens after the heads are averaged; the frames of clip i are rows i*f .. (i+1)*f - 1
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, None)
        probs = probs.view(-1, attn.heads, *probs.shape[1:]).mean(dim=(1, 2))  # (b*f, tokens)
        per_clip = probs.view(len(self.kinds), -1, probs.shape[-1]).mean(1)  # (b, tokens)
        for kinds, weights in zip(self.kinds, per_clip.tolist()):
            for kind, weight in zip(kinds, weights):
                self.mass[kind] = self.mass.get(kind, 0.0) + weight / len(self.kinds)
        self.layers += 1

    def summary(self) -> str:
        """The mean mass per kind over the layers recorded since the last summary, then a reset."""
        order = ["color", "direction", "other words", "[CLS]", "[SEP]", "padding"]
        text = ", ".join(f"{kind} {self.mass.get(kind, 0.0) / max(self.layers, 1):.3f}" for kind in order)
        self.mass, self.layers = {}, 0
        return text


def print_mean_clip_errors(dataset: VideoClipDataset, records: list[dict], clips: int) -> None:
    """x0 MSE of the best guess at pure noise, the mean clip of the clips sharing some words."""
    picks = range(0, len(dataset), max(1, len(dataset) // clips))
    latents = torch.stack([dataset[i]["latent_mean"] for i in picks]).float()  # (n c f h w)
    slots = [records[i]["slots"] for i in picks]
    fit, scored = range(0, len(slots), 2), range(1, len(slots), 2)

    def error(keys: tuple[str, ...], swaps: dict[str, str] | None = None) -> float:
        groups: dict[tuple, list[int]] = {}
        for i in fit:
            groups.setdefault(tuple(slots[i][k] for k in keys), []).append(i)
        means = {words: latents[members].mean(0) for words, members in groups.items()}
        total, counted = 0.0, 0
        for i in scored:
            words = tuple((swaps or {}).get(slots[i][k], slots[i][k]) for k in keys)
            if words in means:
                total, counted = total + ((latents[i] - means[words]) ** 2).mean().item(), counted + 1
        return total / max(counted, 1)

    looks = ("color", "background")
    nothing, base = error(()), error(looks)
    true, opposite = error(looks + ("direction",)), error(looks + ("direction",), OPPOSITES)
    print(f"mean clip at pure noise ({len(slots)} clips, half fitted, half scored), x0 MSE: no words {nothing:.4f}; "
          f"color+background {base:.4f} ({(base - nothing) / nothing * 100:+.1f} %); + the true direction {true:.4f} ({(true - base) / base * 100:+.1f} %); + the opposite "
          f"direction {opposite:.4f} ({(opposite - true) / true * 100:+.1f} % over the true)")


if __name__ == "__main__":
    main()
