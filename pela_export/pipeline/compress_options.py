"""Compression options checked against the chosen method's and rank policy's registered facts.

Which option each ``--method`` / ``--rank-policy`` reads is declared once, where the
method or policy registers (:class:`~pela_export.lowrank.DecompositionSpec`,
:class:`~pela_export.lowrank.RankPolicySpec`); this module derives from those entries
the "option not used by this choice" errors and the ratio a run really uses, so no
option is silently ignored and no report shows a k the policy did not use.
Torch is imported only when a check runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import OptionError
from ..options import flag_of

if TYPE_CHECKING:
    from .config import RunConfig

#: Run options of the "compression" CLI group and of the "data-aware compression" group.
COMPRESS_OPTIONS: tuple[str, ...] = ("ratio", "method", "rank_policy", "align", "include", "exclude")
CALIB_OPTIONS: tuple[str, ...] = ("calib_data", "calib_samples", "energy", "asvd_alpha", "candidate_ranks",
                                  "sensitivity_loss", "param_budget")


def method_names() -> list[str]:
    from ..lowrank import DECOMPOSITIONS

    return DECOMPOSITIONS.names()


def policy_names() -> list[str]:
    from ..lowrank import RANK_ALLOCATORS

    return RANK_ALLOCATORS.names()


def probe_names() -> list[str]:
    from ..lowrank.probes import PROBES

    return PROBES.names()


def users(option: str) -> tuple[list[str], list[str]]:
    """(methods, policies) whose registered facts say they read run option ``option``."""
    from ..lowrank import DECOMPOSITIONS, RANK_ALLOCATORS

    methods = [n for n in DECOMPOSITIONS.names() if option in DECOMPOSITIONS.get(n).options]
    policies = [n for n in RANK_ALLOCATORS.names() if option in RANK_ALLOCATORS.get(n).options]
    return methods, policies


def _given(cfg: RunConfig, option: str) -> bool:
    return getattr(cfg, option) is not None


def check_compression_options(cfg: RunConfig) -> None:
    """Every method/policy option the run sets must be read by the chosen ``--method`` / ``--rank-policy``."""
    from ..lowrank import DECOMPOSITIONS, RANK_ALLOCATORS

    method, policy = DECOMPOSITIONS.get(str(cfg.method)), RANK_ALLOCATORS.get(cfg.rank_policy)
    method_options = {o for n in DECOMPOSITIONS.names() for o in DECOMPOSITIONS.get(n).options}
    policy_options = {o for n in RANK_ALLOCATORS.names() for o in RANK_ALLOCATORS.get(n).options}
    for option in sorted(method_options):
        if _given(cfg, option) and option not in method.options:
            _not_used(cfg, option, "--method", method.name, method.summary, users(option)[0])
    for option in sorted(policy_options):
        if option == "ratio" and cfg.structure is not None:
            continue  # a structured run's ratio is its adapter base's rank: checked with --structure
        if _given(cfg, option) and option not in policy.options:
            _not_used(cfg, option, "--rank-policy", policy.name, policy.summary, users(option)[1])


def _not_used(cfg: RunConfig, option: str, choice_flag: str, chosen: str, summary: str, used_by: list[str]) -> None:
    flag = flag_of(cfg, option)
    by = " or ".join(used_by)
    raise OptionError(f"{flag} is only used with {choice_flag} {by}, not by {choice_flag} {chosen} ({summary})",
                      fix=f"drop {flag}, or pass {choice_flag} {'/'.join(used_by)}")


def effective_ratio(cfg: RunConfig) -> float | None:
    """The k this run compresses with: the given ``--ratio``, else the default where the policy (or an
    adapter's low-rank base) reads one; None where nothing reads a ratio."""
    from ..lowrank import DEFAULT_RATIO, RANK_ALLOCATORS
    from .structured_options import resolved_base

    if cfg.structure is not None:
        reads = resolved_base(cfg) == "lowrank"
    else:
        reads = RANK_ALLOCATORS.get(cfg.rank_policy).uses_ratio
    if not reads:
        return None
    return float(cfg.ratio) if cfg.ratio is not None else DEFAULT_RATIO


def ratio_choice(cfg: RunConfig) -> str | None:
    """The automatic choice to record when the run reads a ratio the user did not give."""
    k = effective_ratio(cfg)
    if cfg.ratio is not None or k is None or cfg.structure is not None:
        return None
    return (f"--ratio {k:g} (the default of --rank-policy {cfg.rank_policy}) because --ratio was not given; "
            "pass --ratio to choose")


def describe_ranks(cfg: RunConfig) -> str:
    """What decided the ranks, for the log line and ranks.md's title: ``k=2`` or the policy's own inputs."""
    k = effective_ratio(cfg)
    from ..lowrank import RANK_ALLOCATORS

    parts: list[str] = [f"k={k:g}"] if k is not None else []
    for option in sorted(RANK_ALLOCATORS.get(cfg.rank_policy).options - {"ratio"}):
        value: Any = getattr(cfg, option)
        if value is not None:
            parts.append(f"{option.replace('_', ' ')}={value}")
    return ", ".join(parts) or f"rank policy {cfg.rank_policy}"
