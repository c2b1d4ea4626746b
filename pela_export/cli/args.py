"""CLI argument groups, one per concern (Polygraphy style); choices come from registries."""
from __future__ import annotations

import argparse
from typing import Any

from ..export.simplify import SIMPLIFIERS
from ..models.sources import parse_input_shape
from ..options import add_arguments, option_fields, values_from_namespace
from ..pipeline.compress_options import CALIB_OPTIONS, COMPRESS_OPTIONS, users
from ..pipeline.config import DATA_AWARE_METHOD, STAGES, RunConfig
from .device_args import ints


_ints = ints  # shared with the torch-free device commands


def _shape(text: str) -> tuple[int, ...]:
    from ..errors import InputShapeError

    try:
        return parse_input_shape(text)
    except InputShapeError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("\n", " ")) from None


def _data_help(use: str, lead: str, default: str = "the model's dataset") -> str:
    """Help of a data flag, listing the spellings the one data-spec resolver registers for ``use``."""
    from ..data.spec import data_help

    return data_help(use, lead, default).replace("%", "%%")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="timm:NAME | hf:LOCAL_DIR | FILE.pt2 | package.module:factory | default[:RECIPE]; "
                        "omitted: the embedded digits ViT (trained once, cached)")
    g.add_argument("--checkpoint", help="local weights for MODEL (state dict .pt/.pth/.safetensors)")
    g.add_argument("--input-shape", type=_shape, help="input shape without batch, e.g. 3,224,224 (default: from the model's config); "
                                                     "for a text model: the optimal sequence length")
    g.add_argument("--max-length", type=int, default=None,
                   help="text models: longest sequence (profile max, tokenizer truncation; default: the model's "
                        "max_position_embeddings or sentence-transformers max_seq_length, at most 512)")
    g.add_argument("--hidden-state", action="store_true",
                   help="text encoders: also export the last hidden state beside the pooled embedding")
    g.add_argument("--text-column", metavar="NAME",
                   help="text data files (.tab/.tsv/.csv/.jsonl): the text column (default: a column named "
                        "text|sentence|document|content, or the only non-label one)")
    g.add_argument("--label-column", metavar="NAME",
                   help="text data files: the label column (default: the Orange class column, or one named "
                        "label|class|category|topic; none: unlabelled)")


def add_output_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", help="output directory (default ./pela-out/<model-name>)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device for PyTorch stages (default cpu)")
    g.add_argument("--no-progress", action="store_true", help="no progress display")
    g.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _option_group(p: argparse.ArgumentParser, title: str, names: tuple[str, ...]) -> argparse._ArgumentGroup:
    """The RunConfig options ``names`` (each owns its flag), with help saying which method/policy reads each."""
    from ..lowrank import DEFAULT_RATIO

    g = p.add_argument_group(title)
    add_arguments(RunConfig, g, skip=[f.name for f in option_fields(RunConfig) if f.name not in names])
    for action in g._group_actions:
        methods, policies = users(action.dest)
        used = [f"--method {'/'.join(methods)}"] if methods else []
        used += [f"--rank-policy {'/'.join(policies)}"] if policies else []
        if action.dest == "ratio":
            action.help = f"{action.help} (default {DEFAULT_RATIO:g}; also the rank of an adapter's low-rank base)"
        elif action.dest == "method":
            action.help = (f"{action.help} (default svd; with --calib-data the data-aware {DATA_AWARE_METHOD}, "
                           "chosen on the pretrained MiniLM/R8 benchmark and recorded)")
        if used:
            action.help = f"{action.help}; used by {' and '.join(used)}"
    return g


def add_compress_args(p: argparse.ArgumentParser, structure: bool = True) -> None:
    g = _option_group(p, "compression", COMPRESS_OPTIONS)
    if structure:
        add_structure_args(g)


