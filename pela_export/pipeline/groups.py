"""Option groups of a run (Polygraphy's argument groups as dataclasses): each group owns
its fields, their CLI flags and their own checks; :class:`~.config.RunConfig` composes
them and each stage reads only the group(s) it needs.

Groups whose options belong to a registry entry (a precision's converter options, a
decomposition's or rank policy's options) take their fields from the entry; see
:mod:`pela_export.precision.spec` and :mod:`pela_export.lowrank.specs`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from ..cli.device_args import ints  # torch-free: argparse only
from ..errors import InputShapeError, OptionError
from ..options import OptionGroup, option

DEVICES: tuple[str, ...] = ("cpu", "cuda")
EXPORTERS: tuple[str, ...] = ("dynamo", "legacy")


def _shape(text: str) -> tuple[int, ...]:
    from ..models.sources import parse_input_shape

    try:
        return parse_input_shape(text)
    except InputShapeError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("\n", " ")) from None


def _simplifiers() -> list[str]:
    from ..export.simplify import SIMPLIFIERS

    return SIMPLIFIERS.names()


@dataclass
class ModelOptions(OptionGroup):
    """Which model, with which weights and input signature."""

    TITLE = "model"
    spec: str | None = option(None, flag="MODEL", metavar="MODEL",
                               help="timm:NAME | timm:hf-hub:ORG/NAME | hf:LOCAL_DIR | hf:ORG/NAME | FILE.pt2 | "
                                    "package.module:factory | default[:RECIPE]; hub repos come through the Hugging "
                                    "Face hub cache; omitted: the embedded digits ViT (trained once, cached)")
    checkpoint: str | None = option(None, flag="--checkpoint",
                                    help="local weights for MODEL (state dict .pt/.pth/.safetensors)")
    pretrained: bool = option(False, flag="--pretrained", action="store_true",
                              help="timm:NAME only: timm's pretrained weights, through the Hugging Face hub cache "
                                   "(downloaded when online; the cache offline, HF_HUB_OFFLINE=1); default: random")
    input_shape: tuple[int, ...] | None = option(
        None, flag="--input-shape", type=_shape,
        help="input shape without batch, e.g. 3,224,224 (default: from the model's config); for a text model: "
             "the optimal sequence length")
    max_length: int | None = option(
        None, flag="--max-length", type=int,
        help="text models: longest sequence (profile max, tokenizer truncation; default: the model's "
             "max_position_embeddings or sentence-transformers max_seq_length, at most 512)")
    hidden_state: bool = option(False, flag="--hidden-state", action="store_true",
                                help="text encoders: also export the last hidden state beside the pooled embedding")


@dataclass
class OutputOptions(OptionGroup):
    """Where artifacts go, on which device PyTorch stages run, and what is shown."""

    TITLE = "output"
    out: str | None = option(None, flag="--out", help="output directory (default ./pela-out/<model-name>)")
    device: str = option("cpu", flag="--device", choices=DEVICES, help="device for PyTorch stages (default cpu)")
    progress: bool = option(True, flag="--no-progress", action="store_false", help="no progress display")

    def validate(self) -> None:
        if self.device not in DEVICES:
            raise OptionError(f"unknown device {self.device!r}", fix="pass --device cpu or --device cuda")


@dataclass
class ExportOptions(OptionGroup):
    """ONNX export, simplification and the verification tolerances."""

    TITLE = "export"
    opset: int = option(17, flag="--opset", type=int,
                        help="ONNX opset 13..20 (default 17: TensorRT 8.6 / JetPack 6.0 parses it)")
    legacy_exporter: bool = option(False, flag="--legacy-exporter", action="store_true",
                                   help="use the TorchScript exporter instead of dynamo")
    exporter_fallback: bool = option(False, flag="--exporter-fallback", action="store_true",
                                     help="if the chosen exporter fails, retry once with the other (recorded in the report)")
    static_shapes: bool = option(False, flag="--static-shapes", action="store_true",
                                 help="fixed batch size instead of a dynamic batch axis")
    simplifier: str = option("onnxsim", flag="--simplifier", choices=_simplifiers,
                             help="graph simplifier; on failure falls back to the others with a warning (default onnxsim)")
    atol: float | None = option(None, flag="--atol", type=float,
                                help="absolute tolerance for ONNX vs PyTorch and the FP32 golden check "
                                     "(default: per model family)")
    rtol: float | None = option(None, flag="--rtol", type=float,
                                help="relative tolerance for ONNX vs PyTorch and the FP32 golden check "
                                     "(default: per model family)")

    @property
    def exporter(self) -> str:
        return "legacy" if self.legacy_exporter else "dynamo"

    @property
    def dynamic_batch(self) -> bool:
        return not self.static_shapes


@dataclass
class BenchOptions(OptionGroup):
    """Latency measurement: runs, warm-up, batch sizes, threads."""

    TITLE = "benchmark"
    runs: int = option(30, flag="--runs", type=int, help="timed runs per measurement (>= 30; default 30)")
    warmup: int = option(5, flag="--warmup", type=int, help="warm-up runs (default 5)")
    batch_sizes: tuple[int, ...] | None = option(None, flag="--batch-sizes", type=ints,
                                                 help="batch sizes to time (default 1,8; 1 with --static-shapes)")
    threads: int | None = option(None, flag="--threads", type=int,
                                 help="CPU threads for ONNX Runtime and PyTorch (default: all cores)")

    def resolve(self, export: ExportOptions) -> None:
        """Default batch sizes follow the export's batch axis; a static export times batch 1 only."""
        if self.batch_sizes is None:
            self.batch_sizes = (1, 8) if export.dynamic_batch else (1,)
        elif not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise OptionError(f"invalid batch sizes {self.batch_sizes}",
                              fix="pass --batch-sizes with positive integers, e.g. 1,8")
        elif export.static_shapes and tuple(self.batch_sizes) != (1,):
            raise OptionError(f"--static-shapes exports batch size 1, but --batch-sizes asks for "
                              f"{list(self.batch_sizes)}", fix="pass --batch-sizes 1 with --static-shapes, "
                                                                "or drop --static-shapes")
        self.batch_sizes = tuple(self.batch_sizes)


