"""The device side: load a deployment bundle, verify it, run and benchmark its variants.

Importable with numpy plus onnxruntime (and, to use TensorRT, its Python
bindings and cuda-python) — never torch, so ``pela-export verify`` and
``pela-export device-bench`` run on a Jetson without PyTorch. A test runs this
package in a subprocess with torch made unimportable.

Public API::

    Bundle.load(path_or_tar_gz, verify=True) -> Bundle   (.variants(), .golden(name), .onnx_path(name), .tolerance(name))
    verify_bundle(bundle_dir) -> list[Problem]           (empty: intact)
    run_variant(bundle, name, feeds=None, backend="onnxruntime") -> {output: np.ndarray}
    device_bench(bundle, out_dir, batch_sizes=None, warmup=10, runs=100, backend="auto") -> (json_path, md_path)
    validate_deploy(d), validate_device_report(d), load_device_report(path)
    preprocess(raw_images, deploy["preprocessing"]) -> model input   (validate_preprocessing(d) -> problems)
"""
from __future__ import annotations

from .backends import BACKEND_CHOICES, choose_backend, open_variant, run_variant
from .bundle import Bundle, extract_archive
from .devicebench import REPORT_JSON, REPORT_MD, device_bench
from .device import device_facts, jetson_facts, parse_nvpmodel, parse_tegra_release
from .engines import EngineKey, engine_cache_dir, engine_key
from .preprocess import preprocess, validate_preprocessing
from .schema import (
    DEPLOY_SCHEMA_VERSION,
    DEVICE_REPORT_SCHEMA_VERSION,
    load_device_report,
    validate_deploy,
    validate_device_report,
)
from .sums import SUMS_NAME, Problem, parse_sums, verify_bundle, write_sums

__all__ = [
    "BACKEND_CHOICES", "DEPLOY_SCHEMA_VERSION", "DEVICE_REPORT_SCHEMA_VERSION", "REPORT_JSON", "REPORT_MD", "SUMS_NAME",
    "Bundle", "EngineKey", "Problem",
    "choose_backend", "device_bench", "device_facts", "engine_cache_dir", "engine_key", "extract_archive",
    "jetson_facts", "load_device_report", "open_variant", "parse_nvpmodel", "parse_sums", "parse_tegra_release",
    "preprocess", "run_variant", "validate_deploy", "validate_device_report", "validate_preprocessing", "verify_bundle",
    "write_sums",
]
