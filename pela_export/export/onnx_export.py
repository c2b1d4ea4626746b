"""PyTorch → ONNX export as one typed, atomic stage.

Why a wrapper around ``torch.onnx.export``: we need a guaranteed opset (TensorRT
8.6 parses <= 17, the dynamo exporter emits >= 18), a dynamic batch axis that is
checked rather than hoped for, one self-contained file that is either complete or
absent, and errors that name the flag that fixes them. Every automatic choice
(opset rewrite, IR version, example batch) is recorded in :class:`ExportResult`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import onnx
import torch
from torch import nn

from .._io import atomic_path
from ..errors import ExportError, OnnxCheckError, OptionError, PelaExportError
from ..models.base import LoadedModel
from ..models.io import SEQUENCE, IOSpec, single_input
from ._opset import convert_opset, default_opset, lower_ir_version

log = logging.getLogger(__name__)

Exporter = Literal["dynamo", "legacy"]
MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 13, 20, 17
_PROTO_LIMIT = 2**31 - 1  # protobuf's 2 GiB limit; larger models need external data
_OTHER = {"dynamo": "legacy", "legacy": "dynamo"}
_EXPORTER_FIX = {
    "dynamo": "try --legacy-exporter (TorchScript-based exporter)",
    "legacy": "drop --legacy-exporter to use the dynamo (torch.export) exporter",
}
#: Noise we filter from the exporter's warnings (the user chose the exporter).
_IGNORED_WARNINGS = ("legacy TorchScript-based ONNX export", "The feature will be removed",
                     "will not be used, since it shares the same shape constraints")


@dataclass
class ExportResult:
    """What was written and every choice made on the way (for the run report)."""

    path: Path
    exporter: str
    exporter_requested: str
    opset_requested: int
    opset: int
    opset_exported: int
    ir_version: int
    dynamic_batch: bool
    input_name: str
    output_names: list[str]
    input_shape: list[int | str]
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]
    num_nodes: int
    num_initializers: int
    file_bytes: int
    seconds: float
    optimize: bool
    external_data: bool = False
    conversions: list[str] = field(default_factory=list)
    auto_choices: list[str] = field(default_factory=list)
    exporter_warnings: list[str] = field(default_factory=list)
    fallback_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def check_opset(opset: int) -> int:
    """Validate ``--opset`` (13..20) without asserting on user input."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise OptionError(
            f"opset {opset!r} is not supported (allowed {MIN_OPSET}..{MAX_OPSET})",
            fix=f"pass --opset with a value in {MIN_OPSET}..{MAX_OPSET}; {DEFAULT_OPSET} is what TensorRT 8.6 parses",
        )
    return opset


def _check_exporter(exporter: str) -> Exporter:
    if exporter not in _OTHER:
        raise OptionError(f"unknown exporter {exporter!r} (choose 'dynamo' or 'legacy')",
                          fix="pass --legacy-exporter for the TorchScript exporter, or omit it for dynamo")
    return exporter  # type: ignore[return-value]


def _first_lines(exc: BaseException, n: int = 6) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    text = "\n    ".join(lines[:n]) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Export in eval mode, then give the caller's module back in its own mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _dynamic_shapes(io: IOSpec) -> tuple[dict[int, Any], ...]:
    """One ``torch.export.Dim`` per named axis, shared by every input that has it."""
    dims = {axis: torch.export.Dim(axis) for axis in io.dynamic_axis_names()}
    return tuple({i: dims[d] for i, d in enumerate(t.shape) if isinstance(d, str)} for t in io.inputs)


def _export_dynamo(model: nn.Module, examples: tuple[torch.Tensor, ...], opset: int, dynamic: bool,
                   io: IOSpec, optimize: bool) -> onnx.ModelProto:
    program = torch.onnx.export(
        model, examples, None, dynamo=True, opset_version=opset, optimize=optimize,
        input_names=io.input_names, output_names=io.output_names,
        dynamic_shapes=_dynamic_shapes(io) if dynamic else None,
        external_data=False, verbose=False, report=False,
    )
    if program is None:  # pragma: no cover - defensive, dynamo always returns a program
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
    return program.model_proto


