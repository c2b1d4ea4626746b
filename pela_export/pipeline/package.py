"""Stage: the deployment bundle (``DIR/bundle`` and ``DIR/bundle.tar.gz``).

Everything the device needs, nothing it must recompute: every ONNX variant,
golden inputs and the workstation's outputs for each, the INT8 calibration
cache, trtexec scripts per TensorRT version, ``deploy.json`` (schema 2, see
:mod:`pela_export.runtime.schema`: every named input and output with its role, profile and axis
ranges; for text models the tokenizer files under ``tokenizer/`` and how to pad and truncate)
and ``SHA256SUMS``. Golden files hold every input (``input:<name>``) and every output
(``output:<name>``) of each variant. The bundle is built in
a temporary folder and renamed into place, and the archive is written to a
temporary name, so a failed stage never leaves a half-written bundle.

Golden tolerances: the golden outputs are ONNX Runtime (CPU) outputs *of the
variant itself*, so the device check measures only the device's numerics
against the workstation's. FP32 uses the model's tolerance (``--atol/--rtol``).
FP16 and INT8 kernels legitimately differ from ORT's (accumulation order, FP16
intermediates; INT8 requantisation rounding that moves values by a quantisation
step), so their atol is a stated fraction of the largest |golden output| and
their rtol is fixed; each precision's pair is its spec's ``golden_tolerance``
(:mod:`pela_export.precision.specs`), also recorded per variant in deploy.json.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._io import atomic_path, sha256_file, write_json_atomic, write_text_atomic
from ..errors import ArtifactError
from ..models.io import as_feeds, batch_len, batch_slice
from ..precision.spec import precision_spec, precision_specs, variant_name
from ..runtime.schema import DEPLOY_KIND, DEPLOY_SCHEMA_VERSION, validate_deploy
from ..runtime.sums import SUMS_NAME, write_sums
from . import package_meta as meta
from . import package_scripts as scripts
from .bench import deployed_onnx, recorded_precision_variants
from .context import Context, log
from .evaldata import evaluation_data
from .records import BenchRecord, CompressRecord, PackageRecord

BUNDLE_DIR = "bundle"
LATENCY_TABLE = "latency_table.json"  # the name `pela-export device-latency` reads (runtime.device_latency)
ARCHIVE_NAME = "bundle.tar.gz"
GOLDEN_BATCH = 4


def golden_policy() -> str:
    """deploy.json's ``golden.policy``: each registered precision's (atol x max|golden|, rtol) from its spec."""
    return ("golden outputs are ONNX Runtime (CPU) outputs of each variant on the golden inputs; the device passes "
            "when |device - golden| <= atol + rtol*|golden| per element, at least the model's own tolerance; "
            + "; ".join(f"{s.name}: atol {s.golden_tolerance[0]:g} x max|golden|, rtol {s.golden_tolerance[1]:g}"
                        for s in precision_specs())
            + " (TensorRT computes FP32 layers in TF32 by default on Ampere and newer; device FP16/INT8 kernels "
              "round differently from ONNX Runtime's)")


ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
             "tensor(bool)": np.bool_}


def source_variants(ctx: Context) -> dict[str, dict[str, Any]]:
    """``{model.precision: {model, precision, src, accuracy}}`` for the FP32 files and the recorded precision variants."""
    out: dict[str, dict[str, Any]] = {}
    for model, path in deployed_onnx(ctx).items():
        out[variant_name(model, "fp32")] = {"model": model, "precision": "fp32", "src": Path(path), "accuracy": None}
    for name, (src, v) in recorded_precision_variants(ctx, needed_by="package").items():
        out[name] = {"model": v.model, "precision": v.precision, "src": src, "accuracy": v.accuracy}
    return out


def _golden_batch(io: dict[str, Any]) -> int:
    prof = io["inputs"][0]["profile"]
    lo, hi = (prof["min"][0], prof["max"][0]) if prof["min"] else (1, 1)
    return int(min(max(GOLDEN_BATCH, lo), hi))


def _golden(ctx: Context, src: Path, precision: str, x: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Golden inputs cast to the variant's input dtypes, and its ONNX Runtime (CPU) outputs."""
    from ..export.runtime import ort_run, ort_session

    session = ort_session(src, threads=ctx.cfg.bench.threads, optimization=precision_spec(precision).ort_level)
    feeds = {i.name: np.ascontiguousarray(x[i.name].astype(ORT_TYPES.get(i.type, x[i.name].dtype)))
             for i in session.get_inputs()}
    return feeds, ort_run(session, feeds)