def add_structure_args(g: argparse._ArgumentGroup) -> None:
    """Registered layer types of the compression stage (MPO, structured adapters, SNELL) and their lowering."""
    from ..structured import LAYER_TYPES
    from ..structured.base import LOWERINGS

    g.add_argument("--structure", choices=LAYER_TYPES.names(), default=None, metavar="KIND",
                   help=f"structured layer type instead of plain low-rank: {', '.join(LAYER_TYPES.names())} "
                        "(default: none, plain U·V)")
    g.add_argument("--structure-opt", action="append", metavar="KEY=VALUE",
                   help="hyper-parameter of the --structure constructor (repeatable), e.g. cores=3, bond_dim=8, "
                        "block=16, factors=4,8, rank=8, density=0.1; values parse as int/float/bool/none/list")
    g.add_argument("--structure-base", choices=("dense", "lowrank"), default=None,
                   help="adapters/snell: the frozen base under the delta (default lowrank: plain SVD at --ratio)")
    g.add_argument("--share-central", action="store_true",
                   help="mpo: share the central core of matching projections across blocks (one tensor)")
    g.add_argument("--lowering", default="auto", metavar="FORM",
                   help=f"how structured layers are deployed: auto (fastest measured per layer on ONNX Runtime, "
                        f"default), {', '.join(LOWERINGS)} (or lowrank:R)")
    g.add_argument("--lowering-override", action="append", metavar="GLOB=FORM",
                   help="deployment form for the structured layers matching GLOB (repeatable, first match wins), "
                        "e.g. '*fc1=dense'")
    g.add_argument("--allow-dft", action="store_true",
                   help="allow FFT/DFT ops in the exported graph (TensorRT <= 10 cannot parse them; default: refused)")


def add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("PELA training (frozen original teaches the factorized student)")
    g.add_argument("--train", action="store_true", help="train the compressed model after factorizing")
    g.add_argument("--train-data", help=_data_help("train", "training data"))
    g.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    g.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    g.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3; cosine schedule)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    g.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up epochs (default 1)")
    g.add_argument("--warmup-steps", type=int, default=None,
                   help="linear warm-up in optimizer steps; wins over --warmup-epochs when given")
    g.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip (default 1.0)")
    g.add_argument("--alpha", type=float, default=1.0, help="weight of block-feature distillation (default 1)")
    g.add_argument("--beta", type=float, default=0.0, help="weight of logit distillation (KL; default 0)")
    g.add_argument("--temperature", type=float, default=2.0, help="logit-distillation temperature (default 2)")
    g.add_argument("--lam", type=float, default=0.1, help="weight of the weight-perturbation term (default 0.1)")
    g.add_argument("--eps", type=float, default=0.0, help="free margin of the weight-perturbation term (default 0)")
    g.add_argument("--train-scope", choices=("factors", "all"), default="factors",
                   help="train only the low-rank factors (PELA, default; with --structure: the structured layers' "
                        "own trainable parameters, an adapter's base stays frozen) or the whole student")
    g.add_argument("--distill-blocks", help="comma-separated globs of the blocks to distil (default: found automatically)")
    g.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    g.add_argument("--checkpoint-dir", metavar="DIR",
                   help="where a checkpoint is written after every epoch and --resume reads it (default <out>/train)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted training run from its last checkpoint (in --checkpoint-dir) to "
                        "the same result as an uninterrupted run")


def add_calib_args(p: argparse.ArgumentParser) -> None:
    g = _option_group(p, "data-aware compression", CALIB_OPTIONS)
    g.add_argument("--calib-data", help=_data_help("calib", "calibration data for weighted SVD / sensitivity ranks "
                                                             "and INT8", "the model's dataset, else random"))
    g.add_argument("--calib-samples", type=int, default=256, help="calibration samples (default 256, seeded selection)")


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_precision_args(p: argparse.ArgumentParser) -> None:
    """``--precision`` and, per registered precision spec, the flags of its options dataclass."""
    from ..options import add_arguments
    from ..precision.spec import precision_names, precision_specs

    g = p.add_argument_group("precision in the graph (variants of each FP32 ONNX file)")
    g.add_argument("--precision", type=_names, default=None, metavar="LIST",
                   help=f"comma-separated variants to write besides FP32, from: "
                        f"{', '.join(precision_names(converted=True))} (default fp16,int8; pass fp32 for none)")
    for spec in precision_specs():
        add_arguments(spec.options, g)


def _precision_kwargs(ns: argparse.Namespace) -> dict[str, Any]:
    """``precisions`` and each registered precision's options, from the flags its spec declares."""
    from dataclasses import fields

    from ..precision.spec import precision_specs

    default = next(f.default for f in fields(RunConfig) if f.name == "precisions")
    options = {s.name: s.options.from_namespace(ns) for s in precision_specs()}
    return {"precisions": getattr(ns, "precision", None) or default, "precision_options": options}


