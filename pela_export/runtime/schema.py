"""The two formats the device side shares with the workstation: ``deploy.json``
(what a bundle holds) and ``device-report.json`` (what the device measured).

Both are schema-versioned and validated on load, and every problem names the
key path (``variants.compressed.int8.tolerance.atol``), what was found and how
to fix it: a bundle edited by hand or written by another tool version must fail
here, not deep inside an engine build on the device.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ArtifactError
from ..precision.spec import NAME_PATTERN, ORT_LEVELS, variant_name
from .preprocess import validate_preprocessing

DEPLOY_SCHEMA_VERSION = 2
#: deploy.json versions this pela-export reads: 1 (one image-style input, profiles only; bundles made before
#: named multi-input I/O) and 2 (full I/O description: roles, value ranges, axes; tokenizer for text models).
DEPLOY_SCHEMA_READABLE = (1, 2)
DEPLOY_KIND = "pela-export-bundle"
DEVICE_REPORT_SCHEMA_VERSION = 2
#: device-report.json versions this pela-export reads: 1 (``device.cuda`` only, which showed cuda-python's
#: bundled runtime) and 2 (adds ``device.cuda_driver``, ``cuda_toolkit`` and ``cuda_python``, kept apart).
DEVICE_REPORT_SCHEMA_READABLE = (1, 2)
DEVICE_REPORT_KIND = "pela-export-device-report"

MODELS = ("original", "compressed")
BACKENDS = ("tensorrt", "onnxruntime")
LATENCY_KEYS = ("n_runs", "batch", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "throughput", "samples_ms")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

REPACKAGE_FIX = ("re-create the bundle on the workstation with `pela-export package --out RUN_DIR` and copy "
                 "bundle.tar.gz again (a bundle must not be edited by hand)")


def is_safe_relpath(path: Any) -> bool:
    """A relative POSIX path that stays inside the bundle (no absolute path, no ``..``, no backslash)."""
    if not isinstance(path, str) or not path or "\\" in path or path.startswith("/"):
        return False
    parts = path.split("/")
    return all(p not in ("", ".", "..") for p in parts)


class _Checker:
    """Collects every problem (key path + what is wrong) instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def get(self, d: Any, key: str, path: str, kind: type | tuple[type, ...], *, nullable: bool = False) -> Any:
        where = f"{path}.{key}" if path else key
        if not isinstance(d, Mapping):
            return None
        if key not in d:
            self.problems.append(f"key {where!r} is missing")
            return None
        value = d[key]
        if value is None and nullable:
            return None
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            self.problems.append(f"key {where!r} is {value!r}, expected {_kind_name(kind)}")
            return None
        if not isinstance(value, kind):
            self.problems.append(f"key {where!r} is {type(value).__name__} {_short(value)}, expected "
                                 f"{_kind_name(kind)}{' or null' if nullable else ''}")
            return None
        return value

    def require(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number", bool: "true/false"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_header(c: _Checker, d: Mapping[str, Any], version: int, kind: str,
                  readable: tuple[int, ...] = ()) -> None:
    """schema_version first: a newer/older format is one clear problem, not a cascade."""
    v = d.get("schema_version")
    if "schema_version" not in d:
        c.problems.append("key 'schema_version' is missing")
    elif isinstance(v, bool) or not isinstance(v, int):
        c.problems.append(f"key 'schema_version' is {_short(v)}, expected the integer {version}")
    elif v not in (readable or (version,)):
        newer = v > version
        reads = " or ".join(str(r) for r in (readable or (version,)))
        c.problems.append(f"schema_version is {v}, this pela-export reads schema_version {reads} "
                          f"({'written by a newer pela-export: upgrade pela-export on this machine' if newer else 'an older format'})")
    c.require(d.get("kind") == kind, f"key 'kind' is {_short(d.get('kind'))}, expected {kind!r}")
    c.get(d, "created_at", "", str)
    tool = c.get(d, "tool", "", dict)
    if tool is not None:
        c.get(tool, "name", "tool", str)
        c.get(tool, "version", "tool", str)


def _check_shape(c: _Checker, shape: Any, where: str, *, symbolic: bool) -> None:
    ok_types = (int, str) if symbolic else (int,)
    if not isinstance(shape, list) or not all(isinstance(s, ok_types) and not isinstance(s, bool) for s in shape):
        c.problems.append(f"key {where!r} is {_short(shape)}, expected a list of "
                          f"{'integers or axis names' if symbolic else 'integers'}")


def _check_int_or_null(c: _Checker, t: Mapping[str, Any], key: str, where: str) -> None:
    v = t.get(key)
    c.require(v is None or (isinstance(v, int) and not isinstance(v, bool)),
              f"key '{where}.{key}' is {_short(v)}, expected an integer or null")


