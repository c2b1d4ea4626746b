"""Beyond plain U·V: MPO with shared central tensors, structured unrestricted-rank
adapters and kernelized sparse deltas, each a registered layer type with honest
parameter accounting and a deployable (ONNX-friendly) lowering."""
from __future__ import annotations

from .base import (LAYER_TYPES, LOWERINGS, LoweringUnavailable, ParamCounts, StructuredLinear, count_unique,
                   dense_linear, model_param_counts, register_layer_type)

# importing the layer modules registers their types in LAYER_TYPES
from . import adapters, mpo, snell  # noqa: E402,F401
from .sparsity import allocate_sparsity  # noqa: E402

__all__ = ["allocate_sparsity", "LAYER_TYPES", "LOWERINGS", "LoweringUnavailable", "ParamCounts", "StructuredLinear", "count_unique",
           "dense_linear", "model_param_counts", "register_layer_type"]