def _export_legacy(model: nn.Module, examples: tuple[torch.Tensor, ...], opset: int, dynamic: bool,
                   io: IOSpec) -> onnx.ModelProto:
    axes = io.dynamic_axes() if dynamic else None
    with tempfile.TemporaryDirectory(prefix="pela-legacy-export-") as tmp:
        raw = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model, examples, str(raw), dynamo=False, opset_version=opset,
            input_names=io.input_names, output_names=io.output_names, dynamic_axes=axes,
            do_constant_folding=True,
        )
        return onnx.load(str(raw))  # pulls any external data into memory before tmp vanishes


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value.type.tensor_type.shape.dim]


def _input_dims(model: onnx.ModelProto) -> list[int | str]:
    return _dims(model.graph.input[0]) if model.graph.input else []


def _name_axes(proto: onnx.ModelProto, io: IOSpec) -> list[str]:
    """Rename the exporter's symbols (``s0``, ``batch_size``...) to our axis names; list static ones.

    Returns ``"input:axis"`` for every declared dynamic axis that came out static.
    """
    rename: dict[str, str] = {}
    static: list[str] = []
    graph_inputs = {v.name: v for v in proto.graph.input}
    for t in io.inputs:
        value = graph_inputs.get(t.name)
        if value is None:
            continue
        for spec_dim, dim in zip(t.shape, value.type.tensor_type.shape.dim):
            if isinstance(spec_dim, str):
                if dim.HasField("dim_param") and dim.dim_param:
                    rename.setdefault(dim.dim_param, spec_dim)
                else:
                    static.append(f"{t.name}:{spec_dim}")
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]
    return static


def _save(model: onnx.ModelProto, tmp: Path, final: Path) -> bool:
    """Write one file; only models over 2 GiB get a ``<name>.data`` sidecar."""
    if model.ByteSize() < _PROTO_LIMIT:
        onnx.save_model(model, str(tmp))
        return False
    onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{final.name}.data")
    return True


def _check_file(path: Path, shown: Path) -> None:
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise OnnxCheckError(
            f"exported model fails onnx.checker: {_first_lines(exc, 3)}",
            fix="try --legacy-exporter (or drop it), or another --opset; please report the model",
            where=str(shown),
        ) from exc



def _io_for(example: torch.Tensor | tuple[torch.Tensor, ...], io: IOSpec | None, input_name: str,
            output_name: str, dynamic_batch: bool) -> tuple[tuple[torch.Tensor, ...], IOSpec]:
    """Examples as a tuple plus the I/O description (a single-tensor one when none is given)."""
    examples = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    if io is None:
        if len(examples) != 1:
            raise OptionError(f"{len(examples)} example inputs but no I/O description naming them",
                              fix="pass io=loaded.spec (an IOSpec) with several inputs")
        x = examples[0]
        io = single_input(input_name, tuple(x.shape[1:]), str(x.dtype).replace("torch.", ""), output_name,
                          dynamic_batch=dynamic_batch)
    if len(examples) != len(io.inputs):
        raise OptionError(f"{len(examples)} example inputs for {len(io.inputs)} declared inputs "
                          f"({', '.join(io.input_names)})", fix="pass one example tensor per declared input")
    return examples, io


