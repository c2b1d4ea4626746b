"""INT8 calibration: data sources, reproducible calibration sets, activation
statistics, scale methods, TensorRT calibration caches, Q/DQ placement and a
per-node sensitivity report.

One set of statistics feeds both outputs: the Q/DQ ONNX model (explicit
quantization, TensorRT 8.6 / 10 / 11) and the calibration cache of TensorRT's
implicit-INT8 path (TensorRT <= 10), so the two agree scale for scale.
The converter that uses all this is ``pela_export.precision.int8``.
"""
from __future__ import annotations

from .cache import (CALIBRATOR_BY_METHOD, DEFAULT_TRT_VERSION, CalibrationCache, format_scale, make_cache,
                    parse_scale, read_cache, trt_version_number, write_cache)
from .calibset import (DEFAULT_BATCH_SIZE, DEFAULT_SAMPLES, CalibrationSet, calibration_set, from_feeds,
                       from_manifest, select_indices)
from .manifest import CalibrationManifest, arrays_sha256
from .methods import (DEFAULT_PERCENTILE, SCALE_METHODS, ScaleParams, amax_to_scale, entropy_threshold,
                      percentile_threshold, threshold)
from .qdq import QUANTIZABLE_OPS, QuantTarget, find_targets, insert_qdq, weight_scales
from .sensitivity import int8_sensitivity, node_sensitivity, output_error
from .sources import DEFAULT_SOURCE, SOURCES, ModelInput, Source, open_source, source_choices
from .statistics import DEFAULT_BINS, ActivationStatistics, TensorStats, collect_statistics

__all__ = [
    "CALIBRATOR_BY_METHOD", "DEFAULT_BATCH_SIZE", "DEFAULT_BINS", "DEFAULT_PERCENTILE", "DEFAULT_SAMPLES",
    "DEFAULT_SOURCE", "DEFAULT_TRT_VERSION", "QUANTIZABLE_OPS", "SCALE_METHODS", "SOURCES",
    "ActivationStatistics", "CalibrationCache", "CalibrationManifest", "CalibrationSet", "ModelInput",
    "QuantTarget", "ScaleParams", "Source", "TensorStats",
    "amax_to_scale", "arrays_sha256", "calibration_set", "collect_statistics", "entropy_threshold",
    "find_targets", "format_scale", "from_feeds", "from_manifest", "insert_qdq", "int8_sensitivity",
    "make_cache", "node_sensitivity", "open_source", "output_error", "parse_scale", "percentile_threshold",
    "read_cache", "select_indices", "source_choices", "threshold", "trt_version_number", "weight_scales",
    "write_cache",
]