def _tolerance(ctx: Context, precision: str, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    model = ctx.tolerance
    frac, rtol = precision_spec(precision).golden_tolerance
    finite = [np.abs(v[np.isfinite(v)]).max() for v in outputs.values() if np.isfinite(v).any()]
    scale = float(max(finite)) if finite and max(finite) > 0 else 1.0
    return {"atol": max(float(f"{frac * scale:.3g}"), float(model.atol)), "rtol": max(rtol, float(model.rtol))}


def _copy_onnx(src: Path, dst: Path) -> None:
    """Copy an ONNX file and any external-data files it references (same relative names)."""
    import onnx

    shutil.copyfile(src, dst)
    model = onnx.load(str(src), load_external_data=False)
    for t in model.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), None)
        if loc is None:
            continue
        target = dst.parent / loc
        if target.is_file() and sha256_file(target) != sha256_file(src.parent / loc):
            raise ArtifactError(f"two ONNX variants use the external-data file name {loc!r} with different contents",
                                fix="re-export with distinct external-data names", where=str(src))
        if not target.is_file():
            shutil.copyfile(src.parent / loc, target)


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _golden_inputs(ctx: Context, io: dict[str, Any]) -> dict[str, np.ndarray]:
    """The first samples of the evaluation data (deterministic), as many as the golden batch, for every input."""
    batch = _golden_batch(io)
    data = evaluation_data(ctx, limit=batch).x
    n = batch_len(data)
    rows = np.arange(batch) % n if n < batch else None
    x = batch_slice(data, 0, batch) if rows is None else (
        {k: v[rows] for k, v in data.items()} if isinstance(data, Mapping) else data[rows])
    return as_feeds(x, [t["name"] for t in io["inputs"]])


def _calibration(ctx: Context, tmp: Path, name: str, src: Path) -> str | None:
    """Copy the INT8 calibration cache and manifest; returns the cache's bundle path (None if absent)."""
    cache_rel = None
    for suffix in (".calib.cache", ".calib.manifest.json"):
        side = src.with_name(src.stem + suffix)
        if not side.is_file():
            ctx.note(f"package: {name}: {side.name} not found beside {src.name}; left out of the bundle")
            continue
        (tmp / "calibration").mkdir(exist_ok=True)
        shutil.copyfile(side, tmp / "calibration" / f"{name}{suffix}")
        if suffix == ".calib.cache":
            cache_rel = f"calibration/{name}{suffix}"
    return cache_rel