def export_onnx(model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], path: str | os.PathLike[str], *,
                input_name: str = "input", output_name: str = "logits", io: IOSpec | None = None,
                opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                exporter: Exporter = "dynamo", optimize: bool = True,
                fallback_exporter: bool = False) -> ExportResult:
    """Export ``model`` to one checked ONNX file at exactly ``opset``.

    ``io`` names every input (``example`` then holds one tensor per input, in order) and
    output and says which axes are dynamic; without it the model takes one tensor named
    ``input_name``. ``dynamic_batch=False`` fixes every axis at the example's size.
    ``optimize`` runs the dynamo exporter's onnxscript optimizer (constant folding,
    dead-code removal). ``fallback_exporter=True`` retries once with the other exporter
    when the chosen one fails, with a warning and ``fallback_reason`` recorded;
    by default the failure is raised.
    """
    check_opset(opset)
    exporter = _check_exporter(exporter)
    examples, spec = _io_for(example, io, input_name, output_name, dynamic_batch)
    try:
        return _export_once(model, examples, Path(path), io=spec, opset=opset, dynamic=dynamic_batch,
                            exporter=exporter, requested=exporter, optimize=optimize, fallback_reason=None)
    except (ExportError, OnnxCheckError) as exc:
        if not fallback_exporter:
            raise
        other = _OTHER[exporter]
        detail = " ".join(exc.problem.split())
        reason = f"{exporter} exporter failed ({detail[:400]}); fell back to {other}"
        warnings.warn(reason, RuntimeWarning, stacklevel=2)
        log.warning(reason)
        return _export_once(model, examples, Path(path), io=spec, opset=opset, dynamic=dynamic_batch,
                            exporter=other, requested=exporter,  # type: ignore[arg-type]
                            optimize=optimize, fallback_reason=reason)


def _export_once(model: nn.Module, examples: tuple[torch.Tensor, ...], final: Path, *, io: IOSpec,
                 opset: int, dynamic: bool, exporter: Exporter,
                 requested: str, optimize: bool, fallback_reason: str | None) -> ExportResult:
    start = time.perf_counter()
    auto: list[str] = []
    if dynamic and io.has_batch() and examples[0].shape[0] == 1:
        # torch.export specialises a size-1 dim to the constant 1; batch 2 keeps it symbolic.
        examples = tuple(torch.cat([x, x], dim=0) for x in examples)
        auto.append("example batch 1 -> 2 so the batch axis stays symbolic")
    # torchlib (the dynamo op library) only implements opset >= 18; we convert down ourselves.
    export_opset = max(opset, 18) if exporter == "dynamo" else opset
    with warnings.catch_warnings(record=True) as caught, _eval_mode(model), torch.no_grad():
        warnings.simplefilter("always")
        try:
            if exporter == "dynamo":
                proto = _export_dynamo(model, examples, export_opset, dynamic, io, optimize)
            else:
                proto = _export_legacy(model, examples, export_opset, dynamic, io)
        except PelaExportError:
            raise
        except Exception as exc:
            raise ExportError(
                f"{exporter} exporter failed on {type(model).__name__}:\n    {_first_lines(exc)}",
                fix=_EXPORTER_FIX[exporter], where=str(final),
            ) from exc
    exporter_warnings = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught
                                if not any(s in str(w.message) for s in _IGNORED_WARNINGS)})
    if exporter_warnings:
        log.warning("%s exporter emitted %d distinct warning(s); see ExportResult.exporter_warnings",
                    exporter, len(exporter_warnings))

    opset_exported = default_opset(proto)
    try:
        proto, conversions = convert_opset(proto, opset)
    except ExportError as exc:
        raise ExportError(
            f"{exporter} exporter wrote opset {opset_exported}; cannot convert it to opset {opset}: {exc.problem}",
            fix=exc.fix, where=str(final)) from exc
    if conversions:
        log.info("opset %d -> %d: %s", opset_exported, opset, "; ".join(conversions))
    ir_note = lower_ir_version(proto)
    if ir_note:
        conversions.append(ir_note)

    if default_opset(proto) != opset:  # convert_opset guarantees this; keep the promise explicit
        raise ExportError(f"model is at opset {default_opset(proto)}, not the requested {opset}",
                          fix=_EXPORTER_FIX[exporter], where=str(final))
    got_inputs = [v.name for v in proto.graph.input]
    if got_inputs != io.input_names:
        raise ExportError(f"the graph's inputs are {got_inputs}, the model declares {io.input_names} "
                          "(an input the model ignores is dropped by the exporter)",
                          fix="make forward use every declared input, or declare only the inputs it uses",
                          where=str(final))
    static = _name_axes(proto, io) if dynamic else []
    if static:
        raise ExportError(
            f"dynamic axes came out static: {', '.join(static)} (the model's code specialises on their size)",
            fix=f"export with fixed shapes (--static-shapes) or {_EXPORTER_FIX[exporter]}", where=str(final))
    dims = _input_dims(proto)

    with atomic_path(final) as tmp:
        try:
            external = _save(proto, tmp, final)
            _check_file(tmp, final)
        except BaseException:
            (final.parent / f"{final.name}.data").unlink(missing_ok=True)
            raise
    result = ExportResult(
        path=final, exporter=exporter, exporter_requested=requested, opset_requested=opset,
        opset=default_opset(proto), opset_exported=opset_exported, ir_version=int(proto.ir_version),
        dynamic_batch=dynamic, input_name=io.input_names[0],
        output_names=[o.name for o in proto.graph.output], input_shape=dims,
        inputs={v.name: _dims(v) for v in proto.graph.input},
        outputs={v.name: _dims(v) for v in proto.graph.output},
        num_nodes=len(proto.graph.node), num_initializers=len(proto.graph.initializer),
        file_bytes=final.stat().st_size, seconds=round(time.perf_counter() - start, 3),
        optimize=optimize if exporter == "dynamo" else False, external_data=external,
        conversions=conversions, auto_choices=auto, exporter_warnings=exporter_warnings,
        fallback_reason=fallback_reason,
    )
    return result


