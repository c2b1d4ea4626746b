"""deploy.json facts about the model, its compression and its accuracy, read from the run's records.

Kept apart from :mod:`.package` (which lays out the files) so each stays small;
every function returns plain JSON-ready data.
"""
from __future__ import annotations

import importlib.metadata
from typing import Any

from .context import Context

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
    return {"size": list(pre.size), "mean": list(pre.mean), "std": list(pre.std), "channels": pre.channels,
            "channel_order": "gray" if pre.channels == 1 else "RGB", "layout": pre.layout, "input_range": [0.0, 1.0]}


def compression(comp: dict[str, Any]) -> dict[str, Any]:
    c = comp.get("compression", {})
    layers = [{k: layer.get(k) for k in ("name", "in_features", "out_features", "rank", "status")}
              for layer in c.get("layers", [])]
    return {"method": c.get("method"), "ratio": c.get("ratio"), "rank_policy": c.get("rank_policy"),
            "align": c.get("align"), "layers": layers, "totals": c.get("totals"),
            "params": {m: (comp.get("params") or {}).get(m) for m in ("original", "compressed")}}


def cpu_accuracy(name: str, info: dict[str, Any], variants: dict[str, dict[str, Any]],
                  bench: dict[str, Any] | None) -> dict[str, Any] | None:
    """Workstation accuracy of one variant (precision record for FP16/INT8; precision/bench records for FP32)."""
    acc = info["accuracy"]
    if acc is not None:
        return {"top1": acc.get("top1_candidate"), "top1_reference": acc.get("top1_reference"),
                "top1_agreement": acc.get("top1_agreement"), "cosine_mean": acc.get("cosine_mean"),
                "samples": acc.get("n_samples"), "reference": acc.get("reference"),
                "onnxruntime_optimization": acc.get("onnxruntime_optimization", "all")}
    model = info["model"]
    sibling = next((v["accuracy"] for v in variants.values() if v["model"] == model and v["accuracy"]), None)
    b = (bench or {}).get("accuracy")
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
