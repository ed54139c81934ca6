"""Stable Diffusion XL layouts: two text encoders, and the pooled text and size conditioning.

SDXL (Podell et al. 2023, section 2.1 and 2.2) conditions its U-Net on
- the penultimate hidden states of two text encoders, CLIP ViT-L (`text_encoder/`, a
  CLIPTextModel) and OpenCLIP ViT-bigG (`text_encoder_2/`, a CLIPTextModelWithProjection),
  concatenated on the channel axis: the cross-attention tokens (b, n, d1 + d2);
- the second encoder's pooled, projected output (b, p), and six "micro-conditioning" numbers:
  original size (h, w), crop top-left (y, x) and target size (h, w) (section 2.2). diffusers'
  `UNet2DConditionModel` with `addition_embed_type="text_time"` takes both as
  `added_cond_kwargs={"text_embeds", "time_ids"}` and adds their embedding to the time embedding.

vidgen's samplers and training loops carry one condition tensor (b, n, d) per prompt through
guidance, candidate selection and batching. So that the pooled embedding and the size ids travel
with the tokens through all of that unchanged, `SDXLTextEncoder.encode` appends them as extra
rows of the token tensor: (b, n + r, d), the extra rows holding [pooled (p) | time ids (6) |
zeros]. `VideoUNet.forward` splits them off again (`split_condition`) before cross-attention.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

from ..errors import VidgenError

SECOND_MODEL_DIR, SECOND_TOKENIZER_DIR = "text_encoder_2", "tokenizer_2"
NUM_TIME_IDS = 6  # original (h, w), crop top-left (y, x), target (h, w): SDXL base's micro-conditioning


def is_sdxl_folder(folder: str | os.PathLike) -> bool:
    return (Path(folder) / SECOND_MODEL_DIR).is_dir()


def is_sdxl_unet(config) -> bool:
    """Whether a diffusers U-Net config takes SDXL's added conditioning (pooled text + time ids)."""
    return getattr(config, "addition_embed_type", None) == "text_time"


def pooled_dim(config) -> int:
    """p, the pooled text embedding's width an SDXL U-Net takes: its added-embedding input less the
    six time ids' sinusoidal embeddings."""
    return config.projection_class_embeddings_input_dim - NUM_TIME_IDS * config.addition_time_embed_dim


def packed_rows(pooled: int, width: int) -> int:
    """Rows of width d that hold the pooled embedding and the time ids."""
    return math.ceil((pooled + NUM_TIME_IDS) / width)


def pack_condition(tokens: torch.Tensor, pooled: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
    """(b n d) tokens, (b p) pooled, (b 6) time ids -> (b, n + r, d)."""
    b, _, d = tokens.shape
    r = packed_rows(pooled.shape[1], d)
    extra = tokens.new_zeros(b, r * d)
    extra[:, :pooled.shape[1]] = pooled
    extra[:, pooled.shape[1]:pooled.shape[1] + NUM_TIME_IDS] = time_ids
    return torch.cat([tokens, extra.view(b, r, d)], dim=1)  # (b n+r d)


def split_condition(condition: torch.Tensor, config) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(b, n + r, d) packed condition -> (b n d) tokens and the U-Net's added_cond_kwargs
    {"text_embeds": (b p), "time_ids": (b 6)}."""
    b, _, d = condition.shape
    p = pooled_dim(config)
    r = packed_rows(p, d)
    extra = condition[:, -r:].reshape(b, r * d)
    return condition[:, :-r], {"text_embeds": extra[:, :p], "time_ids": extra[:, p:p + NUM_TIME_IDS]}


class SDXLTextEncoder(nn.Module):
    """SDXL's two text encoders with their tokenizers; `encode(prompts)` -> the packed (b, n + r, d).

    The same interface as vidgen.text.TextEncoder (whose `model`/`tokenizer` here are the first
    encoder's). `image_size` (h, w) in pixels sets the time ids: original and target size both,
    crop (0, 0), as SDXL samples at its own size; the pipeline sets it to each call's size.
    """

    def __init__(self, model: CLIPTextModel, tokenizer, model_2: CLIPTextModelWithProjection, tokenizer_2,
                 max_length: int | None = None):
        super().__init__()
        self.model, self.model_2 = model.eval(), model_2.eval()
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        limits = [max_length, tokenizer.model_max_length, tokenizer_2.model_max_length,
                  model.config.max_position_embeddings, model_2.config.max_position_embeddings]
        self.max_length = tokenizer.model_max_length = tokenizer_2.model_max_length = min(n for n in limits if n)
        self.image_size: tuple[int, int] = (1024, 1024)

    @property
    def hidden_size(self) -> int:
        """d1 + d2, the width of the concatenated tokens (the U-Net's cross_attention_dim)."""
        return self.model.config.hidden_size + self.model_2.config.hidden_size

    @property
    def pooled_size(self) -> int:
        return self.model_2.config.projection_dim

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None,
                        max_length: int | None = None) -> "SDXLTextEncoder":
        folder = Path(folder)
        try:
            model = CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=True, dtype=dtype)
            model_2 = CLIPTextModelWithProjection.from_pretrained(folder / SECOND_MODEL_DIR, use_safetensors=True,
                                                                  dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
            tokenizer_2 = AutoTokenizer.from_pretrained(folder / SECOND_TOKENIZER_DIR)
        except (OSError, ValueError) as exc:
            raise VidgenError(f"cannot load SDXL's text encoders from {folder}: {exc}. Expected text_encoder/ "
                              f"(CLIPTextModel), text_encoder_2/ (CLIPTextModelWithProjection), tokenizer/ and "
                              f"tokenizer_2/ with safetensors weights") from None
        return cls(model, tokenizer, model_2, tokenizer_2, max_length)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        self.model.save_pretrained(folder / "text_encoder")
        self.tokenizer.save_pretrained(folder / "tokenizer")
        self.model_2.save_pretrained(folder / SECOND_MODEL_DIR)
        self.tokenizer_2.save_pretrained(folder / SECOND_TOKENIZER_DIR)

    def time_ids(self, batch: int) -> torch.Tensor:
        """(b 6): (h, w) original, (0, 0) crop, (h, w) target."""
        h, w = self.image_size
        ids = torch.tensor([h, w, 0, 0, h, w], dtype=self.model.dtype, device=self.model.device)
        return ids.expand(batch, -1)

    def _tokens(self, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
        return tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                         return_tensors="pt").input_ids.to(self.model.device)

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """(b, n + r, d1 + d2): both encoders' penultimate hidden states concatenated, then the
        second's pooled projection and the time ids in r packed rows (module docstring)."""
        out = self.model(self._tokens(self.tokenizer, prompts), output_hidden_states=True)
        out_2 = self.model_2(self._tokens(self.tokenizer_2, prompts), output_hidden_states=True)
        tokens = torch.cat([out.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)  # (b n d1+d2)
        return pack_condition(tokens, out_2.text_embeds, self.time_ids(len(prompts)))

    def null(self, batch_size: int = 1) -> torch.Tensor:
        """The unconditional branch as SDXL base samples it (force_zeros_for_empty_prompt): zero
        tokens and pooled embedding, the same time ids as the prompts."""
        tokens = torch.zeros(batch_size, self.max_length, self.hidden_size, dtype=self.model.dtype,
                             device=self.model.device)
        pooled = torch.zeros(batch_size, self.pooled_size, dtype=self.model.dtype, device=self.model.device)
        return pack_condition(tokens, pooled, self.time_ids(batch_size))
