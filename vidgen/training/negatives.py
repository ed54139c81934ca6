"""Hard negative captions for the caption-contrast objective (vidgen.diffusion.losses.caption_contrast).

A clip's negatives are the corpus captions one word away from its own: same length, exactly
one word different ("a red circle moving left" -> "a red circle moving right", "... a blue
circle ..."). Such minimally different captions are the hard negatives of NegCLIP (Yuksekgonul
et al. 2023, "When and why vision-language models behave like bags-of-words"): a model that
reads a caption as a bag of its frequent words cannot tell them apart. Nothing here knows what
the words mean; the negatives come only from the captions the run is allowed to see (those not
withheld), so held-out prompts never enter training, not even as negatives.
"""

from __future__ import annotations

from collections import defaultdict

import torch


class CaptionNeighbours:
    """For each caption of a corpus, the other corpus captions that differ from it in one word."""

    def __init__(self, captions: list[str]):
        # Captions one word apart share the caption with that word blanked out: index by every such key.
        by_key: dict[tuple, set[str]] = defaultdict(set)
        unique = sorted({c for c in captions if c})
        for caption in unique:
            for key in self._keys(caption):
                by_key[key].add(caption)
        self.neighbours: dict[str, list[str]] = {
            caption: sorted({other for key in self._keys(caption) for other in by_key[key]} - {caption})
            for caption in unique}

    @staticmethod
    def _keys(caption: str) -> list[tuple]:
        words = caption.split()
        return [(i, *words[:i], *words[i + 1:]) for i in range(len(words))]

    def __len__(self) -> int:
        return sum(1 for n in self.neighbours.values() if n)

    def draw(self, captions: list[str], generator: torch.Generator) -> list[str | None]:
        """One neighbour per caption, drawn uniformly (None for the empty prompt and for captions
        with no neighbour). One draw per caption from `generator`, so a step is reproducible."""
        draws = torch.rand(len(captions), generator=generator).tolist()
        out: list[str | None] = []
        for caption, u in zip(captions, draws):
            options = self.neighbours.get(caption, [])
            out.append(options[int(u * len(options))] if options else None)
        return out
