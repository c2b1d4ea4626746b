"""deploy.json facts about the model, its compression and its accuracy, read from the run's records.

Kept apart from :mod:`.package` (which lays out the files) so each stays small;
every function returns plain JSON-ready data.
"""
from __future__ import annotations

import importlib.metadata
from typing import Any

from .context import Context
from .records import BenchRecord, CompressRecord

DEPENDENCIES = ("torch", "onnx", "onnxruntime", "numpy", "timm", "onnxsim")


def dependencies() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in DEPENDENCIES:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def labels(ctx: Context) -> list[str] | None:
    """Class names of the model's own dataset (the embedded defaults); None when unknown."""
    spec = ctx.loaded.default_dataset
    if spec is None:
        return None
    from ..data import load_dataset
    from ..errors import DatasetError

    try:
        names = load_dataset(spec).class_names
    except DatasetError as exc:
        ctx.note(f"package: labels left out (dataset {spec} unavailable: {exc.problem.splitlines()[0]})")
        return None
    return [str(n) for n in names] if names else None


def preprocessing(ctx: Context) -> dict[str, Any] | None:
    pre = ctx.loaded.preprocessing
    if pre is None:
        return None
    return pre.to_dict()  # every step pela_export.runtime.preprocess needs to reproduce the model's input


def compression(comp: CompressRecord) -> dict[str, Any]:
    c = comp.compression
    layers = [{k: layer.get(k) for k in ("name", "in_features", "out_features", "rank", "status")}
              for layer in c.get("layers", [])]
    return {"method": c.get("method"), "ratio": c.get("ratio"), "rank_policy": c.get("rank_policy"),
            "align": c.get("align"), "layers": layers, "totals": c.get("totals"),
            "params": {m: comp.params.get(m) for m in ("original", "compressed")}}


def cpu_accuracy(name: str, info: dict[str, Any], variants: dict[str, dict[str, Any]],
                  bench: BenchRecord | None) -> dict[str, Any] | None:
    """Workstation accuracy of one variant (precision record for FP16/INT8; precision/bench records for FP32)."""
    acc = info["accuracy"]
    if acc is not None:
        return {"top1": acc.get("top1_candidate"), "top1_reference": acc.get("top1_reference"),
                "top1_agreement": acc.get("top1_agreement"), "cosine_mean": acc.get("cosine_mean"),
                "samples": acc.get("n_samples"), "reference": acc.get("reference"),
                "onnxruntime_optimization": acc.get("onnxruntime_optimization", "all")}
    model = info["model"]
    sibling = next((v["accuracy"] for v in variants.values() if v["model"] == model and v["accuracy"]), None)
    b = bench.accuracy if bench is not None else None
    if sibling is None and b is None:
        return None
    own_top1 = sibling.get("top1_reference") if sibling else (b.get("top1_reference" if model == "original"
                                                                     else "top1_candidate"))
    samples = sibling.get("n_samples") if sibling else b.get("n_samples")
    if model == "original":
        if own_top1 is None:  # no labels: agreement with itself says nothing
            return None
        return {"top1": own_top1, "top1_reference": own_top1, "top1_agreement": 1.0, "samples": samples,
                "reference": "itself", "onnxruntime_optimization": "all"}
    if own_top1 is None and (b is None or b.get("top1_agreement") is None):
        return None
    return {"top1": own_top1, "top1_reference": b.get("top1_reference") if b else None,
            "top1_agreement": b.get("top1_agreement") if b else None, "samples": samples,
            "reference": "original fp32 (onnxruntime)" if b else None, "onnxruntime_optimization": "all"}


TOKENIZER_DIR = "tokenizer"


def _json_file(path: Any) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def tokenizer(ctx: Context, bundle_root: Any, io: dict[str, Any]) -> dict[str, Any] | None:
    """deploy.json ``tokenizer`` for a text model, copying its tokenizer files to ``tokenizer/``; None otherwise.

    ``max_length`` is the engine profile's longest sequence (never beyond what the model was exported for);
    ``padding_side``/``truncation_side`` come from tokenizer_config.json (default right), padding to the
    longest text of a batch with ``pad_token`` (id ``pad_token_id``).
    """
    import shutil
    from pathlib import Path

    loaded = ctx.loaded
    spec = loaded.spec
    if not spec.is_text():
        return None
    source = Path(loaded.source[3:]) if loaded.source.startswith("hf:") else None
    names = [str(n) for n in loaded.extra.get("tokenizer_files", [])]
    files: list[str] = []
    for name in names:
        src = source / name if source is not None else None
        if src is None or not src.is_file():
            ctx.note(f"package: tokenizer file {name} not found beside the model; left out of the bundle")
            continue
        (bundle_root / TOKENIZER_DIR).mkdir(exist_ok=True)
        shutil.copyfile(src, bundle_root / TOKENIZER_DIR / name)
        files.append(f"{TOKENIZER_DIR}/{name}")
    main = f"{TOKENIZER_DIR}/tokenizer.json"
    if main not in files:
        ctx.note("package: the model has no tokenizer.json, so the device runtime cannot tokenize raw text "
                 "(feed token ids; save the tokenizer with save_pretrained beside the model to include it)")
    cfg = _json_file(source / "tokenizer_config.json") if source is not None else {}
    special = _json_file(source / "special_tokens_map.json") if source is not None else {}
    seq = (io.get("axes") or {}).get("sequence") or {}
    max_length = int(seq.get("max") or spec.axes["sequence"].max)
    model_config = getattr(getattr(loaded.model, "model", None), "config", None)
    pad_id = getattr(model_config, "pad_token_id", None)
    lowercase = cfg.get("do_lower_case")
    return {"files": files, "tokenizer_json": main if main in files else None, "max_length": max_length,
            "padding": "longest", "padding_side": str(cfg.get("padding_side") or "right"),
            "truncation": True, "truncation_side": str(cfg.get("truncation_side") or "right"),
            "pad_token": _token_text(cfg.get("pad_token")) or _token_text(special.get("pad_token")),
            "pad_token_id": int(pad_id) if isinstance(pad_id, int) else 0,
            "lowercase": lowercase if isinstance(lowercase, bool) else None,
            "model_input_names": [t.name for t in spec.inputs]}
