"""Hugging Face text models with the signature people deploy them with.

``input_ids`` + ``attention_mask`` (+ ``token_type_ids`` where the model has them),
batch and sequence dynamic. A sequence classifier returns logits; a bare encoder
(e.g. a sentence-transformers directory) returns the pooled, optionally
normalised embedding its own config files declare (``modules.json`` +
``1_Pooling/config.json``), optionally also the last hidden state.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelSourceError, OptionError
from .io import BATCH, SEQUENCE, AxisRange, InputSpec, IOSpec, OutputSpec

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
POOLINGS = ("mean", "cls", "max", "mean_sqrt_len")
#: Default sequence profile: opt capped at 128 (what most sentences fit), max at 512.
OPT_SEQUENCE, MAX_SEQUENCE = 128, 512
DEFAULT_MAX_BATCH = 32


@dataclass(frozen=True)
class Pooling:
    """How a bare encoder's token states become one embedding, and where that was read."""

    mode: str = "mean"
    normalize: bool = False
    origin: str = "default (no sentence-transformers pooling config found)"


class TextModel(nn.Module):
    """``forward(input_ids, attention_mask[, token_type_ids])`` → logits, or embedding (+ last hidden state).

    The declared input order is always TEXT_INPUTS order, so positional feeds line up.
    """

    def __init__(self, model: nn.Module, input_names: list[str], head: str,
                 pooling: Pooling | None = None, hidden: bool = False) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.head = head
        self.pooling = pooling or Pooling()
        self.hidden = hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # Named parameters, not *args: torch.export matches dynamic_shapes to them one by one.
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        out = self.model(**kw)
        if self.head == "logits":
            return out.logits
        states = out.last_hidden_state
        emb = pool(states, kw.get("attention_mask"), self.pooling.mode)
        if self.pooling.normalize:
            emb = F.normalize(emb, p=2.0, dim=-1)
        return (emb, states) if self.hidden else emb


def pool(states: torch.Tensor, mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """sentence-transformers' pooling: masked mean, CLS token, masked max, mean·√len."""
    if mode == "cls":
        return states[:, 0]
    m = (torch.ones(states.shape[:2], dtype=states.dtype) if mask is None else mask.to(states.dtype)).unsqueeze(-1)
    if mode == "max":
        return (states + (m - 1.0) * 1e9).max(dim=1).values
    total = (states * m).sum(dim=1)
    count = m.sum(dim=1).clamp_min(1e-9)
    return total / count if mode == "mean" else total / count.sqrt()


def read_pooling(directory: Path) -> Pooling:
    """The pooling and normalisation a sentence-transformers directory declares."""
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return Pooling()
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        kinds = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules}
    except (ValueError, AttributeError, TypeError) as exc:
        raise ModelSourceError(f"{modules_file} is not valid sentence-transformers JSON ({exc})",
                               fix="restore modules.json from the model's original files") from None
    mode = "mean"
    pooling_entry = kinds.get("Pooling")
    if pooling_entry is not None:
        cfg_file = directory / str(pooling_entry.get("path", "1_Pooling")) / "config.json"
        if cfg_file.is_file():
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
            flags = {"cls": cfg.get("pooling_mode_cls_token"), "max": cfg.get("pooling_mode_max_tokens"),
                     "mean_sqrt_len": cfg.get("pooling_mode_mean_sqrt_len_tokens"),
                     "mean": cfg.get("pooling_mode_mean_tokens")}
            chosen = [k for k, v in flags.items() if v]
            if len(chosen) > 1:
                raise ModelSourceError(f"{cfg_file} combines poolings {chosen}; pela-export exports one",
                                       fix="keep one pooling_mode_* flag true")
            mode = chosen[0] if chosen else "mean"
    return Pooling(mode, "Normalize" in kinds, f"sentence-transformers config ({modules_file.name})")


def text_inputs(model: nn.Module, directory: Path) -> list[str]:
    """The inputs the tokenizer produces and the model's forward accepts, in TEXT_INPUTS order."""
    names: list[str] | None = None
    tok_cfg = directory / "tokenizer_config.json"
    if tok_cfg.is_file():
        names = json.loads(tok_cfg.read_text(encoding="utf-8")).get("model_input_names")
    params = inspect.signature(model.forward).parameters
    accepted = [n for n in TEXT_INPUTS if n in params]
    if names:
        return [n for n in TEXT_INPUTS if n in names and n in accepted]
    if "token_type_ids" in accepted and int(getattr(model.config, "type_vocab_size", 0) or 0) < 1:
        accepted.remove("token_type_ids")
    return accepted


#: Families whose position ids start after the padding index (RoBERTa's ``create_position_ids_from_input_ids``):
#: a sequence may use max_position_embeddings - (pad_token_id + 1) positions (514 -> 512 for roberta-base).
POSITION_OFFSET_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer",
                                   "data2vec-text", "ibert", "roberta-prelayernorm", "mpnet"})


def sequence_range(config: Any, directory: Path, user_length: int | None) -> tuple[AxisRange, str]:
    """min/opt/max of the sequence axis from the config (``--max-length`` caps max and opt)."""
    positions = int(getattr(config, "max_position_embeddings", MAX_SEQUENCE) or MAX_SEQUENCE)
    origin = f"config (max_position_embeddings {positions})"
    pad = getattr(config, "pad_token_id", None)
    if getattr(config, "model_type", None) in POSITION_OFFSET_TYPES and isinstance(pad, int) and pad >= 0:
        positions -= pad + 1
        origin = f"config (max_position_embeddings {positions + pad + 1} minus padding offset {pad + 1})"
    top = min(positions, MAX_SEQUENCE)
    st_cfg = directory / "sentence_bert_config.json"
    if st_cfg.is_file():
        declared = json.loads(st_cfg.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(declared, int) and 1 < declared < top:
            top, origin = declared, f"sentence_bert_config.json (max_seq_length {declared})"
    if user_length is not None:
        if not 2 <= user_length <= positions:
            raise OptionError(f"--max-length {user_length} is outside the model's positions (2..{positions})",
                              fix=f"pass --max-length between 2 and {positions} (max_position_embeddings)")
        top, origin = user_length, "--max-length"
    return AxisRange(1, min(OPT_SEQUENCE, top), top), origin


def text_io(input_names: list[str], config: Any, seq: AxisRange, head: str, hidden: bool) -> IOSpec:
    """The I/O description of a text model: every tokenizer input (batch, sequence), one or two outputs."""
    vocab = int(getattr(config, "vocab_size", 100) or 100)
    types = int(getattr(config, "type_vocab_size", 1) or 1)
    roles = {"input_ids": ("token_ids", 0, vocab), "attention_mask": ("attention_mask", 0, 2),
             "token_type_ids": ("token_type_ids", 0, types)}
    inputs = tuple(InputSpec(n, "int64", (BATCH, SEQUENCE), *roles[n]) for n in input_names)
    if head == "logits":
        outputs: tuple[OutputSpec, ...] = (OutputSpec("logits", (BATCH,), role="logits"),)
    else:
        outputs = (OutputSpec("sentence_embedding", (BATCH,), role="embedding"),)
        if hidden:
            outputs += (OutputSpec("last_hidden_state", (BATCH, SEQUENCE), role="hidden_state"),)
    return IOSpec(inputs, outputs, {BATCH: AxisRange(1, 1, DEFAULT_MAX_BATCH), SEQUENCE: seq})
