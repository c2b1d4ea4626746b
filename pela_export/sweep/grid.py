"""The points of a sweep: ratios/rank policies × methods × precisions, plus the original model.

Valid names come from the registries (``RANK_ALLOCATORS``, ``DECOMPOSITIONS``, the precision specs),
so a policy or method registered later is swept without changes here. A policy is swept over the
ratios when it reads ``--ratio``, over parameter budgets 1/k when it reads ``--param-budget`` instead,
over ``--latency-budgets`` when it reads ``--latency-budget``; a policy that reads none of these needs
options the sweep has no grid for and is skipped with that reason.
Torch-free: the registries are read, no model is touched.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import OptionError

#: Defaults: bounded so the digits default sweeps in about a minute on 2 CPU cores. FP32 only because
#: ONNX Runtime CPU is what measures latency here: it runs FP32 and INT8 (Q/DQ) kernels, while FP16 graphs
#: run slowly (mostly cast back to FP32) on CPU, so their CPU latency says nothing about a GPU.
DEFAULT_RATIOS: tuple[float, ...] = (2.0, 3.0, 4.0)
DEFAULT_POLICIES: tuple[str, ...] = ("ratio",)
DEFAULT_PRECISIONS: tuple[str, ...] = ("fp32",)
#: Fractions of the dense model's measured latency a latency-reading policy is swept at.
DEFAULT_LATENCY_BUDGETS: tuple[float, ...] = (0.5, 0.7, 0.9)
#: The option each sweep axis sets, and the short prefix of a point id that names it.
AXIS_PREFIX: dict[str, str] = {"ratio": "k", "param_budget": "b", "latency_budget": "L"}
ORIGINAL = "original"
COMPRESSED = "compressed"


@dataclass(frozen=True)
class SweepPoint:
    """One configuration to measure. ``model`` is ``original`` (uncompressed, one per precision) or
    ``compressed``; ``options`` are the compression options of the run (``ratio`` or ``param_budget``)."""

    model: str
    precision: str
    policy: str | None = None
    method: str | None = None
    options: tuple[tuple[str, float], ...] = ()
    trained: bool = False  # PELA-trained after factorizing (``--train-top``)

    @property
    def id(self) -> str:
        """Directory name under ``OUT/points/``: readable and unique within a sweep."""
        if self.model == ORIGINAL:
            return f"{ORIGINAL}-{self.precision}"
        opts = "-".join(f"{AXIS_PREFIX.get(k, k)}{v:g}" for k, v in self.options)
        return f"{opts}-{self.policy}-{self.method}-{self.precision}" + ("-trained" if self.trained else "")

    @property
    def ratio(self) -> float | None:
        return dict(self.options).get("ratio")

    def compress_kwargs(self) -> dict[str, Any]:
        """``RunConfig.of`` keywords of this point's compression (empty for the original)."""
        if self.model == ORIGINAL:
            return {}
        return {"rank_policy": self.policy, "method": self.method, **dict(self.options)}

    def flags(self) -> list[str]:
        """The ``pela-export run`` flags that reproduce this point."""
        from ..options import flag_of
        from ..pipeline.compress_options import CompressOptions

        out: list[str] = []
        for key, value in self.options:
            out += [flag_of(CompressOptions, key), f"{value:g}"]
        if self.model != ORIGINAL:
            out += ["--rank-policy", str(self.policy), "--method", str(self.method)]
        return out + ["--precision", self.precision] + (["--train"] if self.trained else [])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["options"] = dict(self.options)
        d["id"] = self.id
        if not self.trained:  # point.json files written before --train-top stay reusable
            d.pop("trained")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepPoint:
        return cls(model=d["model"], precision=d["precision"], policy=d.get("policy"), method=d.get("method"),
                   options=tuple((str(k), float(v)) for k, v in (d.get("options") or {}).items()),
                   trained=bool(d.get("trained", False)))


@dataclass(frozen=True)
class Grid:
    """What the user asked to sweep (None: the defaults)."""

    ratios: tuple[float, ...] = DEFAULT_RATIOS
    policies: tuple[str, ...] = DEFAULT_POLICIES
    methods: tuple[str, ...] | None = None  # None: the run's default method (svd, or whiten with --calib-data)
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    latency_budgets: tuple[float, ...] = DEFAULT_LATENCY_BUDGETS


@dataclass
class Plan:
    """The expanded grid: points in run order, skipped (id or policy, reason) and choices made for the user."""

    points: list[SweepPoint]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)


def parse_floats(text: str) -> tuple[float, ...]:
    """``"2,3,4"`` → (2.0, 3.0, 4.0); the argparse type of ``--ratios``."""
    import argparse

    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _check_names(given: Sequence[str], known: Sequence[str], what: str, flag: str) -> tuple[str, ...]:
    unknown = [n for n in given if n not in known]
    if unknown:
        raise OptionError(f"unknown {what} {', '.join(map(repr, unknown))} in {flag}",
                          fix=f"pass {flag} with a comma-separated list from: {', '.join(known)}")
    if not given:
        raise OptionError(f"{flag} is empty", fix=f"pass {flag} with at least one of: {', '.join(known)}")
    return tuple(dict.fromkeys(given))


