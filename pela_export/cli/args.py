"""CLI argument groups, one per concern (Polygraphy style); choices come from registries."""
from __future__ import annotations

import argparse
from typing import Any

from ..options import add_arguments, option_fields
from ..pipeline.compress_options import CALIB_OPTIONS, COMPRESS_OPTIONS, CompressOptions, users
from ..pipeline.config import DATA_AWARE_METHOD, STAGES, RunConfig
from ..pipeline.groups import (BenchOptions, DataOptions, ExportOptions, ModelOptions, OutputOptions,
                               PrecisionOptions, TensorRTOptions)
from ..pipeline.structured_options import StructureOptions



def _data_help(use: str, lead: str, default: str = "the model's dataset") -> str:
    """Help of a data flag, listing the spellings the one data-spec resolver registers for ``use``."""
    from ..data.spec import data_help

    return data_help(use, lead, default).replace("%", "%%")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = ModelOptions.add_arguments(p)
    g.add_argument("--text-column", metavar="NAME",
                   help="text data files (.tab/.tsv/.csv/.jsonl): the text column (default: a column named "
                        "text|sentence|document|content, or the only non-label one)")
    g.add_argument("--label-column", metavar="NAME",
                   help="text data files: the label column (default: the Orange class column, or one named "
                        "label|class|category|topic; none: unlabelled)")


def add_output_args(p: argparse.ArgumentParser) -> None:
    g = OutputOptions.add_arguments(p)
    g.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _option_group(p: argparse.ArgumentParser, title: str, names: tuple[str, ...]) -> argparse._ArgumentGroup:
    """The RunConfig options ``names`` (each owns its flag), with help saying which method/policy reads each."""
    from ..lowrank import DEFAULT_RATIO

    g = p.add_argument_group(title)
    add_arguments(CompressOptions, g, skip=[f.name for f in option_fields(CompressOptions) if f.name not in names])
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


def add_train_args(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    """The training flags; ``sweep``: for ``pela-export sweep --train-top`` (no --train/--resume/--checkpoint-dir:
    the sweep decides which points train, each into its own directory)."""
    g = p.add_argument_group("PELA training (frozen original teaches the factorized student)"
                             + (": of the --train-top points" if sweep else ""))
    if not sweep:
        g.add_argument("--train", action="store_true", help="train the compressed model after factorizing")
    g.add_argument("--train-data", help=_data_help("train", "training data"))
    g.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    g.add_argument("--batch-size", type=int, default=64, help="global training batch size, split evenly across torchrun processes (default 64)")
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
    if sweep:
        return
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
    from ..precision.spec import default_precisions, precision_names, precision_specs

    g = p.add_argument_group("precision in the graph (variants of each FP32 ONNX file)")
    g.add_argument("--precision", type=_names, default=None, metavar="LIST",
                   help=f"comma-separated variants to write besides FP32, from: "
                        f"{', '.join(precision_names(converted=True))} (default {','.join(default_precisions())}; "
                        "pass fp32 for none)")
    for spec in precision_specs():
        add_arguments(spec.options, g)


def _precision_kwargs(ns: argparse.Namespace) -> dict[str, Any]:
    """``precisions`` and each registered precision's options, from the flags its spec declares."""
    from ..precision.spec import precision_specs

    options = {s.name: s.options.from_namespace(ns) for s in precision_specs()}
    return {"precisions": getattr(ns, "precision", None), "options": options}  # None: the registered defaults


def add_trt_args(p: argparse.ArgumentParser) -> None:
    from ..tensorrt import HARDWARE_COMPAT
    from ..tensorrt.options import PRECISION_CONSTRAINTS
    from ..tensorrt.options import PRECISIONS as TRT_PRECISIONS

    g = p.add_argument_group("TensorRT engines (built where TensorRT is installed; trtexec scripts always)")
    g.add_argument("--trt-version", help="target TensorRT for the parser check and trtexec scripts when TensorRT is "
                                         "not installed here (8.6, 10.3, 10.13, 10.16, 11.1; default: all)")
    g.add_argument("--profile", action="append", metavar="INPUT:MIN,OPT,MAX",
                   help="optimisation profile for one input (repeatable), e.g. input:1x3x224x224,8x3x224x224,"
                        "32x3x224x224, or for a text model input_ids:1x16,8x128,32x512 (inputs sharing its axes "
                        "follow); default: batch 1/--opt-batch/--max-batch, other axes from the model's config")
    g.add_argument("--max-batch", type=int, default=8, help="max batch of the default profile (default 8)")
    g.add_argument("--opt-batch", type=int, default=None,
                   help="optimal batch of the default profile (default: the batch the bench times most, the largest "
                        "--batch-sizes value within --max-batch; recorded)")
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
    g.add_argument("--strongly-typed", action=argparse.BooleanOptionalAction, default=None,
                   help="strongly typed network on TensorRT 10.x: precision from the graph, no builder flags "
                        "(default: on for FP16/Q-DQ graphs on 10.x, --no-strongly-typed for builder flags; "
                        "TensorRT 11 is always strongly typed, 8.6 never)")
    g.add_argument("--precision-constraints", choices=PRECISION_CONSTRAINTS, default="prefer",
                   help="weakly typed builds (8.6, or --no-strongly-typed): how the layers the graph keeps FP32 "
                        "are pinned (PREFER/OBEY_PRECISION_CONSTRAINTS; default prefer)")
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
                        opt_batch=getattr(ns, "opt_batch", None), workspace_mib=ns.workspace, opt_level=ns.opt_level,
                        precision_constraints=ns.precision_constraints,
                        timing_cache=ns.timing_cache, calibration_cache=ns.calib_cache, dla_core=ns.dla_core,
                        gpu_fallback=ns.gpu_fallback, version_compatible=ns.version_compatible,
                        hardware_compat=ns.hardware_compat)


