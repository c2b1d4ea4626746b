"""Every flag the product names — in help texts, error messages, fixes, docstrings — is a real CLI option.

A message that says "pass --foo" when no command takes --foo sends the user nowhere, so the string literals of
``pela_export/`` and ``calibration/`` (read with ``ast``: comments do not count) are scanned for flag-like tokens
and each must exist in the parser of at least one command. Flags of other tools that the product writes into
scripts or fixes are allowed explicitly below, each with the reason.
"""
from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from pathlib import Path

from pela_export.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
SOURCES = (ROOT / "pela_export", ROOT / "calibration")

# lower-case, dash-separated flags only; a camelCase token (trtexec's --saveEngine, --minShapes) is another tool's
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+(?![A-Za-z0-9_])")

#: Flags of other tools, named in generated scripts or in fixes that tell the user to run that tool.
OTHER_TOOLS: dict[str, str] = {
    "--onnx": "trtexec: the ONNX input of the generated build scripts (tensorrt/trtexec.py)",
    "--fp16": "trtexec: FP16 builder flag in the generated scripts",
    "--int8": "trtexec: INT8 builder flag in the generated scripts",
    "--calib": "trtexec: calibration cache of implicit INT8 in the generated scripts",
    "--extra-index-url": "pip: NVIDIA's package index in the fix for missing TensorRT (tensorrt/_trt.py)",
    "--query-gpu": "nvidia-smi: GPU name query (runtime/device.py)",
    "--format": "nvidia-smi: CSV output of that query",
    "--runtime": "docker: `--runtime nvidia` in the fix for a container without GPU access",
    "--version": "nvcc --version in the cuda-python fix (pela-export --version exists too)",
    "--nproc-per-node": "torchrun: processes per node, in the DDP messages (train/distributed.py)",
    "--nnodes": "torchrun: number of nodes, in the DDP messages (train/distributed.py)",
}

# "--precision VALUE" suggestions (a value looks like fp16, int8, fp16+int8 or auto, alone or in a , or | list;
# prose such as "--precision with ..." is not a value): each must be a graph precision the precision stage registers
_VALUE = r"(?:auto|[a-z]*\d[a-z0-9+]*|…)"
PRECISION_SUGGESTION = re.compile(rf"(?<![\w-])--precision[ =]({_VALUE}(?:[,|]{_VALUE})*)")


def _flags_of(parser: argparse.ArgumentParser) -> set[str]:
    flags = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _flags_of(sub)
    return flags


def _strings() -> Iterator[tuple[str, int, str]]:
    """(file, line, text) of every string literal, f-string pieces included."""
    for root in SOURCES:
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    yield str(path.relative_to(ROOT)), node.lineno, node.value


def _named_flags() -> dict[str, list[str]]:
    """flag -> ["file:line", ...] where a string literal names it (line of the match within the literal)."""
    named: dict[str, list[str]] = {}
    for file, line, text in _strings():
        for m in FLAG.finditer(text):
            named.setdefault(m.group(), []).append(f"{file}:{line + text.count(chr(10), 0, m.start())}")
    return named


def test_every_flag_named_in_the_product_exists():
    known = _flags_of(build_parser())
    named = _named_flags()
    assert named, "the scan found no flags at all: the source layout changed"
    missing = {f: where for f, where in named.items()
               if f not in known and f not in OTHER_TOOLS}
    report = "\n".join(f"  {f}: named at {', '.join(where)}" for f, where in sorted(missing.items()))
    assert not missing, f"flags named in messages/help that no pela-export command takes:\n{report}"


def test_allow_lists_stay_honest():
    known = _flags_of(build_parser())
    named = _named_flags()
    unused = sorted(f for f in OTHER_TOOLS if f not in named)
    assert not unused, f"OTHER_TOOLS entries no longer named anywhere, drop them: {unused}"
    clash = sorted(f for f in OTHER_TOOLS if f in known and f != "--version")  # both tools have it
    assert not clash, f"OTHER_TOOLS entries are pela-export flags too, so the allow-list could hide them: {clash}"


def test_precision_suggestions_name_registered_graph_precisions():
    from pela_export.precision import PRECISIONS

    allowed = set(PRECISIONS.names()) | {"fp32"}  # fp32: "--precision fp32" asks for no variants
    bad = []
    for file, line, text in _strings():
        for m in PRECISION_SUGGESTION.finditer(text):
            wrong = [v for v in re.split(r"[,|]", m.group(1)) if v not in allowed and v != "…"]
            if wrong:
                bad.append(f"{file}:{line + text.count(chr(10), 0, m.start())}: --precision {m.group(1)} "
                           f"({', '.join(wrong)} not in {sorted(allowed)}; the TensorRT builder's is --trt-precision)")
    assert not bad, "messages suggest --precision values that are not graph precisions:\n" + "\n".join(bad)


def test_trt_builder_precision_has_its_own_flag():
    from pela_export.cli import args as A
    from pela_export.tensorrt.options import FLAGS, PRECISIONS

    assert FLAGS["precision"] == "--trt-precision"
    ns = build_parser().parse_args(["build", "--out", "o", "--trt-precision", "fp16", "--precision", "int8",
                                    "--strongly-typed", "--no-gpu-fallback", "--dla-core", "0"])
    opts = A._trt_config(ns)
    assert (opts.precision, opts.strongly_typed, opts.gpu_fallback, opts.dla_core) == ("fp16", True, False, 0)
    assert ns.precision == ("int8",)  # the graph variants, untouched by the builder flag
    default = A._trt_config(build_parser().parse_args(["build", "--out", "o"]))
    assert (default.precision, default.strongly_typed, default.gpu_fallback, default.calibration_cache) == \
        ("auto", None, True, None)
    assert set(PRECISIONS) >= {"auto", "fp16+int8"}


def test_unknown_recipe_points_at_the_model_argument(capsys):
    from pela_export.cli.main import main

    assert main(["inspect", "default:no-such-recipe"]) == 2
    err = capsys.readouterr().err
    assert "unknown default-model recipe 'no-such-recipe'" in err and "default:NAME" in err and "digits" in err
