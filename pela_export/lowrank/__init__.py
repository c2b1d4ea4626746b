"""Low-rank compression: eligible ``nn.Linear`` → ``LowRankLinear`` (U·V)."""
from .decompose import DECOMPOSITIONS, Factors, relative_error, truncated_svd
from .factorize import CompressionResult, LayerRecord, factorize_model, format_rank_table
from .layer import LowRankLinear, dense_params, lowrank_params
from .ranks import RANK_ALLOCATORS, LayerShape, align_rank, check_ratio, pela_rank
from .saved import load_compressed, read_spec, save_compressed
from .select import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, select_linears

__all__ = [
    "DECOMPOSITIONS", "Factors", "relative_error", "truncated_svd", "CompressionResult", "LayerRecord",
    "factorize_model", "format_rank_table", "LowRankLinear", "dense_params", "lowrank_params",
    "RANK_ALLOCATORS", "LayerShape", "align_rank", "check_ratio", "pela_rank", "load_compressed",
    "read_spec", "save_compressed", "DEFAULT_EXCLUDE", "DEFAULT_INCLUDE", "select_linears",
]
