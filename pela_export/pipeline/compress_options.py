"""Compression options checked against the chosen method's and rank policy's registered facts.

Which option each ``--method`` / ``--rank-policy`` reads is declared once, where the
method or policy registers (:class:`~pela_export.lowrank.DecompositionSpec`,
:class:`~pela_export.lowrank.RankPolicySpec`); this module derives from those entries
the "option not used by this choice" errors and the ratio a run really uses, so no
option is silently ignored and no report shows a k the policy did not use.
Torch is imported only when a check runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cli.device_args import ints  # torch-free: argparse only
from ..errors import OptionError
from ..options import OptionGroup, flag_of, option

if TYPE_CHECKING:
    from .config import RunConfig
    from .groups import DataOptions
    from .structured_options import StructureOptions

#: The decomposition used when calibration data is given and --method is not: chosen on the
#: pretrained benchmark (bench/results/minilm_r8.md), not on the nearly low-rank toy models.
DATA_AWARE_METHOD = "whiten"
DATA_AWARE_WHY = "data-aware init measured on pretrained all-MiniLM-L6-v2 / Reuters R8, bench/results/minilm_r8.md"

#: Run options of the "compression" CLI group and of the "data-aware compression" group.
COMPRESS_OPTIONS: tuple[str, ...] = ("ratio", "method", "rank_policy", "align", "include", "exclude",
                                     "conv_decomposition", "latency_budget", "max_drop", "latency_table")
CALIB_OPTIONS: tuple[str, ...] = ("calib_data", "calib_samples", "energy", "asvd_alpha", "candidate_ranks",
                                  "sensitivity_loss", "param_budget")


def method_names() -> list[str]:
    from ..lowrank import DECOMPOSITIONS

    return DECOMPOSITIONS.names()


def policy_names() -> list[str]:
    from ..lowrank import RANK_ALLOCATORS

    return RANK_ALLOCATORS.names()


def conv_names() -> list[str]:
    from ..lowrank.conv import CONV_DECOMPOSITIONS

    return CONV_DECOMPOSITIONS.names()


def probe_names() -> list[str]:
    from ..lowrank.probes import PROBES

    return PROBES.names()


@dataclass
class CompressOptions(OptionGroup):
    """Low-rank compression: decomposition, rank policy and the layers it touches.

    Which method/policy reads which option is declared where each registers; the checks
    below derive the "not used by this choice" errors from those entries.
    """

    TITLE = "compression"
    # None: not given; a policy that reads it uses lowrank.DEFAULT_RATIO, recorded as a choice
    ratio: float | None = option(None, flag="--ratio", type=float, metavar="K",
                                 help="PELA compression ratio k > 1: r = in*out // (k*(in+out))")
    # None: svd, or DATA_AWARE_METHOD when --calib-data is given (the choice is recorded in method_choice)
    method: str | None = option(None, flag="--method", choices=method_names, help="decomposition")
    rank_policy: str = option("ratio", flag="--rank-policy", choices=policy_names,
                              help="rank allocation (default ratio)")
    align: int | None = option(None, flag="--align", type=int,
                               help="round ranks down to a multiple (e.g. 8 for tensor cores)")
    include: list[str] | None = option(None, flag="--include", action="append", metavar="GLOB",
                                       help="layer-name globs to factorize, replacing the default (repeatable; "
                                            "default: every Linear and Conv2d inside the repeated blocks, also spelled "
                                            "@repeated-blocks)")
    exclude: list[str] | None = option(None, flag="--exclude", action="append", metavar="GLOB",
                                       help="layer-name globs to keep dense (repeatable; default: patch embed, norms, "
                                            "head, pooler, classifier globs)")
    # None: channel for any selected convolution (recorded in lowrank.json); given on a model whose
    # selection holds no Conv2d it is an error, not ignored
    conv_decomposition: str | None = option(None, flag="--conv-decomposition", choices=conv_names,
                                            help="how a selected Conv2d becomes two: channel (default; kh x kw "
                                                 "conv to r channels, then 1x1) or spatial (kh x 1, then 1 x kw)")
    energy: float | None = option(None, flag="--energy", type=float,
                                  help="spectral energy to keep per layer (e.g. 0.9)")
    param_budget: float | None = option(None, flag="--param-budget", type=float,
                                        help="parameter budget of the factorized layers: a fraction (<= 1) of "
                                             "their dense parameters or a count")
    asvd_alpha: float | None = option(None, flag="--asvd-alpha", type=float,
                                      help="ASVD exponent on mean |x| (default 0.5)")
    candidate_ranks: tuple[int, ...] | None = option(None, flag="--candidate-ranks", type=ints, metavar="LIST",
                                                     help="ranks to probe (default: 0.25x..2x the uniform rank)")
    # None: "kl" (logits) or "mse" (an embedding output), chosen in the compress stage and recorded
    sensitivity_loss: str | None = option(None, flag="--sensitivity-loss", choices=probe_names,
                                          help="loss the sensitivity probe measures on calibration data: kl to the "
                                               "original's outputs (default, no labels needed), mse, or task "
                                               "(cross-entropy, needs labels)")
    latency_budget: float | None = option(None, flag="--latency-budget", type=float, metavar="F",
                                          help="latency budget: fraction 0 < F <= 1 of the dense model's latency, "
                                               "measured with ONNX Runtime CPU at the bench's threads and first "
                                               "batch size (per-layer table saved as latency_table.json)")
    max_drop: float | None = option(None, flag="--max-drop", type=float, metavar="P",
                                    help="loss budget: the fastest ranks whose predicted loss increase is <= P "
                                         "(calibration-loss increase with --calib-data, else mean relative "
                                         "weight error)")
    latency_table: str | None = option(None, flag="--latency-table", metavar="FILE",
                                       help="per-layer latency table measured on the target device (`pela-export "
                                            "device-latency BUNDLE` there): the policy ranks by the device's costs "
                                            "instead of timing ONNX Runtime CPU here (predicted only: time the "
                                            "result there with device-bench)")
    method_choice: str | None = None  # the automatic --method choice, for the report

    def choose_method(self, data: DataOptions, structure: StructureOptions) -> None:
        """``--method`` left out: svd, or the data-aware default when --calib-data is given (recorded)."""
        if self.method is None:
            automatic = data.calib_data is not None and structure.kind is None
            self.method = DATA_AWARE_METHOD if automatic else "svd"
            if automatic:
                self.method_choice = (f"--method {DATA_AWARE_METHOD} chosen because --calib-data was given "
                                      f"({DATA_AWARE_WHY}); pass --method svd for plain SVD")
        if self.rank_policy == "sensitivity" and self.sensitivity_loss is not None:
            from ..lowrank.probes import PROBES

            PROBES.get(self.sensitivity_loss)  # None: chosen from the model's output in the compress stage


def users(option: str) -> tuple[list[str], list[str]]:
    """(methods, policies) whose registered facts say they read run option ``option``."""
    from ..lowrank import DECOMPOSITIONS, RANK_ALLOCATORS

    methods = [n for n in DECOMPOSITIONS.names() if option in DECOMPOSITIONS.get(n).options]
    policies = [n for n in RANK_ALLOCATORS.names() if option in RANK_ALLOCATORS.get(n).options]
    return methods, policies


def _given(cfg: RunConfig, option: str) -> bool:
    return getattr(cfg.compress, option) is not None


def check_compression_options(cfg: RunConfig) -> None:
    """Every method/policy option the run sets must be read by the chosen ``--method`` / ``--rank-policy``."""
    from ..lowrank import DECOMPOSITIONS, RANK_ALLOCATORS

    method, policy = DECOMPOSITIONS.get(str(cfg.compress.method)), RANK_ALLOCATORS.get(cfg.compress.rank_policy)
    method_options = {o for n in DECOMPOSITIONS.names() for o in DECOMPOSITIONS.get(n).options}
    policy_options = {o for n in RANK_ALLOCATORS.names() for o in RANK_ALLOCATORS.get(n).options}
    for option in sorted(method_options):
        if _given(cfg, option) and option not in method.options:
            _not_used(cfg, option, "--method", method.name, method.summary, users(option)[0])
    for option in sorted(policy_options):
        if option == "ratio" and cfg.structure.kind is not None:
            continue  # a structured run's ratio is its adapter base's rank: checked with --structure
        if _given(cfg, option) and option not in policy.options:
            _not_used(cfg, option, "--rank-policy", policy.name, policy.summary, users(option)[1])
    if "latency" in policy.needs:  # before any model is loaded or timed
        from ..lowrank.latency_policy import check_latency_options

        check_latency_options(cfg.compress.latency_budget, cfg.compress.max_drop)
        given = cfg.compress.latency_table
        if given is not None and not Path(given).is_file():
            raise OptionError(f"--latency-table {given}: no such file",
                              fix="pass the latency_table.json that `pela-export device-latency BUNDLE` wrote on the "
                                  "device (copy it here first), or drop --latency-table to time ONNX Runtime CPU here")
        if cfg.compress.sensitivity_loss is not None and cfg.data.calib_data is None:
            raise OptionError(f"--sensitivity-loss is only used by --rank-policy {policy.name} with --calib-data "
                              "(without it the loss proxy is the relative weight error)",
                              fix="pass --calib-data DATA, or drop --sensitivity-loss")


def _not_used(cfg: RunConfig, option: str, choice_flag: str, chosen: str, summary: str, used_by: list[str]) -> None:
    flag = flag_of(CompressOptions, option)
    by = " or ".join(used_by)
    raise OptionError(f"{flag} is only used with {choice_flag} {by}, not by {choice_flag} {chosen} ({summary})",
                      fix=f"drop {flag}, or pass {choice_flag} {'/'.join(used_by)}")


def effective_ratio(cfg: RunConfig) -> float | None:
    """The k this run compresses with: the given ``--ratio``, else the default where the policy (or an
    adapter's low-rank base) reads one; None where nothing reads a ratio."""
    from ..lowrank import DEFAULT_RATIO, RANK_ALLOCATORS
    from .structured_options import resolved_base

    if cfg.structure.kind is not None:
        reads = resolved_base(cfg) == "lowrank"
    else:
        reads = RANK_ALLOCATORS.get(cfg.compress.rank_policy).uses_ratio
    if not reads:
        return None
    return float(cfg.compress.ratio) if cfg.compress.ratio is not None else DEFAULT_RATIO


def ratio_choice(cfg: RunConfig) -> str | None:
    """The automatic choice to record when the run reads a ratio the user did not give."""
    k = effective_ratio(cfg)
    if cfg.compress.ratio is not None or k is None or cfg.structure.kind is not None:
        return None
    return (f"--ratio {k:g} (the default of --rank-policy {cfg.compress.rank_policy}) because --ratio was not given; "
            "pass --ratio to choose")


def describe_ranks(cfg: RunConfig) -> str:
    """What decided the ranks, for the log line and ranks.md's title: ``k=2`` or the policy's own inputs."""
    k = effective_ratio(cfg)
    from ..lowrank import RANK_ALLOCATORS

    parts: list[str] = [f"k={k:g}"] if k is not None else []
    for option in sorted(RANK_ALLOCATORS.get(cfg.compress.rank_policy).options - {"ratio"}):
        value: Any = getattr(cfg.compress, option)
        if value is not None:
            parts.append(f"{option.replace('_', ' ')}={value}")
    return ", ".join(parts) or f"rank policy {cfg.compress.rank_policy}"
