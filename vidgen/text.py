"""Text encoders: prompts -> token embeddings (b, n, d) for the U-Net's cross-attention.

Make-A-Video conditions on text through the text-to-image model's own text pathway (section
3.1); here that is the text encoder of the image model that was inflated, loaded with
transformers from a local folder:

- the Stable Diffusion layout: `FOLDER/text_encoder/` (CLIPTextModel) and `FOLDER/tokenizer/`;
- any encoder-only model in one folder (`AutoModel` + `AutoTokenizer`, e.g. BERT).

Prompts are padded to a fixed length, so every batch has the same n; longer prompts are cut
to it with a warning. The empty prompt's embedding is the null conditioning: the
unconditional branch of classifier-free guidance, and the condition of unlabeled video.

With `words` set the prompt is given twice, `(b, 2n, d)`: its tokens in context (the last
layer, what cross-attention reads), then the same tokens word by word, for a video U-Net whose
text embedding reads single words (`InflationOptions.words`):

- `words="embedding"`: each token from the embedding layer, before any attention mixes them
  (`InflationOptions.text_words`);
- `words="ids"`: each token's id itself, as two one-hot codes (`word_codes`), padding all zeros
  (`InflationOptions.word_table`).

One tensor keeps classifier-free guidance, negative prompts and the training loop's caption
cache unchanged; `tokens_in_context` takes the first half back.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel, PreTrainedModel
from transformers.utils import logging as transformers_logging

from .errors import VidgenError

logger = logging.getLogger(__name__)
transformers_logging.disable_progress_bar()  # per-file "Loading weights" bars; vidgen shows its own progress

MODEL_DIR, TOKENIZER_DIR = "text_encoder", "tokenizer"
WORD_LAYOUTS = ("embedding", "ids")  # what `encode(..., words=)` gives after the tokens in context


def residue_moduli(width: int) -> tuple[int, int]:
    """(p, q) for `TextEncoder.word_codes` of a `width`-wide encoder: coprime, p + q = width, p as
    near width / 2 as that allows (for 384: 191 and 193)."""
    p = next(p for p in range(width // 2, 0, -1) if math.gcd(p, width - p) == 1)
    return p, width - p


class TextEncoder(nn.Module):
    """A transformers text model with its tokenizer; `encode(prompts)` -> (b, n, d).

    n is the tokenizer's length limit, capped by the model's position table, or `max_length`
    where given (it is then stored as the tokenizer's limit, so a saved encoder keeps it).
    """

    def __init__(self, model: PreTrainedModel, tokenizer, max_length: int | None = None):
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        limits = [max_length, tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None)]
        self.max_length = tokenizer.model_max_length = min(n for n in limits if n)
        # Stable Diffusion's U-Nets were trained on CLIP embeddings of padded prompts without a mask.
        self.use_attention_mask = not isinstance(model, CLIPTextModel)
        self._null: dict[tuple, torch.Tensor] = {}
        self._warned_codes = False  # word_codes warns once where two ids can share a code

    @property
    def hidden_size(self) -> int:
        """d, the width of the embeddings: must equal the U-Net's cross_attention_dim."""
        return self.model.config.hidden_size

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None,
                        max_length: int | None = None) -> "TextEncoder":
        """Load from an SD-layout folder (text_encoder/ + tokenizer/) or an encoder-only model folder."""
        folder = Path(folder)
        model_dir, tokenizer_dir = folder, folder
        if (folder / MODEL_DIR).is_dir():
            model_dir, tokenizer_dir = folder / MODEL_DIR, folder / TOKENIZER_DIR
        try:
            config = AutoConfig.from_pretrained(model_dir)
            model_class = CLIPTextModel if config.model_type == "clip" else AutoModel  # a full CLIP: its text half
            model = model_class.from_pretrained(model_dir, use_safetensors=True, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        except (OSError, ValueError) as exc:
            raise VidgenError(f"cannot load a text encoder from {folder}: {exc}. Expected a folder with "
                              f"{MODEL_DIR}/ and {TOKENIZER_DIR}/ (Stable Diffusion layout) or a transformers "
                              f"encoder model folder with safetensors weights and tokenizer files") from None
        return cls(model, tokenizer, max_length)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write `folder/text_encoder/` and `folder/tokenizer/`."""
        self.model.save_pretrained(Path(folder) / MODEL_DIR)
        self.tokenizer.save_pretrained(Path(folder) / TOKENIZER_DIR)

    def _warn_if_truncated(self, prompts: Sequence[str]) -> None:
        # One token past the limit tells whether a prompt is longer than it.
        ids = self.tokenizer(list(prompts), max_length=self.max_length + 1, truncation=True).input_ids
        for prompt, tokens in zip(prompts, ids):
            if len(tokens) > self.max_length:
                kept = self.tokenizer.decode(tokens[:self.max_length], skip_special_tokens=True)
                logger.warning("prompt %r is longer than the %d tokens the text encoder takes; it was cut to %r",
                               prompt, self.max_length, kept)

    def encode(self, prompts: Sequence[str], words: str | None = None) -> torch.Tensor:
        """Token embeddings of `prompts`: (b, n, d) with n = max_length, on the model's device and
        dtype; with `words` ("embedding" or "ids"), (b, 2n, d): the n tokens in context, then the
        same n word by word."""
        if words not in (None, *WORD_LAYOUTS):
            raise VidgenError(f"words must be one of {WORD_LAYOUTS} or None, got {words!r}")
        self._warn_if_truncated(prompts)
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                                return_tensors="pt").to(self.model.device)
        mask = tokens.attention_mask if self.use_attention_mask else None
        out = self.model(input_ids=tokens.input_ids, attention_mask=mask, output_hidden_states=words == "embedding")
        if words is None:
            return out.last_hidden_state  # (b n d)
        if words == "ids":
            codes = self.word_codes(tokens.input_ids) * tokens.attention_mask[..., None]  # padding: no word
            return torch.cat([out.last_hidden_state, codes.to(out.last_hidden_state.dtype)], dim=1)  # (b 2n d)
        # hidden_states[0] is the embedding layer's output: each token's own vector (plus its position).
        # In all-MiniLM-L6-v2 "left" and "right" have cosine 0.50 there, and "left" in two captions
        # 0.99; at the last layer 0.73 and 0.77: context moves a word as far as its meaning does.
        return torch.cat([out.last_hidden_state, out.hidden_states[0]], dim=1)  # (b 2n d)

    @property
    def residue_moduli(self) -> tuple[int, int]:
        """(p, q) of `word_codes` for this encoder's width (`residue_moduli`)."""
        return residue_moduli(self.hidden_size)

    def word_codes(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(b, n) token ids -> (b, n, d) codes: a one at (id mod p) and one at p + (id mod q).

        By the Chinese remainder theorem two ids below p * q (36863 for d = 384, past the
        30522 words of MiniLM's vocabulary) never share both residues, so the code names the
        token exactly, in 0s and 1s that half precision keeps. A linear map of it gives each word
        the sum of two columns, one per residue, as in the quotient-remainder trick for embedding
        tables (Shi et al. 2020): two words share a column where one residue agrees (among the
        shapes words in MiniLM's tokenizer "red" shares one with [CLS], "yellow" one with
        "triangle"), never both. The tokenizer's own ids are all that is read: no position, no
        context, no other word.
        """
        p, q = self.residue_moduli
        if len(self.tokenizer) > p * q and not self._warned_codes:
            self._warned_codes = True
            logger.warning("the word codes of a %d-wide encoder tell apart %d ids, and the vocabulary has %d: "
                           "some words share a code", self.hidden_size, p * q, len(self.tokenizer))
        codes = torch.zeros(*input_ids.shape, self.hidden_size, device=input_ids.device)
        codes.scatter_(-1, (input_ids % p)[..., None], 1.0)
        codes.scatter_(-1, (p + input_ids % q)[..., None], 1.0)
        return codes  # (b n d)

    def tokens_in_context(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(b, n, d): the in-context tokens of `encode`'s output, whichever layout it has."""
        return embeddings[:, :self.max_length]

    def null(self, batch_size: int = 1, words: str | None = None) -> torch.Tensor:
        """The empty prompt's embedding (the null conditioning), (batch_size, n, d), or (batch_size, 2n, d)
        with `words` (as in `encode`); computed once per device/dtype and layout.

        A constant, usable both in sampling (inference mode) and as the condition of unlabeled
        video in training.
        """
        key = (self.model.device, self.model.dtype, words)
        if key not in self._null:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor, even when first asked in inference
                self._null[key] = self.encode([""], words=words)
        return self._null[key].expand(batch_size, -1, -1)