@dataclass
class DataOptions(OptionGroup):
    """The data a run reads, every spelling resolved by :mod:`pela_export.data.spec` (one resolver for
    evaluation, calibration and training); flags are added where their CLI group shows them."""

    TITLE = "data"
    eval_data: str | None = option(None, flag="--data", cli=False, help="accuracy / golden-input dataset")
    eval_samples: int | None = option(2000, flag="--eval-samples", cli=False,
                                      help="test samples for accuracy (0 = all)")
    calib_data: str | None = option(None, flag="--calib-data", cli=False, help="calibration data")
    calib_samples: int = option(256, flag="--calib-samples", cli=False, help="calibration samples")
    train_data: str | None = option(None, flag="--train-data", cli=False, help="PELA training data")
    text_column: str | None = option(None, flag="--text-column", cli=False, help="text data files: text column")
    label_column: str | None = option(None, flag="--label-column", cli=False, help="text data files: label column")

    def validate(self) -> None:
        if self.calib_samples < 1:
            raise OptionError(f"--calib-samples must be >= 1, got {self.calib_samples}", fix="pass --calib-samples 256")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise OptionError(f"--eval-samples must be >= 1, got {self.eval_samples}",
                              fix="pass --eval-samples 1000, or 0 for all")


@dataclass
class PrecisionOptions(OptionGroup):
    """Precision variants in the graph and each one's converter options (its registered spec's dataclass)."""

    TITLE = "precision in the graph"
    # None: the registered defaults (precision.spec.default_precisions: fp16,int8fp16), recorded in precision_choice
    precisions: tuple[str, ...] | None = option(None, flag="--precision", cli=False,
                                                help="comma-separated variants to write besides FP32")
    # name → that precision's options dataclass (pela_export.precision.specs); filled with defaults for every
    # selected precision, and an option given for an unselected one is an error
    options: dict[str, Any] = field(default_factory=dict)
    precision_choice: str | None = None  # the automatic --precision choice, for the report

    def validate(self) -> None:
        from ..precision.spec import check_precision_options, resolve_precisions

        if self.precisions is None:
            self.precisions, self.precision_choice = resolve_precisions(None)
        self.precisions = tuple(self.precisions)
        self.options = check_precision_options(self.precisions, self.options)


@dataclass
class TensorRTOptions(OptionGroup):
    """The TensorRT target when it is absent here, and the engine build options."""

    TITLE = "TensorRT engines"
    trt_version: str | None = option(None, flag="--trt-version", cli=False, help="target TensorRT version")
    build: Any = None  # a pela_export.tensorrt.BuildOptions (None: the defaults)


def group_kwargs(group: type[OptionGroup], flat: dict[str, Any]) -> dict[str, Any]:
    """Pop the fields of ``group`` out of a flat keyword dict (the API's ``RunConfig.of``)."""
    from dataclasses import fields

    return {f.name: flat.pop(f.name) for f in fields(group) if f.name in flat}