def check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    """Every k > 1 (k ≤ 1 asks for at least the dense parameter count), duplicates dropped, order kept."""
    bad = [r for r in ratios if not r > 1]
    if bad or not ratios:
        raise OptionError(f"--ratios needs values above 1, got {', '.join(f'{r:g}' for r in ratios) or 'none'}",
                          fix="pass --ratios with values above 1, e.g. --ratios 2,3,4")
    return tuple(dict.fromkeys(float(r) for r in ratios))


def check_latency_budgets(budgets: Sequence[float]) -> tuple[float, ...]:
    """Every fraction in (0, 1], duplicates dropped, order kept (the values --latency-budget accepts)."""
    bad = [b for b in budgets if not 0 < b <= 1]
    if bad or not budgets:
        raise OptionError(f"--latency-budgets needs fractions in (0, 1], got "
                          f"{', '.join(f'{b:g}' for b in budgets) or 'none'}",
                          fix="pass --latency-budgets with fractions of the dense latency, e.g. 0.5,0.7,0.9")
    return tuple(dict.fromkeys(float(b) for b in budgets))


def policy_axis(name: str) -> tuple[str | None, str | None]:
    """(the option the grid sets for policy ``name``: ``ratio``, ``param_budget`` or ``latency_budget``; or
    None and why not)."""
    from ..lowrank import RANK_ALLOCATORS
    from ..options import flag_of
    from ..pipeline.compress_options import CompressOptions

    spec = RANK_ALLOCATORS.get(name)
    if spec.uses_ratio:
        return "ratio", None
    if "param_budget" in spec.options:
        return "param_budget", None
    if "latency_budget" in spec.options:
        return "latency_budget", None

    def flag(option: str) -> str:
        try:
            return flag_of(CompressOptions, option)
        except KeyError:
            return "--" + option.replace("_", "-")

    reads = ", ".join(flag(o) for o in sorted(spec.options)) or "no option"
    return None, (f"--rank-policy {name} reads {reads}, which the sweep has no grid for (it varies --ratio, "
                  f"--param-budget as 1/k, or --latency-budget over --latency-budgets); measure it with `pela-export run --rank-policy {name} {reads.split(',')[0]} "
                  f"VALUE`")


def default_method(calib_data: str | None) -> str:
    """The method a run picks when --method is not given (the same rule as ``CompressOptions.choose_method``)."""
    from ..pipeline.compress_options import DATA_AWARE_METHOD

    return DATA_AWARE_METHOD if calib_data is not None else "svd"


def expand(grid: Grid, calib_data: str | None = None) -> Plan:
    """The points of ``grid`` in run order, each name checked against its registry.

    Per precision, the original is placed right after the first compressed point (it is measured from
    that point's export, see :mod:`.measure`), so a budget stop still leaves the baseline measured.
    """
    from ..lowrank import DECOMPOSITIONS, RANK_ALLOCATORS
    from ..precision.spec import precision_names

    ratios = check_ratios(grid.ratios)
    budgets = check_latency_budgets(grid.latency_budgets)
    policies = _check_names(grid.policies, RANK_ALLOCATORS.names(), "rank policy", "--policies")
    precisions = _check_names(grid.precisions, precision_names(), "precision", "--precisions")
    plan = Plan(points=[])
    if grid.methods is None:
        methods: tuple[str, ...] = (default_method(calib_data),)
        plan.choices.append(f"--methods {methods[0]} (the run's default method"
                            + (", because --calib-data was given)" if calib_data else ")")
                            + "; pass --methods to sweep others")
    else:
        methods = _check_names(grid.methods, DECOMPOSITIONS.names(), "decomposition method", "--methods")
    axes: dict[str, str] = {}
    for policy in policies:
        axis, why = policy_axis(policy)
        if axis is None:
            plan.skipped.append((f"policy {policy}", str(why)))
        else:
            axes[policy] = axis
            if axis == "param_budget":
                plan.choices.append(f"--rank-policy {policy} reads no --ratio: swept at --param-budget 1/k "
                                    f"({', '.join(f'{1 / k:.3g}' for k in ratios)}), the parameters of ratio k")
    if not axes:
        raise OptionError("no rank policy in --policies can be swept:\n" + "\n".join(f"  {why}" for _, why in plan.skipped),
                          fix=f"pass --policies with a policy that reads --ratio or --param-budget, e.g. "
                              f"--policies {DEFAULT_POLICIES[0]}")
    def values(axis: str) -> list[float]:
        if axis == "latency_budget":
            return list(budgets)
        return [k if axis == "ratio" else round(1.0 / k, 6) for k in ratios]

    for precision in precisions:
        group = [SweepPoint(COMPRESSED, precision, policy, method, ((axis, v),))
                 for policy, axis in axes.items() for method in methods for v in values(axis)]
        plan.points += [group[0], SweepPoint(ORIGINAL, precision), *group[1:]]
    return plan
