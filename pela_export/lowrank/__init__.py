"""Low-rank compression: eligible ``nn.Linear``/``nn.Conv2d`` → two factors (``LowRankLinear``/``LowRankConv2d``)."""
from .allocators import budget_allocator, energy_allocator, energy_rank
from .decompose import (DECOMPOSITIONS, Decomposition, DecompositionSpec, Factors, register_decomposition,
                        relative_error, truncated_svd)
from .conv import CONV_DECOMPOSITIONS, DEFAULT_CONV_DECOMPOSITION, LowRankConv2d
from .factorize import CompressionResult, LayerRecord, factorize_model, format_rank_table
from .layer import LowRankLayer, LowRankLinear, dense_params, lowrank_params
from .ranks import (DEFAULT_RATIO, RANK_ALLOCATORS, AllocationInputs, LayerShape, RankAllocator, RankPolicySpec,
                    align_rank, check_ratio, pela_rank, register_rank_policy)
from .risk import output_error, svd_risk
from .saved import load_compressed, read_spec, save_compressed
from .select import (DEFAULT_EXCLUDE, DEFAULT_INCLUDE, REPEATED_BLOCKS, LayerChoice, classify_layers, select_layers, select_linears,
                     selection_rule)
from .sensitivity import sensitivity_allocator
from .latency_policy import LatencyModel, latency_allocator  # registers --rank-policy latency
from .stats import CalibrationError, LayerStats, collect_activation_stats, collect_fisher, with_fisher
from .weighted import activation_aware_svd, fisher_weighted_svd, whitened_svd

__all__ = [
    "CONV_DECOMPOSITIONS", "DEFAULT_CONV_DECOMPOSITION", "LowRankConv2d", "LowRankLayer", "select_layers",
    "DECOMPOSITIONS", "Decomposition", "DecompositionSpec", "register_decomposition", "DEFAULT_RATIO",
    "RankPolicySpec", "register_rank_policy", "Factors", "relative_error", "truncated_svd", "CompressionResult",
    "LayerRecord", "factorize_model", "format_rank_table", "LowRankLinear", "dense_params", "lowrank_params",
    "RANK_ALLOCATORS", "AllocationInputs", "LayerShape", "RankAllocator", "align_rank", "check_ratio",
    "pela_rank", "load_compressed", "read_spec", "save_compressed", "DEFAULT_EXCLUDE", "DEFAULT_INCLUDE",
    "select_linears", "REPEATED_BLOCKS", "LayerChoice", "classify_layers", "selection_rule", "budget_allocator", "energy_allocator", "energy_rank", "output_error", "svd_risk",
    "sensitivity_allocator", "CalibrationError", "LayerStats", "collect_activation_stats", "collect_fisher",
    "with_fisher", "LatencyModel", "latency_allocator", "activation_aware_svd", "fisher_weighted_svd", "whitened_svd",
]
