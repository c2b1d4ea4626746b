"""CLI argument groups, one per concern (Polygraphy style); choices come from registries."""
from __future__ import annotations

import argparse

from ..export.simplify import SIMPLIFIERS
from ..lowrank import DECOMPOSITIONS, RANK_ALLOCATORS
from ..models.sources import parse_input_shape
from ..pipeline.config import STAGES, RunConfig


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.replace("x", ",").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _shape(text: str) -> tuple[int, ...]:
    from ..errors import InputShapeError

    try:
        return parse_input_shape(text)
    except InputShapeError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("\n", " ")) from None


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="timm:NAME | hf:LOCAL_DIR | FILE.pt2 | package.module:factory | default[:RECIPE]; "
                        "omitted: the embedded digits ViT (trained once, cached)")
    g.add_argument("--checkpoint", help="local weights for MODEL (state dict .pt/.pth/.safetensors)")
    g.add_argument("--input-shape", type=_shape, help="input shape without batch, e.g. 3,224,224 (default: from the model's config)")


def add_output_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", help="output directory (default ./pela-out/<model-name>)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device for PyTorch stages (default cpu)")
    g.add_argument("--no-progress", action="store_true", help="no progress display")
    g.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def add_compress_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("compression")
    g.add_argument("--ratio", type=float, default=2.0, help="PELA compression ratio k > 1: r = in*out // (k*(in+out)) (default 2)")
    g.add_argument("--method", choices=DECOMPOSITIONS.names(), default="svd", help="decomposition (default svd)")
    g.add_argument("--rank-policy", choices=RANK_ALLOCATORS.names(), default="ratio", help="rank allocation (default ratio)")
    g.add_argument("--align", type=int, default=None, help="round ranks down to a multiple (e.g. 8 for tensor cores)")
    g.add_argument("--include", action="append", metavar="GLOB", help="layer-name globs to factorize (repeatable; default: attention and MLP linears)")
    g.add_argument("--exclude", action="append", metavar="GLOB", help="layer-name globs to keep dense (repeatable; default: patch embed, norms, head)")


def add_export_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("export")
    g.add_argument("--opset", type=int, default=17, help="ONNX opset 13..20 (default 17: TensorRT 8.6 / JetPack 6.0 parses it)")
    g.add_argument("--legacy-exporter", action="store_true", help="use the TorchScript exporter instead of dynamo")
    g.add_argument("--exporter-fallback", action="store_true",
                   help="if the chosen exporter fails, retry once with the other (recorded in the report)")
    g.add_argument("--static-shapes", action="store_true", help="fixed batch size instead of a dynamic batch axis")
    g.add_argument("--simplifier", choices=SIMPLIFIERS.names(), default="onnxsim",
                   help="graph simplifier; on failure falls back to the others with a warning (default onnxsim)")
    g.add_argument("--atol", type=float, help="absolute tolerance for ONNX vs PyTorch (default: per model family)")
    g.add_argument("--rtol", type=float, help="relative tolerance for ONNX vs PyTorch (default: per model family)")


def add_bench_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("benchmark")
    g.add_argument("--data", help="accuracy dataset: digits | fashion-mnist | idx:DIR (default: the model's own, if any)")
    g.add_argument("--eval-samples", type=int, default=2000, help="test samples for accuracy (0 = all; default 2000)")
    g.add_argument("--runs", type=int, default=30, help="timed runs per measurement (>= 30; default 30)")
    g.add_argument("--warmup", type=int, default=5, help="warm-up runs (default 5)")
    g.add_argument("--batch-sizes", type=_ints, default=None, help="batch sizes to time (default 1,8; 1 with --static-shapes)")
    g.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime and PyTorch (default: all cores)")


def add_skip_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip", action="append", default=[], choices=STAGES, metavar="STAGE",
                   help=f"skip a stage and reuse its saved artifacts (repeatable): {', '.join(STAGES)}")


def config_from_args(ns: argparse.Namespace) -> RunConfig:
    """Map parsed arguments to a :class:`RunConfig` (absent groups keep defaults)."""
    get = lambda name, default=None: getattr(ns, name, default)  # noqa: E731
    eval_samples = get("eval_samples", 2000)
    return RunConfig(
        model=get("model"), checkpoint=get("checkpoint"), input_shape=get("input_shape"), out=get("out"),
        device=get("device", "cpu"), ratio=get("ratio", 2.0), method=get("method", "svd"),
        rank_policy=get("rank_policy", "ratio"), align=get("align"), include=get("include"), exclude=get("exclude"),
        opset=get("opset", 17), exporter="legacy" if get("legacy_exporter") else "dynamo",
        exporter_fallback=bool(get("exporter_fallback", False)),
        dynamic_batch=not get("static_shapes", False), simplifier=get("simplifier", "onnxsim"),
        atol=get("atol"), rtol=get("rtol"), data=get("data"), eval_samples=None if eval_samples == 0 else eval_samples,
        runs=get("runs", 30), warmup=get("warmup", 5), batch_sizes=tuple(get("batch_sizes")) if get("batch_sizes") else None,
        threads=get("threads"), skip=tuple(get("skip", ()) or ()), progress=not get("no_progress", False),
    )