def _check_axes(c: _Checker, axes: Mapping[str, Any]) -> None:
    for name, r in axes.items():
        where = f"io.axes.{name}"
        if not isinstance(r, Mapping):
            c.problems.append(f"key {where!r} is not an object")
            continue
        vals = [c.get(r, k, where, int) for k in ("min", "opt", "max")]
        if all(isinstance(v, int) for v in vals):
            c.require(1 <= vals[0] <= vals[1] <= vals[2],  # type: ignore[operator]
                      f"key {where!r} needs 1 <= min <= opt <= max, got {vals[0]}, {vals[1]}, {vals[2]}")


def _check_io(c: _Checker, io: Mapping[str, Any], version: int = DEPLOY_SCHEMA_VERSION) -> None:
    """Schema 2 adds each tensor's ``role`` (inputs: ``low``/``high`` value bounds) and ``axes``."""
    if version >= 2:
        axes = c.get(io, "axes", "io", dict)
        if axes is not None:
            _check_axes(c, axes)
    for side in ("inputs", "outputs"):
        tensors = c.get(io, side, "io", list)
        if tensors is None:
            continue
        c.require(len(tensors) > 0, f"key 'io.{side}' is empty, expected at least one tensor")
        for i, t in enumerate(tensors):
            where = f"io.{side}[{i}]"
            if not isinstance(t, Mapping):
                c.problems.append(f"key {where!r} is not an object")
                continue
            c.get(t, "name", where, str)
            c.get(t, "dtype", where, str)
            shape = c.get(t, "shape", where, list)
            if shape is not None:
                _check_shape(c, shape, f"{where}.shape", symbolic=True)
            if version >= 2:
                c.get(t, "role", where, str)
                if side == "inputs":
                    _check_int_or_null(c, t, "low", where)
                    _check_int_or_null(c, t, "high", where)
            if side == "inputs":
                prof = c.get(t, "profile", where, dict)
                if prof is not None:
                    for k in ("min", "opt", "max"):
                        dims = c.get(prof, k, f"{where}.profile", list)
                        if dims is not None:
                            _check_shape(c, dims, f"{where}.profile.{k}", symbolic=False)
                    lo, mid, hi = (prof.get(k) for k in ("min", "opt", "max"))
                    if all(isinstance(x, list) and all(isinstance(v, int) for v in x) for x in (lo, mid, hi)):
                        c.require(len(lo) == len(mid) == len(hi) and all(a <= b <= e for a, b, e in zip(lo, mid, hi)),
                                  f"key '{where}.profile' needs min <= opt <= max per dimension, got {lo}, {mid}, {hi}")


def _check_tolerance(c: _Checker, tol: Any, where: str) -> None:
    if not isinstance(tol, Mapping):
        return
    for k in ("atol", "rtol"):
        v = c.get(tol, k, where, (int, float))
        if v is not None:
            c.require(v >= 0 and v == v, f"key '{where}.{k}' is {v!r}, expected a number >= 0")


def _check_variant(c: _Checker, name: str, v: Any) -> None:
    where = f"variants.{name}"
    if not isinstance(v, Mapping):
        c.problems.append(f"key {where!r} is not an object")
        return
    model = c.get(v, "model", where, str)
    precision = c.get(v, "precision", where, str)
    if model is not None:
        c.require(model in MODELS, f"key '{where}.model' is {model!r}, expected one of {', '.join(MODELS)}")
    if precision is not None:
        # any well-formed name: the variant carries its own tolerance and ORT level, so a precision this
        # pela-export has no spec for (a newer workstation's, a plugin's) still verifies and runs here
        c.require(bool(NAME_PATTERN.match(precision)),
                  f"key '{where}.precision' is {precision!r}, expected a precision name such as fp32, fp16 or int8 "
                  f"(lowercase letters, digits, _ + -)")
    if model is not None and precision is not None:
        c.require(name == variant_name(model, precision),
                  f"variant {name!r} is named differently from its model/precision ({variant_name(model, precision)!r})")
    for key, nullable in (("onnx", False), ("golden", False), ("calibration_cache", True)):
        rel = c.get(v, key, where, str, nullable=nullable)
        if rel is not None:
            c.require(is_safe_relpath(rel), f"key '{where}.{key}' is {rel!r}, expected a relative path inside the bundle")
    sha = c.get(v, "sha256", where, str)
    if sha is not None:
        c.require(bool(_HEX64.match(sha)), f"key '{where}.sha256' is {_short(sha)}, expected 64 lowercase hex digits")
    size = c.get(v, "bytes", where, int)
    if size is not None:
        c.require(size > 0, f"key '{where}.bytes' is {size}, expected a positive size")
    tol = c.get(v, "tolerance", where, dict)
    _check_tolerance(c, tol, f"{where}.tolerance")
    c.get(v, "cpu_accuracy", where, dict, nullable=True)
    trtexec = c.get(v, "trtexec", where, dict)
    for version, entry in (trtexec or {}).items():
        w = f"{where}.trtexec.{version}"
        if not isinstance(entry, Mapping):
            c.problems.append(f"key {w!r} is not an object")
            continue
        script = c.get(entry, "script", w, str)
        c.get(entry, "command", w, str)
        if script is not None:
            c.require(is_safe_relpath(script), f"key '{w}.script' is {script!r}, expected a relative path inside the bundle")
    level = v.get("onnxruntime_optimization", "all")
    c.require(level in ORT_LEVELS, f"key '{where}.onnxruntime_optimization' is {_short(level)}, expected "
                                   f"{' or '.join(map(repr, ORT_LEVELS))}")