#: Example size of a dynamic sequence axis: >= 2 (sizes 0/1 specialise) and unlike any model dimension.
EXAMPLE_SEQUENCE = 17


def export_example(loaded: LoadedModel, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Valid example inputs for tracing: batch ``batch``, a short odd sequence length for text models."""
    sizes = None
    if SEQUENCE in loaded.spec.axes:
        rng = loaded.spec.axes[SEQUENCE]
        sizes = {SEQUENCE: max(2, min(EXAMPLE_SEQUENCE, rng.max))}
    return loaded.dummy_inputs(batch, seed, sizes)


class OnnxFromTorch:
    """Loader: ``OnnxFromTorch(loaded, opset=17)(path) -> Path``; keeps the last result."""

    def __init__(self, loaded: LoadedModel, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                 exporter: Exporter = "dynamo", optimize: bool = True, fallback_exporter: bool = False,
                 example_batch: int = 2, seed: int = 0) -> None:
        self.loaded = loaded
        self.opset = check_opset(opset)
        self.exporter = _check_exporter(exporter)
        self.dynamic_batch = dynamic_batch
        self.optimize = optimize
        self.fallback_exporter = fallback_exporter
        self.example_batch = example_batch
        self.seed = seed
        self.result: ExportResult | None = None

    def __call__(self, path: str | os.PathLike[str]) -> Path:
        self.result = export_onnx(
            self.loaded.model, export_example(self.loaded, self.example_batch, self.seed), path,
            io=self.loaded.spec, opset=self.opset, dynamic_batch=self.dynamic_batch,
            exporter=self.exporter, optimize=self.optimize, fallback_exporter=self.fallback_exporter)
        return self.result.path


def load_onnx(path: str | os.PathLike[str], *, check: bool = True) -> onnx.ModelProto:
    """Load and (by default) check an ONNX file; every failure is an OnnxCheckError."""
    p = Path(path)
    if not p.is_file():
        raise OnnxCheckError("ONNX file not found" if not p.exists() else "not a regular file",
                             fix="pass the path of an existing .onnx file (run the export stage first)",
                             where=str(p))
    try:
        model = onnx.load(str(p))
    except Exception as exc:
        raise OnnxCheckError(f"not a readable ONNX file ({_first_lines(exc, 2)})",
                             fix="re-run the export stage; the file is corrupt or not ONNX", where=str(p)) from exc
    if check:
        try:
            onnx.checker.check_model(model if model.ByteSize() < _PROTO_LIMIT else str(p))
        except Exception as exc:
            raise OnnxCheckError(
                f"fails onnx.checker: {_first_lines(exc, 3)}",
                fix="re-run the export (try --legacy-exporter or --simplifier none); the file may be truncated",
                where=str(p)) from exc
    return model