def _fill_bundle(ctx: Context, tmp: Path) -> dict[str, Any]:
    """Write every bundle file into ``tmp``; returns deploy.json."""
    variants = source_variants(ctx)
    comp = ctx.load_record(CompressRecord, needed_by="package")
    bench = ctx.optional_record(BenchRecord, needed_by="package")
    options = scripts.bundle_options(ctx)
    versions = scripts.target_versions(ctx)
    io = scripts.io_spec(variants[variant_name("compressed", "fp32")]["src"], options, versions, ctx.loaded.spec)
    golden_x = _golden_inputs(ctx, io)
    entries: dict[str, Any] = {}
    (tmp / "onnx").mkdir()
    for name, info in variants.items():
        log(f"package: {name}")
        onnx_rel = f"onnx/{name}.onnx"
        _copy_onnx(info["src"], tmp / onnx_rel)
        feeds, outputs = _golden(ctx, tmp / onnx_rel, info["precision"], golden_x)
        golden_rel = f"golden/{name}.npz"
        with atomic_path(tmp / golden_rel) as t, open(t, "wb") as f:
            np.savez(f, **{f"input:{k}": v for k, v in feeds.items()}, **{f"output:{k}": v for k, v in outputs.items()})
        entries[name] = {"model": info["model"], "precision": info["precision"], "onnx": onnx_rel,
                         "sha256": sha256_file(tmp / onnx_rel), "bytes": (tmp / onnx_rel).stat().st_size,
                         "golden": golden_rel, "tolerance": _tolerance(ctx, info["precision"], outputs),
                         "onnxruntime_optimization": precision_spec(info["precision"]).ort_level,
                         "cpu_accuracy": meta.cpu_accuracy(name, info, variants, bench),
                         "calibration_cache": _calibration(ctx, tmp, name, info["src"])
                         if precision_spec(info["precision"]).quantized else None,
                         "trtexec": scripts.trtexec_scripts(ctx, tmp, name, onnx_rel, versions, options)}
    loaded = ctx.loaded
    table = comp.artifacts.get("latency_table")
    if table and Path(table).is_file():  # the layer shapes `pela-export device-latency` times on the device
        shutil.copyfile(table, tmp / LATENCY_TABLE)
    deploy = {
        "schema_version": DEPLOY_SCHEMA_VERSION, "kind": DEPLOY_KIND,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool": {"name": "pela-export", "version": __version__},
        "dependencies": meta.dependencies(),
        "model": {"name": loaded.name, "source": loaded.source, "family": loaded.family,
                  "num_classes": loaded.num_classes, "input_shape": list(loaded.input_shape)},
        "compression": meta.compression(comp),
        "io": io,
        "tokenizer": meta.tokenizer(ctx, tmp, io),
        "preprocessing": meta.preprocessing(ctx),
        "labels": meta.labels(ctx),
        "golden": {"batch": _golden_batch(io), "source": "first samples of the evaluation data", "policy": golden_policy()},
        "tensorrt": {"target_versions": versions, "build_options": options.to_dict()},
        "variants": entries,
        "latency_table": LATENCY_TABLE if (tmp / LATENCY_TABLE).is_file() else None,
    }
    validate_deploy(deploy, where="package (internal)")
    write_json_atomic(tmp / "deploy.json", deploy)
    with_scripts = sorted({v for e in entries.values() for v in e["trtexec"]})
    write_text_atomic(tmp / "build_engines.sh",
                      scripts.BUILD_ENGINES.replace("__VERSIONS__", " ".join(with_scripts) or "none"))
    os.chmod(tmp / "build_engines.sh", 0o755)
    write_sums(tmp)
    return deploy


def package_stage(ctx: Context) -> PackageRecord:
    """Build ``DIR/bundle`` and ``DIR/bundle.tar.gz`` from the run's artifacts; returns the stage record."""
    root = ctx.artifacts.root
    final, archive = root / BUNDLE_DIR, root / ARCHIVE_NAME
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".bundle.", suffix=".tmp"))
    old: Path | None = None
    try:
        os.chmod(tmp, 0o755)
        deploy = _fill_bundle(ctx, tmp)
        with atomic_path(archive) as tar_tmp:
            with tarfile.open(tar_tmp, "w:gz") as tar:
                tar.add(tmp, arcname=BUNDLE_DIR, filter=_normalise)
            if final.exists():
                old = root / f".bundle.old.{os.getpid()}"
                os.replace(final, old)
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:  # the swap failed half-way: put the previous bundle back
                os.replace(old, final)
    files = sum(1 for line in (final / SUMS_NAME).read_text().splitlines() if line.strip()) + 1
    record = ctx.save_record(PackageRecord(
        bundle=str(final), archive=str(archive), archive_sha256=sha256_file(archive),
        archive_bytes=archive.stat().st_size, files=files, variants=list(deploy["variants"]),
        golden_batch=deploy["golden"]["batch"], trtexec_versions=deploy["tensorrt"]["target_versions"]))
    log(f"package: {final} ({len(deploy['variants'])} variants, {files} files) and {archive} "
        f"({archive.stat().st_size / 1e6:.1f} MB); copy {ARCHIVE_NAME} to the device and run `pela-export verify "
        f"{ARCHIVE_NAME}` and `pela-export device-bench {ARCHIVE_NAME}` there")
    return record
