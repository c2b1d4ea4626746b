"""Arguments of the on-device commands (``verify``, ``device-bench``, ``device-latency``).

Kept apart from :mod:`.args` (whose choices come from registries that import
torch) so the device commands parse and run on a Jetson without PyTorch.
"""
from __future__ import annotations

import argparse


def ints(text: str) -> tuple[int, ...]:
    """``1,8`` or ``1x8`` -> (1, 8)."""
    try:
        return tuple(int(t) for t in text.replace("x", ",").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory or bundle.tar.gz written by `pela-export package`")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def add_device_bench_args(p: argparse.ArgumentParser) -> None:
    from ..runtime.backends import BACKEND_CHOICES
    from ..runtime.devicebench import DEFAULT_RUNS, DEFAULT_WARMUP

    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory or bundle.tar.gz written by `pela-export package`")
    g = p.add_argument_group("device benchmark")
    g.add_argument("--out", help="where device-report.json/.md go (default ./pela-device/<model-name>)")
    g.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="tensorrt (fail if it cannot run here), onnxruntime, or auto: TensorRT where it can run, "
                        "else ONNX Runtime, said in the report (default auto)")
    g.add_argument("--batch-sizes", type=ints, default=None,
                   help="batch sizes to time (default: min/opt/max batch of the bundle's input profile)")
    g.add_argument("--sequence-length", type=int, default=None,
                   help="text models: sequence length every batch size is timed at (default: the profile's "
                        "optimum, e.g. 128); must lie within the bundle's sequence profile")
    _timing_args(g, "batch size", DEFAULT_RUNS, DEFAULT_WARMUP)
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _timing_args(g: argparse._ArgumentGroup, per: str, runs: int, warmup: int) -> None:
    """--runs/--warmup/--threads/--engine-cache, shared by the device commands that time something."""
    from ..runtime.devicebench import MIN_RUNS

    g.add_argument("--runs", type=int, default=runs, help=f"timed runs per {per} (>= {MIN_RUNS}; default {runs})")
    g.add_argument("--warmup", type=int, default=warmup, help=f"warm-up runs (default {warmup})")
    g.add_argument("--threads", type=int, help="ONNX Runtime CPU threads (default: ONNX Runtime's choice)")
    g.add_argument("--engine-cache", help="TensorRT engine cache folder (default $PELA_EXPORT_ENGINE_CACHE or "
                                          "~/.cache/pela-export/engines)")


def add_device_latency_args(p: argparse.ArgumentParser) -> None:
    from ..runtime.backends import BACKEND_CHOICES
    from ..runtime.device_latency import DEFAULT_RUNS, DEFAULT_TRT_PRECISION, DEFAULT_WARMUP, TRT_PRECISIONS

    p.add_argument("bundle", metavar="BUNDLE", help="bundle (directory or bundle.tar.gz) of a `pela-export run "
                                                    "--rank-policy latency`: it carries the layer shapes to time")
    g = p.add_argument_group("device latency table")
    g.add_argument("--out", help="where latency_table.json/.md go (default ./pela-device/<model-name>)")
    g.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="tensorrt (one engine per layer graph; fail if it cannot run here), onnxruntime (CUDA "
                        "provider where installed, else CPU), or auto: TensorRT where it can run (default auto)")
    g.add_argument("--precision", choices=TRT_PRECISIONS, default=None,
                   help=f"TensorRT builder precision of the layer engines (default {DEFAULT_TRT_PRECISION}; "
                        "ONNX Runtime tables are fp32)")
    _timing_args(g, "graph", DEFAULT_RUNS, DEFAULT_WARMUP)
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workstation", metavar="RUN", help="output directory of `pela-export run` (or its report.json)")
    p.add_argument("device_reports", metavar="DEVICE_REPORT", nargs="+",
                   help="device-report.json files written by `pela-export device-bench` (or folders holding them)")
    p.add_argument("--out", help="where comparison.json/.md and charts go (default: RUN/comparison)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