def add_trt_args(p: argparse.ArgumentParser) -> None:
    from ..tensorrt import HARDWARE_COMPAT
    from ..tensorrt.options import PRECISIONS as TRT_PRECISIONS

    g = p.add_argument_group("TensorRT engines (built where TensorRT is installed; trtexec scripts always)")
    g.add_argument("--trt-version", help="target TensorRT for the parser check and trtexec scripts when TensorRT is "
                                         "not installed here (8.6, 10.3, 10.13, 10.16, 11.1; default: all)")
    g.add_argument("--profile", action="append", metavar="INPUT:MIN,OPT,MAX",
                   help="optimisation profile for one input (repeatable), e.g. input:1x3x224x224,8x3x224x224,"
                        "32x3x224x224, or for a text model input_ids:1x16,8x128,32x512 (inputs sharing its axes "
                        "follow); default: batch 1/--opt-batch/--max-batch, other axes from the model's config")
    g.add_argument("--max-batch", type=int, default=8, help="max batch of the default profile (default 8)")
    g.add_argument("--opt-batch", type=int, default=1, help="optimal batch of the default profile (default 1)")
    g.add_argument("--workspace", type=int, help="builder workspace limit in MiB")
    g.add_argument("--opt-level", type=int, help="builder optimisation level 0-5")
    g.add_argument("--timing-cache", help="timing cache file: loaded if present, saved after the build")
    g.add_argument("--dla-core", type=int, help="build for this DLA core (Jetson Orin), with GPU fallback")
    g.add_argument("--version-compatible", action="store_true", help="version-compatible plan (where supported)")
    g.add_argument("--hardware-compat", choices=HARDWARE_COMPAT, default="none",
                   help="hardware compatibility level (where supported; default none)")
    # the builder's precision, apart from --precision (which ONNX variants the precision stage writes)
    g.add_argument("--trt-precision", choices=TRT_PRECISIONS, default="auto",
                   help="builder precision for every variant: auto (default: what each ONNX graph carries, Q/DQ -> "
                        "INT8, FP16 tensors -> FP16) or fp32|fp16|int8|fp16+int8 as builder flags (TensorRT <= 10)")
    g.add_argument("--strongly-typed", action="store_const", const=True, default=None,
                   help="strongly typed network on TensorRT 10.x: precision from the graph, no builder flags "
                        "(default: off on <= 10; TensorRT 11 is always strongly typed)")
    g.add_argument("--calib-cache", metavar="FILE",
                   help="INT8 calibration cache (EntropyCalibration2) for implicit INT8 of a graph without Q/DQ "
                        "nodes, TensorRT <= 10 only (the precision stage writes one beside the INT8 ONNX)")
    g.add_argument("--gpu-fallback", action=argparse.BooleanOptionalAction, default=True,
                   help="with --dla-core: run layers DLA cannot on the GPU (default on; --no-gpu-fallback makes "
                        "such a layer fail the build)")


def _trt_config(ns: argparse.Namespace) -> Any:
    if not hasattr(ns, "max_batch"):
        return None
    from ..tensorrt import BuildOptions, parse_profiles

    return BuildOptions(precision=ns.trt_precision, strongly_typed=ns.strongly_typed,
                        profiles=parse_profiles(ns.profile or []), max_batch=ns.max_batch,
                        opt_batch=getattr(ns, "opt_batch", 1), workspace_mib=ns.workspace, opt_level=ns.opt_level,
                        timing_cache=ns.timing_cache, calibration_cache=ns.calib_cache, dla_core=ns.dla_core,
                        gpu_fallback=ns.gpu_fallback, version_compatible=ns.version_compatible,
                        hardware_compat=ns.hardware_compat)


def _train_config(ns: argparse.Namespace) -> Any:
    if not getattr(ns, "train", False):
        return None
    from ..train import TrainConfig

    blocks = tuple(b for b in (ns.distill_blocks or "").split(",") if b) or None
    return TrainConfig(epochs=ns.epochs, batch_size=ns.batch_size, lr=ns.lr, weight_decay=ns.weight_decay,
                       warmup_epochs=ns.warmup_epochs, warmup_steps=ns.warmup_steps, grad_clip=ns.grad_clip,
                       alpha=ns.alpha, beta=ns.beta, lam=ns.lam, eps=ns.eps, temperature=ns.temperature,
                       scope=ns.train_scope, distill_blocks=blocks, seed=ns.seed, resume=ns.resume,
                       checkpoint_dir=ns.checkpoint_dir)


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
    g.add_argument("--data", help=_data_help("eval", "accuracy dataset", "the model's own, else random"))
    g.add_argument("--eval-samples", type=int, default=2000, help="test samples for accuracy (0 = all; default 2000)")
    g.add_argument("--runs", type=int, default=30, help="timed runs per measurement (>= 30; default 30)")
    g.add_argument("--warmup", type=int, default=5, help="warm-up runs (default 5)")
    g.add_argument("--batch-sizes", type=_ints, default=None, help="batch sizes to time (default 1,8; 1 with --static-shapes)")
    g.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime and PyTorch (default: all cores)")


