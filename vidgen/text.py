"""Text encoders: prompts -> token embeddings (b, n, d) for the U-Net's cross-attention.

Make-A-Video conditions on text through the text-to-image model's own text pathway (section
3.1); here that is the text encoder of the image model that was inflated, loaded with
transformers from a local folder:

- the Stable Diffusion layout: `FOLDER/text_encoder/` (CLIPTextModel) and `FOLDER/tokenizer/`;
- any encoder-only model in one folder (`AutoModel` + `AutoTokenizer`, e.g. BERT);
- T5 (Imagen's frozen text encoder, Saharia et al. 2022 section 2.1): only its encoder stack is
  built and loaded (`T5EncoderModel`), from a `T5EncoderModel` folder or a full `T5Model` one,
  whose decoder weights are left on disk;
- the SDXL layout (a second encoder in `text_encoder_2/`): vidgen.interop.sdxl.SDXLTextEncoder.

Prompts are padded to a fixed length, so every batch has the same n; longer prompts are cut
to it with a warning. The empty prompt's embedding is the null conditioning: the
unconditional branch of classifier-free guidance, and the condition of unlabeled video.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from transformers import (AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel, MT5EncoderModel, PreTrainedModel,
                          T5EncoderModel, UMT5EncoderModel)
from transformers.utils import logging as transformers_logging

from .errors import VidgenError
from .weights import refuse_pickles

logger = logging.getLogger(__name__)
transformers_logging.disable_progress_bar()  # per-file "Loading weights" bars; vidgen shows its own progress

MODEL_DIR, TOKENIZER_DIR = "text_encoder", "tokenizer"
# Model types whose folder holds an encoder-decoder: the encoder alone is built (no decoder in memory).
ENCODER_CLASSES = {"clip": CLIPTextModel, "t5": T5EncoderModel, "mt5": MT5EncoderModel, "umt5": UMT5EncoderModel}


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

    @property
    def hidden_size(self) -> int:
        """d, the width of the embeddings: must equal the U-Net's cross_attention_dim."""
        return self.model.config.hidden_size

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None,
                        max_length: int | None = None) -> "TextEncoder":
        """Load from an SD-layout folder (text_encoder/ + tokenizer/; with text_encoder_2/ too, SDXL's
        two encoders) or an encoder-only model folder."""
        from .interop.sdxl import SDXLTextEncoder, is_sdxl_folder

        folder = Path(folder)
        if is_sdxl_folder(folder):
            return SDXLTextEncoder.from_pretrained(folder, dtype, max_length)
        model_dir, tokenizer_dir = folder, folder
        if (folder / MODEL_DIR).is_dir():
            model_dir, tokenizer_dir = folder / MODEL_DIR, folder / TOKENIZER_DIR
        try:
            config = AutoConfig.from_pretrained(model_dir)
            model_class = ENCODER_CLASSES.get(config.model_type, AutoModel)  # a full CLIP: its text half
            if model_class is AutoModel and getattr(config, "is_encoder_decoder", False):
                raise ValueError(f"it is an encoder-decoder model ({config.model_type}) vidgen cannot take the "
                                 f"encoder of; T5, mT5, UMT5 and CLIP folders work")
            refuse_pickles(model_dir)
            model, info = model_class.from_pretrained(model_dir, use_safetensors=True, dtype=dtype,
                                                      output_loading_info=True)
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        except (OSError, ValueError) as exc:
            raise VidgenError(f"cannot load a text encoder from {folder}: {exc}. Expected a folder with "
                              f"{MODEL_DIR}/ and {TOKENIZER_DIR}/ (Stable Diffusion layout) or a transformers "
                              f"encoder model folder with safetensors weights and tokenizer files") from None
        missing = [*info.get("missing_keys", []), *(k for k, *_ in info.get("mismatched_keys", []))]
        if missing:  # transformers would initialise them randomly and carry on
            raise VidgenError(f"the weights in {model_dir} do not fit the text model its config.json describes: "
                              f"missing or misshapen {', '.join(sorted(map(str, missing))[:5])}")
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

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token embeddings of `prompts`: (b, n, d) with n = max_length, on the model's device and dtype."""
        self._warn_if_truncated(prompts)
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                                return_tensors="pt").to(self.model.device)
        mask = tokens.attention_mask if self.use_attention_mask else None
        return self.model(input_ids=tokens.input_ids, attention_mask=mask).last_hidden_state  # (b n d)

    def null(self, batch_size: int = 1) -> torch.Tensor:
        """The empty prompt's embedding (the null conditioning), (batch_size, n, d); computed once
        per device and dtype.

        A constant, usable both in sampling (inference mode) and as the condition of unlabeled
        video in training.
        """
        key = (self.model.device, self.model.dtype)
        if key not in self._null:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor, even when first asked in inference
                self._null[key] = self.encode([""])
        return self._null[key].expand(batch_size, -1, -1)