def _train_config(ns: argparse.Namespace) -> Any:
    if not getattr(ns, "train", False):
        return None
    return train_config(ns)


def train_config(ns: argparse.Namespace) -> Any:
    """The TrainConfig of the parsed training flags (``add_train_args``)."""
    from ..train import TrainConfig

    blocks = tuple(b for b in (ns.distill_blocks or "").split(",") if b) or None
    return TrainConfig(epochs=ns.epochs, batch_size=ns.batch_size, lr=ns.lr, weight_decay=ns.weight_decay,
                       warmup_epochs=ns.warmup_epochs, warmup_steps=ns.warmup_steps, grad_clip=ns.grad_clip,
                       alpha=ns.alpha, beta=ns.beta, lam=ns.lam, eps=ns.eps, temperature=ns.temperature,
                       scope=ns.train_scope, distill_blocks=blocks, seed=ns.seed,
                       resume=getattr(ns, "resume", False), checkpoint_dir=getattr(ns, "checkpoint_dir", None))


def add_export_args(p: argparse.ArgumentParser) -> None:
    ExportOptions.add_arguments(p)


def add_bench_args(p: argparse.ArgumentParser) -> None:
    g = BenchOptions.add_arguments(p)
    g.add_argument("--data", dest="eval_data", metavar="DATA", help=_data_help("eval", "accuracy dataset", "the model's own, else random"))
    g.add_argument("--eval-samples", type=int, default=2000, help="test samples for accuracy (0 = all; default 2000)")


def add_package_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("bundle")
    g.add_argument("--data", dest="eval_data", metavar="DATA", help=_data_help("eval", "dataset the golden inputs come from",
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
    return {"kind": get("structure"), "structure_opts": parse_key_values(get("structure_opt") or [], "--structure-opt"),
            "structure_base": get("structure_base"), "share_central": bool(get("share_central", False)),
            "lowering": get("lowering", "auto"), "allow_dft": bool(get("allow_dft", False)),
            "lowering_overrides": parse_key_values(get("lowering_override") or [], "--lowering-override", parse=False)}


def config_from_args(ns: argparse.Namespace) -> RunConfig:
    """Compose a :class:`RunConfig` from the option groups present in ``ns`` (absent ones keep defaults)."""
    data = DataOptions.from_namespace(ns)
    if data.eval_samples == 0:
        data.eval_samples = None  # --eval-samples 0: all
    return RunConfig(model=ModelOptions.from_namespace(ns), output=OutputOptions.from_namespace(ns), data=data,
                     compress=CompressOptions.from_namespace(ns), structure=StructureOptions(**_structure_kwargs(ns)),
                     export=ExportOptions.from_namespace(ns), precision=PrecisionOptions(**_precision_kwargs(ns)),
                     tensorrt=TensorRTOptions(trt_version=getattr(ns, "trt_version", None), build=_trt_config(ns)),
                     bench=BenchOptions.from_namespace(ns), train=_train_config(ns),
                     skip=tuple(getattr(ns, "skip", ()) or ()))


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