def add_package_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("bundle")
    g.add_argument("--data", help=_data_help("eval", "dataset the golden inputs come from",
                                             "the model's own, else seeded random inputs"))
    g.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime when computing golden outputs")
    g.add_argument("--atol", type=float, help="absolute tolerance of the FP32 golden check (default: per model family)")
    g.add_argument("--rtol", type=float, help="relative tolerance of the FP32 golden check (default: per model family)")


def add_skip_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip", action="append", default=[], choices=STAGES, metavar="STAGE",
                   help=f"skip a stage and reuse its saved artifacts (repeatable): {', '.join(STAGES)}")


def _structure_kwargs(ns: argparse.Namespace) -> dict[str, Any]:
    from ..pipeline.structured_options import parse_key_values

    get = lambda name, default=None: getattr(ns, name, default)  # noqa: E731
    return {"structure": get("structure"), "structure_opts": parse_key_values(get("structure_opt") or [], "--structure-opt"),
            "structure_base": get("structure_base"), "share_central": bool(get("share_central", False)),
            "lowering": get("lowering", "auto"), "allow_dft": bool(get("allow_dft", False)),
            "lowering_overrides": parse_key_values(get("lowering_override") or [], "--lowering-override", parse=False)}


def _compression_kwargs(ns: argparse.Namespace) -> dict[str, Any]:
    """The compression options present in ``ns`` (each declared once on RunConfig with its flag)."""
    return {k: v for k, v in values_from_namespace(RunConfig, ns).items() if k in COMPRESS_OPTIONS + CALIB_OPTIONS}


def config_from_args(ns: argparse.Namespace) -> RunConfig:
    """Map parsed arguments to a :class:`RunConfig` (absent groups keep defaults)."""
    get = lambda name, default=None: getattr(ns, name, default)  # noqa: E731
    eval_samples = get("eval_samples", 2000)
    return RunConfig(
        model=get("model"), checkpoint=get("checkpoint"), input_shape=get("input_shape"), out=get("out"),
        max_length=get("max_length"), hidden_state=bool(get("hidden_state", False)),
        text_column=get("text_column"), label_column=get("label_column"),
        device=get("device", "cpu"), **_compression_kwargs(ns), **_structure_kwargs(ns),
        opset=get("opset", 17), exporter="legacy" if get("legacy_exporter") else "dynamo",
        exporter_fallback=bool(get("exporter_fallback", False)),
        dynamic_batch=not get("static_shapes", False), simplifier=get("simplifier", "onnxsim"),
        atol=get("atol"), rtol=get("rtol"), data=get("data"), eval_samples=None if eval_samples == 0 else eval_samples,
        runs=get("runs", 30), warmup=get("warmup", 5), batch_sizes=tuple(get("batch_sizes")) if get("batch_sizes") else None,
        threads=get("threads"), calib_data=get("calib_data"), calib_samples=get("calib_samples", 256),
        train=_train_config(ns), train_data=get("train_data"),
        **_precision_kwargs(ns),
        trt_version=get("trt_version"), trt=_trt_config(ns),
        skip=tuple(get("skip", ()) or ()), progress=not get("no_progress", False),
    )


def structure_spec_of(out: str | None, structure_spec: str | None) -> str | None:
    """``inspect --out DIR``: the structured.json of that run (an error if it holds none)."""
    if out is None:
        return structure_spec
    from pathlib import Path

    from ..errors import ArtifactError, OptionError

    if structure_spec is not None:
        raise OptionError("inspect got both --out and --structure-spec", fix="pass one of them")
    spec = Path(out) / "structured.json"
    if not spec.is_file():
        raise ArtifactError(f"{out} holds no saved structured model (no structured.json)",
                            fix=f"run with --structure KIND into that directory first; for a plain low-rank run "
                                f"inspect its ONNX: pela-export inspect {Path(out) / 'compressed.sim.onnx'}",
                            where=str(out))
    return str(spec)