TOKENIZER_PADDING_SIDES = ("right", "left")


def _check_tokenizer(c: _Checker, tok: Mapping[str, Any]) -> None:
    """deploy.json ``tokenizer`` (schema 2, text models): files in the bundle and how to pad/truncate."""
    files = c.get(tok, "files", "tokenizer", list)
    for i, rel in enumerate(files or []):
        c.require(is_safe_relpath(rel), f"key 'tokenizer.files[{i}]' is {_short(rel)}, expected a relative path "
                                        "inside the bundle")
    main = c.get(tok, "tokenizer_json", "tokenizer", str, nullable=True)
    if main is not None:
        c.require(main in (files or []), f"key 'tokenizer.tokenizer_json' is {main!r}, which 'tokenizer.files' "
                                         "does not list")
    n = c.get(tok, "max_length", "tokenizer", int)
    if n is not None:
        c.require(n >= 1, f"key 'tokenizer.max_length' is {n}, expected an integer >= 1")
    side = c.get(tok, "padding_side", "tokenizer", str)
    if side is not None:
        c.require(side in TOKENIZER_PADDING_SIDES, f"key 'tokenizer.padding_side' is {side!r}, expected one of "
                                                   f"{', '.join(TOKENIZER_PADDING_SIDES)}")
    c.get(tok, "truncation", "tokenizer", bool)
    c.get(tok, "pad_token_id", "tokenizer", int)


def deploy_problems(d: Any) -> list[str]:
    """Every problem of a parsed deploy.json (empty when valid); schema 1 bundles are read too."""
    c = _Checker()
    if not isinstance(d, Mapping):
        return [f"deploy.json holds {type(d).__name__}, expected a JSON object"]
    _check_header(c, d, DEPLOY_SCHEMA_VERSION, DEPLOY_KIND, DEPLOY_SCHEMA_READABLE)
    if c.problems and any("schema_version" in p for p in c.problems):
        return c.problems  # another format: the remaining keys mean something else
    c.get(d, "dependencies", "", dict)
    model = c.get(d, "model", "", dict)
    if model is not None:
        c.get(model, "name", "model", str)
        c.get(model, "source", "model", str)
    comp = c.get(d, "compression", "", dict)
    if comp is not None:
        c.get(comp, "layers", "compression", list)
        params = c.get(comp, "params", "compression", dict)
        for m in MODELS:
            c.get(params, m, "compression.params", int, nullable=True)
    version = int(d["schema_version"])
    io = c.get(d, "io", "", dict)
    if io is not None:
        _check_io(c, io, version)
    if version >= 2:
        tok = c.get(d, "tokenizer", "", dict, nullable=True)
        if tok is not None:
            _check_tokenizer(c, tok)
    if c.get(d, "preprocessing", "", dict, nullable=True) is not None:
        c.problems.extend(validate_preprocessing(d["preprocessing"]))
    labels = c.get(d, "labels", "", list, nullable=True)
    if labels is not None:
        c.require(all(isinstance(x, str) for x in labels), "key 'labels' must be a list of strings")
    if "latency_table" in d:  # optional: bundles of --rank-policy latency runs (read by device-latency)
        c.get(d, "latency_table", "", str, nullable=True)
    variants = c.get(d, "variants", "", dict)
    if variants is not None:
        c.require(len(variants) > 0, "key 'variants' is empty: the bundle holds no model")
        for name, v in variants.items():
            _check_variant(c, name, v)
    return c.problems


def _raise(problems: list[str], what: str, where: str | None, fix: str) -> None:
    head = problems[0] if len(problems) == 1 else f"{len(problems)} problems"
    detail = "" if len(problems) == 1 else "\n" + "\n".join(f"  - {p}" for p in problems)
    raise ArtifactError(f"{what} is invalid: {head}{detail}", fix=fix, where=where)


def validate_deploy(d: Any, *, where: str | None = "deploy.json") -> dict[str, Any]:
    """Return ``d`` if it is a valid deploy.json (schema 1 or 2), else ArtifactError listing every problem."""
    problems = deploy_problems(d)
    if problems:
        _raise(problems, "deploy.json", where, REPACKAGE_FIX)
    return dict(d)


