"""Text for a text model: its own tokenizer, token feeds keyed by the model's input names.

Split from :mod:`.text` (reading the files): this half needs the model (its
directory, I/O description and label mapping) and the ``transformers`` tokenizer.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, ModelSourceError
from .text import TextDataset, load_text_dataset

def model_directory(loaded: Any) -> Path:
    """The directory of an ``hf:DIR`` model (where its tokenizer is saved)."""
    source = str(getattr(loaded, "source", ""))
    if not source.startswith("hf:"):
        raise ModelSourceError(f"text data needs the model's tokenizer, and {getattr(loaded, 'name', source)!r} "
                               f"({source}) has none pela-export can load",
                               fix="pass the model as hf:DIR with its tokenizer files saved in DIR")
    return Path(source[3:])


def load_tokenizer(loaded: Any) -> Any:
    """The model's own tokenizer (``AutoTokenizer.from_pretrained(DIR, local_files_only=True)``)."""
    from ..models.hf import TOKENIZER_FILES

    directory = model_directory(loaded)
    present = [f for f in TOKENIZER_FILES if (directory / f).is_file()]
    if not present:
        raise ModelSourceError(f"{str(directory)!r} has no tokenizer files (looked for {', '.join(TOKENIZER_FILES)})",
                               fix="save the tokenizer beside the model: tokenizer.save_pretrained(DIR)")
    try:
        import transformers

        return transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelSourceError(f"cannot load the tokenizer in {str(directory)!r} ({first[:200]})",
                               fix="save it again with tokenizer.save_pretrained(DIR)") from None


def tokenize(tokenizer: Any, texts: Sequence[str], input_names: Sequence[str], max_length: int,
             pad_to_max: bool = False) -> dict[str, np.ndarray]:
    """int64 arrays keyed by ``input_names``: truncated at ``max_length``, padded to the longest text
    (or to ``max_length``); inputs the tokenizer does not produce (e.g. token types) are zeros."""
    if not texts:
        raise DatasetError("no texts to tokenize", fix="pass a text file with at least one row")
    enc = tokenizer(list(texts), padding="max_length" if pad_to_max else "longest", truncation=True,
                    max_length=int(max_length), return_attention_mask=True,
                    return_token_type_ids="token_type_ids" in input_names, return_tensors="np")
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for name in input_names:
        out[name] = np.asarray(enc[name], dtype=np.int64) if name in enc else np.zeros_like(ids)
    return out


def check_token_ids(feeds: Mapping[str, np.ndarray], spec: Any, directory: Path | str) -> None:
    """Token ids must fit the model's vocabulary (a tokenizer saved for another model does not)."""
    for t in spec.inputs:
        if t.role == "token_ids" and t.name in feeds and t.high is not None and feeds[t.name].size:
            top = int(feeds[t.name].max())
            if top >= int(t.high):
                raise ModelSourceError(f"the tokenizer in {str(directory)!r} produced token id {top}, but the model's "
                                       f"vocabulary has {t.high} entries", fix="save the tokenizer the model was trained "
                                                                               "with beside it (tokenizer.save_pretrained(DIR))")


def model_label2id(loaded: Any) -> dict[str, int] | None:
    """The classifier's ``config.label2id`` (None for bare encoders and models without one)."""
    config = getattr(getattr(getattr(loaded, "model", None), "model", None), "config", None)
    mapping = getattr(config, "label2id", None)
    return dict(mapping) if isinstance(mapping, Mapping) and mapping else None


def trim_padding(batch: Any) -> Any:
    """Drop trailing sequence columns that are padding in every row (``attention_mask`` all 0).

    Outputs do not change (those positions are masked); a batch of short texts runs at its own
    length. Arrays and tensors alike; anything without an attention mask is returned as is.
    """
    if not isinstance(batch, Mapping) or "attention_mask" not in batch:
        return batch
    mask = batch["attention_mask"]
    if len(getattr(mask, "shape", ())) != 2 or mask.shape[1] == 0:
        return batch
    used = np.flatnonzero(np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask).any(axis=0))
    keep = int(used[-1]) + 1 if used.size else 1
    if keep == mask.shape[1]:
        return batch
    return {k: (v[:, :keep] if len(getattr(v, "shape", ())) >= 2 and v.shape[1] == mask.shape[1] else v)
            for k, v in batch.items()}


def _dims(shape: Sequence[Any]) -> str:
    return ", ".join(str(d) for d in shape)


@dataclass
class TokenizedSplit:
    """Model-ready inputs of one split (``x``: int64 arrays by input name) with labels and provenance."""

    x: dict[str, np.ndarray]
    labels: np.ndarray | None
    dataset: TextDataset
    max_length: int
    at_max_length: int  # rows that fill max_length (cut there, or exactly that long)

    @property
    def num_classes(self) -> int | None:
        return self.dataset.num_classes


def text_model_split(loaded: Any, spec: str, split: str, select: Any = None, *, text_column: str | None = None,
                     label_column: str | None = None, flag: str = "--data",
                     dataset: TextDataset | None = None) -> TokenizedSplit:
    """Tokenize ``split`` of a text spec for ``loaded`` (its tokenizer, inputs and ``sequence`` max).

    ``select(count)`` picks rows (a slice or index array); all rows when None.
    """
    spec_io = loaded.spec
    if not spec_io.is_text():
        raise DatasetError(f"{flag} {spec} is text, but {loaded.name!r} takes "
                           f"{', '.join(f'{t.name} ({_dims(t.shape)}) {t.dtype}' for t in spec_io.inputs)}",
                           fix=f"pass {flag} digits|fashion-mnist|idx:DIR (images) for this model, or a text model")
    ds = dataset or load_text_dataset(spec, text_column, label_column, flag=flag, label2id=model_label2id(loaded))
    texts, labels = ds.split(split)
    if select is not None:
        chosen = select(len(texts))
        idx = np.arange(len(texts))[chosen]
        texts = [texts[int(i)] for i in idx]
        labels = labels[idx] if labels is not None else None
    max_length = int(spec_io.axes["sequence"].max)
    tokenizer = load_tokenizer(loaded)
    x = tokenize(tokenizer, texts, spec_io.input_names, max_length)
    check_token_ids(x, spec_io, model_directory(loaded))
    at_max = int((x["attention_mask"].sum(axis=1) >= max_length).sum()) if "attention_mask" in x else 0
    return TokenizedSplit(x, labels, ds, max_length, at_max)
