"""Static "will this graph parse on that TensorRT?" check, without TensorRT.

Uses the ONNX parser's operator tables shipped in ``data/`` (provenance in
``data/PROVENANCE.md``): unsupported ops are errors, ops with restrictions are
warnings carrying the restriction, ops absent from the table (or in a non-
default domain) are *unknown* (not proven unsupported), an opset above the
parser's maximum is an error and one below its minimum a warning, and INT8
weight initializers behind DequantizeLinear (pre-quantized weights) are an error
before 10.0 (the 8.x parser: "invalid weights type of Int8"). The pipeline
runs it before building so a user on x86 learns what will fail on the Jetson.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from ..errors import OptionError
from ._trt import parse_version
from .graph import DEFAULT_DOMAINS, default_opset, int8_weight_dq_nodes, iter_nodes, load_model

#: Shipped tables, oldest first (file ``data/onnx-ops-<v>.json``).
TABLE_VERSIONS = ("8.6", "10.3", "10.13", "10.16", "11.1")
SEVERITY_ORDER = {"error": 0, "warning": 1, "unknown": 2, "info": 3}


@dataclass
class Finding:
    """One problem (or note) about the graph for one TensorRT version."""

    severity: str  # error | warning | unknown | info
    code: str  # unsupported-op | restricted-op | unknown-op | custom-domain | opset | table | int8-weights
    message: str
    op: str | None = None
    nodes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        where = ""
        if self.nodes:
            shown = ", ".join(self.nodes[:5]) + (f" (+{len(self.nodes) - 5} more)" if len(self.nodes) > 5 else "")
            where = f" [nodes: {shown}]"
        return f"{self.severity}: {self.message}{where}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OpTable:
    """One shipped operator table."""

    version: str
    exact: bool
    opset_range: tuple[int | None, int | None]
    ops: dict[str, dict[str, Any]]
    notes: tuple[str, ...]


@cache
def load_op_table(table_version: str) -> OpTable:
    """Read ``data/onnx-ops-<table_version>.json`` from the installed package."""
    if table_version not in TABLE_VERSIONS:
        raise OptionError(f"no ONNX operator table for TensorRT {table_version}",
                          fix=f"use one of {', '.join(TABLE_VERSIONS)} (or nearest_table())")
    text = resources.files(__package__).joinpath("data", f"onnx-ops-{table_version}.json").read_text("utf-8")
    d = json.loads(text)
    lo, hi = d.get("opset_range") or [None, None]
    return OpTable(table_version, bool(d.get("exact")), (lo, hi), dict(d["ops"]), tuple(d.get("notes") or ()))


def nearest_table(version: str) -> tuple[str, str | None]:
    """The table to use for ``version`` and, when it is not an exact match, why that one.

    Prefers the newest table not newer than the requested version within the same
    major (conservative: an op added later is reported, never assumed); otherwise
    the closest table by version.
    """
    try:
        want = (parse_version(version) + (0, 0))[:2]
    except ValueError:
        raise OptionError(f"not a TensorRT version: {version!r}", fix="pass a version like 8.6, 10.3 or 11.1") from None
    tables = {t: parse_version(t)[:2] for t in TABLE_VERSIONS}
    for t, tv in tables.items():
        if tv == want:
            return t, None
    same_major_older = [t for t, tv in tables.items() if tv[0] == want[0] and tv < want]
    if same_major_older:
        chosen = same_major_older[-1]
    else:
        chosen = min(tables, key=lambda t: (abs(tables[t][0] - want[0]), tables[t] > want,  # older wins ties
                                            abs(tables[t][1] - want[1])))
    return chosen, f"no operator table for TensorRT {version}; using the nearest one, {chosen}"


def _op_key(table: OpTable, op: str) -> str | None:
    if op in table.ops:
        return op
    low = op.lower()
    return next((k for k in table.ops if k.lower() == low), None)


def check_onnx_for_trt(onnx_model_or_path: Any, version: str) -> list[Finding]:
    """Findings for parsing this graph with TensorRT ``version``'s ONNX parser, errors first."""
    model, _ = load_model(onnx_model_or_path)
    table_version, why = nearest_table(version)
    table = load_op_table(table_version)
    findings: list[Finding] = []
    if why:
        findings.append(Finding("info", "table", why))
    if not table.exact:
        findings.append(Finding("info", "table", f"the TensorRT {table_version} table is a proxy "
                                "built from a neighbouring release's doc; see data/PROVENANCE.md"))
    opset = default_opset(model)
    lo, hi = table.opset_range
    if opset is not None and hi is not None and opset > hi:
        findings.append(Finding("error", "opset", f"opset {opset} is newer than TensorRT {table_version}'s ONNX parser "
                                f"supports (up to {hi}); re-export with --opset {hi}"))
    if opset is not None and lo is not None and opset < lo:
        findings.append(Finding("warning", "opset", f"opset {opset} is older than TensorRT {table_version}'s ONNX parser "
                                f"documents (from {lo}); re-export with --opset {lo} or newer"))
    int8_weights = int8_weight_dq_nodes(model)
    if int8_weights and parse_version(table_version)[0] < 10:
        findings.append(Finding("error", "int8-weights", f"INT8 weight initializers behind DequantizeLinear are "
                                f"rejected by TensorRT {table_version} ('invalid weights type of Int8'; accepted from "
                                "10.0): build the INT8 variant with FP32 weights behind QuantizeLinear -> "
                                "DequantizeLinear (leave the fold_weights option off)", op="DequantizeLinear",
                                nodes=list(int8_weights)))
    by_op: dict[tuple[str, str], list[str]] = defaultdict(list)
    for i, node in enumerate(iter_nodes(model.graph)):
        by_op[(node.domain, node.op_type)].append(node.name or f"#{i} ({node.op_type})")
    for (domain, op), nodes in sorted(by_op.items(), key=lambda kv: (kv[0][0], kv[0][1].lower())):
        if domain not in DEFAULT_DOMAINS:
            findings.append(Finding("unknown", "custom-domain", f"{domain}::{op} is outside the default ONNX domain; "
                                    "it needs a TensorRT plugin (not covered by the table)", op=op, nodes=nodes))
            continue
        key = _op_key(table, op)
        if key is None:
            findings.append(Finding("unknown", "unknown-op", f"{op} is not in TensorRT {table_version}'s operator "
                                    "table (unknown, not proven unsupported)", op=op, nodes=nodes))
            continue
        row = table.ops[key]
        if not row.get("supported"):
            findings.append(Finding("error", "unsupported-op", f"{op} is not supported by TensorRT {table_version}'s "
                                    "ONNX parser", op=op, nodes=nodes))
        elif row.get("restrictions"):
            findings.append(Finding("warning", "restricted-op", f"{op} is supported by TensorRT {table_version} with "
                                    f"restrictions: {row['restrictions']}", op=op, nodes=nodes))
    findings.sort(key=lambda f: SEVERITY_ORDER.get(f.severity, 9))
    return findings


def errors_of(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def format_findings(findings: list[Finding]) -> str:
    """One line per finding, for logs and the report."""
    return "\n".join(str(f) for f in findings) if findings else "no findings"