def _check_latency(c: _Checker, lat: Any, where: str) -> None:
    for batch, entry in (lat or {}).items():
        w = f"{where}.{batch}"
        c.require(str(batch).isdigit(), f"key {w!r}: latency keys are batch sizes, got {batch!r}")
        if not isinstance(entry, Mapping):
            c.problems.append(f"key {w!r} is not an object")
            continue
        for k in LATENCY_KEYS:
            kind: type | tuple[type, ...] = list if k == "samples_ms" else (int, float)
            c.get(entry, k, w, kind, nullable=k == "throughput")


def device_report_problems(d: Any) -> list[str]:
    """Every problem of a parsed device-report.json (empty when valid)."""
    c = _Checker()
    if not isinstance(d, Mapping):
        return [f"device report holds {type(d).__name__}, expected a JSON object"]
    _check_header(c, d, DEVICE_REPORT_SCHEMA_VERSION, DEVICE_REPORT_KIND, DEVICE_REPORT_SCHEMA_READABLE)
    if any("schema_version" in p for p in c.problems):
        return c.problems
    version = int(d["schema_version"])
    bundle = c.get(d, "bundle", "", dict)
    if bundle is not None:
        for k in ("path", "model", "deploy_sha256"):
            c.get(bundle, k, "bundle", str)
    device = c.get(d, "device", "", dict)
    if device is not None:
        for k in ("hostname", "platform"):
            c.get(device, k, "device", str)
        c.get(device, "gpu", "device", dict, nullable=True)
        for k in ("tensorrt", "cuda", "onnxruntime", "fallback_reason", "cpu"):
            c.get(device, k, "device", str, nullable=True)
        c.get(device, "jetson", "device", dict, nullable=True)
        if version >= 2:
            for k in ("cuda_driver", "cuda_toolkit"):
                c.get(device, k, "device", str, nullable=True)
            py = c.get(device, "cuda_python", "device", dict, nullable=True)
            for k in ("package", "runtime") if py is not None else ():
                c.get(py, k, "device.cuda_python", str, nullable=True)
        backend = c.get(device, "backend", "device", str)
        c.require(backend is None or backend in BACKENDS, f"key 'device.backend' is {backend!r}, expected "
                                                          f"one of {', '.join(BACKENDS)}")
    variants = c.get(d, "variants", "", dict)
    for name, v in (variants or {}).items():
        where = f"variants.{name}"
        if not isinstance(v, Mapping):
            c.problems.append(f"key {where!r} is not an object")
            continue
        c.get(v, "model", where, str)
        c.get(v, "precision", where, str)
        backend = c.get(v, "backend", where, str)
        c.require(backend is None or backend in BACKENDS, f"key '{where}.backend' is {backend!r}")
        c.get(v, "engine", where, dict, nullable=True)
        golden = c.get(v, "golden", where, dict)
        if golden is not None:
            c.get(golden, "ok", f"{where}.golden", bool)
            _check_tolerance(c, c.get(golden, "tolerance", f"{where}.golden", dict), f"{where}.golden.tolerance")
            c.get(golden, "outputs", f"{where}.golden", dict)
        _check_latency(c, c.get(v, "latency", where, dict), f"{where}.latency")
        c.get(v, "params", where, int, nullable=True)
        c.get(v, "onnx_bytes", where, int, nullable=True)
        c.get(v, "cpu_accuracy", where, dict, nullable=True)
    return c.problems


def validate_device_report(d: Any, *, where: str | None = "device-report.json") -> dict[str, Any]:
    """Return ``d`` if it is a valid device report (schema 1 or 2), else ArtifactError listing every problem."""
    problems = device_report_problems(d)
    if problems:
        _raise(problems, "device report", where,
               "re-run `pela-export device-bench BUNDLE` on the device with this pela-export version")
    return dict(d)


def load_json_file(path: Any, what: str, validate: Callable[..., dict[str, Any]], fix: str) -> dict[str, Any]:
    """Read and validate one JSON file; truncated or corrupt JSON is an ArtifactError naming the position."""
    import json
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{what} not found", fix=fix, where=str(p))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{what} is not UTF-8 text ({exc.reason})", fix=fix, where=str(p)) from None
    except ValueError as exc:
        raise ArtifactError(f"{what} is truncated or corrupt JSON ({exc})", fix=fix, where=str(p)) from None
    return validate(data, where=str(p))


def load_device_report(path: Any) -> dict[str, Any]:
    """A validated device-report.json (for `pela-export report` merging workstation and device results)."""
    return load_json_file(path, "device report", validate_device_report,
                          "re-run `pela-export device-bench BUNDLE` on the device and copy device-report.json back")
