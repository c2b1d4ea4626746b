"""The sweep's own options (they own their flags, as every option group) and its CLI argument groups."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..errors import OptionError
from ..options import OptionGroup, option
from .grid import (DEFAULT_LATENCY_BUDGETS, DEFAULT_POLICIES, DEFAULT_PRECISIONS, DEFAULT_RATIOS, Grid, parse_floats,
                   parse_names)
from .retime import DEFAULT_ROUNDS

#: Minutes after which no new point is started (measured points are kept and reused on the next run).
DEFAULT_BUDGET_MINUTES = 60.0


@dataclass
class SweepOptions(OptionGroup):
    """What the sweep varies and how long it may take."""

    TITLE = "sweep grid"
    ratios: tuple[float, ...] = option(DEFAULT_RATIOS, flag="--ratios", type=parse_floats, metavar="LIST",
                                       help="PELA ratios k > 1 (default 2,3,4); a policy that reads "
                                            "--param-budget instead is swept at budgets 1/k")
    policies: tuple[str, ...] = option(DEFAULT_POLICIES, flag="--policies", type=parse_names, metavar="LIST",
                                       help="rank policies, any --rank-policy choice (default ratio); a policy "
                                            "the sweep cannot give its options is skipped with the reason")
    methods: tuple[str, ...] | None = option(None, flag="--methods", type=parse_names, metavar="LIST",
                                             help="decompositions, any --method choice (default: the run's "
                                                  "default, svd, or whiten with --calib-data)")
    precisions: tuple[str, ...] = option(DEFAULT_PRECISIONS, flag="--precisions", type=parse_names, metavar="LIST",
                                         help="precisions, any --precision choice or fp32 (default fp32). "
                                              "Latency is ONNX Runtime CPU here: fp32 and int8 have CPU kernels, "
                                              "fp16 runs slowly on CPU and says nothing about a GPU")
    latency_budgets: tuple[float, ...] = option(DEFAULT_LATENCY_BUDGETS, flag="--latency-budgets", type=parse_floats,
                                                metavar="LIST", help="fractions of the dense model's measured "
                                                "latency a policy reading --latency-budget (latency) is swept at "
                                                "(default 0.5,0.7,0.9)")
    budget_minutes: float = option(DEFAULT_BUDGET_MINUTES, flag="--budget-minutes", type=float, metavar="MIN",
                                   help="start no new point after this many minutes (default 60); the points "
                                        "not run are listed, and a rerun into the same --out resumes")
    timing_rounds: int = option(DEFAULT_ROUNDS, flag="--timing-rounds", type=int, metavar="N",
                                help="after the points are measured, time them all again in N rounds with every "
                                     "point called in turn, so the front compares timings of the same moment "
                                     "(default 3; 0 keeps each point's own timing)")
    train_top: int = option(0, flag="--train-top", type=int, metavar="N",
                            help="PELA-train the N fastest compressed front points that lose accuracy, as new "
                                 "points (with the training flags below; default 0: none)")
    calib_data: str | None = option(None, flag="--calib-data",
                                    help="calibration data for data-aware methods, sensitivity ranks and INT8 "
                                         "(default: the model's dataset, else random)")
    calib_samples: int = option(256, flag="--calib-samples", type=int,
                                help="calibration samples (default 256, seeded selection)")

    def grid(self) -> Grid:
        if not self.budget_minutes > 0:
            raise OptionError(f"--budget-minutes must be > 0, got {self.budget_minutes:g}",
                              fix="pass --budget-minutes with a positive number of minutes, e.g. 30")
        return Grid(ratios=tuple(self.ratios), policies=tuple(self.policies),
                    methods=None if self.methods is None else tuple(self.methods), precisions=tuple(self.precisions),
                    latency_budgets=tuple(self.latency_budgets))


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    """The sweep group, and the benchmark flags each point is measured with (batch 1 only: no --batch-sizes)."""
    from ..pipeline.groups import BenchOptions

    from ..cli.args import add_train_args

    SweepOptions.add_arguments(p)
    for action in p._actions:
        if action.dest == "out":
            action.help = ("output directory: points/<point>/ per point, sweep.json, sweep.md, sweep.png "
                           "(default ./pela-out/<model-name>-sweep; a rerun into it resumes)")
    g = BenchOptions.add_arguments(p, skip=["batch_sizes"], title="measurement of each point (ONNX Runtime CPU, batch 1)")
    g.add_argument("--data", dest="eval_data", metavar="DATA",
                   help="accuracy dataset, any `pela-export bench --data` spelling (default: the model's own; "
                        "without labels the score is agreement/cosine with the original)")
    g.add_argument("--eval-samples", type=int, default=2000, help="test samples for the score (0 = all; default 2000)")
    add_train_args(p, sweep=True)
