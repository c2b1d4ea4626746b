"""Raw strings → model feeds on the device, with the tokenizer shipped in the bundle.

Uses the ``tokenizers`` package (Hugging Face's Rust tokenizer; no torch, no transformers)
when it is installed — it is never required: feeding token ids works without it, and raw
text without it is one error naming ``pip install tokenizers``. Padding and truncation
follow deploy.json's ``tokenizer`` record (written by the package stage from the model's
tokenizer_config.json and the engine profile): pad to the longest text of the batch on
``padding_side`` with ``pad_token``, truncate to ``max_length`` (the profile's longest sequence).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ArtifactError, DependencyError, InputShapeError, OptionError

TOKENIZERS_FIX = ("pip install tokenizers (pure wheel, no torch needed), or feed token ids yourself: "
                  "run_variant(bundle, name, {input name: array})")
#: role of each input in deploy.json → the tokenizers Encoding attribute that fills it
ENCODING_FIELDS = {"token_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}

Text = str | tuple[str, str]


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise DependencyError("tokenizing raw text needs the `tokenizers` package, which is not installed here",
                              fix=TOKENIZERS_FIX) from None
    return tokenizers


def tokenizer_record(deploy: Mapping[str, Any], where: str) -> dict[str, Any]:
    """deploy.json's ``tokenizer`` (schema 2 text bundles); a clear error for any other bundle."""
    tok = deploy.get("tokenizer")
    if not isinstance(tok, Mapping):
        roles = [t.get("role", "tensor") for t in (deploy.get("io") or {}).get("inputs", [])]
        why = ("its model takes no token ids" if "token_ids" not in roles
               else f"its deploy.json (schema {deploy.get('schema_version')}) has no tokenizer record")
        raise OptionError(f"this bundle cannot tokenize text: {why}", where=where,
                          fix="feed the model's inputs as arrays (run_variant), or re-package a text model with "
                              "this pela-export")
    if not tok.get("tokenizer_json"):
        raise ArtifactError("this bundle has no tokenizer.json (the model directory had none when it was packaged)",
                            where=where, fix="save the tokenizer beside the model (tokenizer.save_pretrained(DIR)) "
                                             "and re-package, or feed token ids yourself")
    return dict(tok)


def load_tokenizer(bundle: Any, max_length: int | None = None) -> Any:
    """The bundle's ``tokenizers.Tokenizer`` with deploy.json's padding and truncation applied."""
    rec = tokenizer_record(bundle.deploy, str(bundle.source))
    limit = int(rec["max_length"])
    if max_length is not None and not 1 <= max_length <= limit:
        raise OptionError(f"max_length {max_length} is outside this bundle's sequence range (1..{limit}, the engine "
                          "profile's longest sequence)", fix=f"pass max_length between 1 and {limit}")
    tokenizers = _tokenizers()
    tok = tokenizers.Tokenizer.from_file(str(bundle.path(rec["tokenizer_json"])))
    pad_id = int(rec.get("pad_token_id") or 0)
    pad_token = rec.get("pad_token")
    if pad_token and tok.token_to_id(pad_token) is not None:
        pad_id = int(tok.token_to_id(pad_token))
    elif not pad_token:
        pad_token = tok.id_to_token(pad_id) or "[PAD]"
    tok.enable_truncation(max_length or limit, direction=rec.get("truncation_side", "right"))
    tok.enable_padding(direction=rec.get("padding_side", "right"), pad_id=pad_id, pad_token=pad_token)
    return tok


def encode(bundle: Any, texts: Text | Sequence[Text], max_length: int | None = None) -> dict[str, np.ndarray]:
    """``{input name: array}`` for ``texts`` (a string, a list of strings, or of (text, pair) tuples)."""
    items = [texts] if isinstance(texts, (str, tuple)) else list(texts)
    if not items or not all(isinstance(t, str) or (isinstance(t, tuple) and len(t) == 2) for t in items):
        raise InputShapeError("texts must be a non-empty list of strings (or of (text, pair) tuples)",
                              fix='pass e.g. ["first sentence", "second sentence"]')
    tok = load_tokenizer(bundle, max_length)
    encodings = tok.encode_batch(items)
    columns = {field: np.asarray([getattr(e, field) for e in encodings], dtype=np.int64)
               for field in set(ENCODING_FIELDS.values())}
    seq = (bundle.axes().get("sequence") or {})
    shortest = int(seq.get("min", 1))
    if columns["ids"].shape[1] < shortest:  # the engine profile's minimum sequence length
        extra = shortest - columns["ids"].shape[1]
        pad_id = tok.padding["pad_id"] if tok.padding else 0
        columns = {f: np.pad(a, ((0, 0), (0, extra)), constant_values=pad_id if f == "ids" else 0)
                   for f, a in columns.items()}
    feeds: dict[str, np.ndarray] = {}
    for t in bundle.inputs:
        field = ENCODING_FIELDS.get(t.get("role", "tensor"))
        if field is None:
            raise InputShapeError(f"input {t['name']!r} (role {t.get('role')!r}) is not produced by a tokenizer",
                                  fix="feed this model's inputs as arrays (run_variant)")
        feeds[t["name"]] = columns[field].astype(np.dtype(t["dtype"]))
    return feeds
