"""Inputs of data-aware compression, gathered from calibration data: activation
statistics (ASVD, whitening, risk scores), Fisher rows (FWSVD) and a loss probe
(sensitivity-based ranks). Only what the chosen method/policy needs is computed."""
from __future__ import annotations

from typing import Any

from ..lowrank.select import select_linears
from .calib import calibration_data
from .context import Context, log

CALIB_BATCH = 32


def data_aware_kwargs(ctx: Context) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Extra ``factorize_model`` kwargs for the configured method/policy, plus a record of the data used."""
    from ..lowrank import DECOMPOSITIONS, RANK_ALLOCATORS
    from ..lowrank.stats import collect_activation_stats, collect_fisher, with_fisher

    cfg, model = ctx.cfg, ctx.original()
    method, policy = DECOMPOSITIONS.get(str(cfg.compress.method)), RANK_ALLOCATORS.get(cfg.compress.rank_policy)
    kwargs: dict[str, Any] = {"energy": cfg.compress.energy, "param_budget": cfg.compress.param_budget, "alpha": cfg.compress.asvd_alpha,
                              "candidate_ranks": cfg.compress.candidate_ranks}
    need = set(method.collect)
    has_dataset = (cfg.data.calib_data or cfg.data.eval_data or ctx.loaded.default_dataset) is not None
    if has_dataset:
        need |= {"gram"}  # cheap on real data, and it gives every layer its risk score in the rank table
    sensitivity = "probe" in policy.needs or ("optional-probe" in policy.needs and cfg.data.calib_data is not None)
    if not need and not sensitivity and "calibration" not in policy.needs:
        return kwargs, None
    why = f"--method {cfg.compress.method}" if method.data_aware else f"--rank-policy {cfg.compress.rank_policy}" if sensitivity else "risk scores"
    probe = sensitivity_probe(ctx) if sensitivity else None
    labelled = method.fisher is not None or probe == "task"
    calib = calibration_data(ctx, cfg.data.calib_samples, labelled=labelled, why=why)
    names = [n for n, _ in select_linears(model, cfg.compress.include, cfg.compress.exclude)]
    if need:
        log(f"collecting calibration statistics ({', '.join(sorted(need))}) on {calib.source}")
        conv = cfg.compress.conv_decomposition
        stats = collect_activation_stats(model, names, calib.batches(CALIB_BATCH), need=need & {"abs_mean", "gram"},
                                         conv=conv)
        if method.fisher is not None:
            stats = with_fisher(stats, collect_fisher(model, names, calib.batches(CALIB_BATCH),
                                                      per_element=method.fisher == "elements", conv=conv))
        kwargs["stats"] = stats
    if sensitivity:
        from ..lowrank.probes import PROBES

        kwargs["loss_fn"] = PROBES.get(str(probe))(model, calib.batches(CALIB_BATCH))
    record = calib.describe()
    if sensitivity:
        record["sensitivity_loss"] = probe
    return kwargs, record


def sensitivity_probe(ctx: Context) -> str:
    """``--sensitivity-loss``, or by default ``kl`` on logits and ``mse`` on an embedding output (said so).

    A softmax over an embedding's features is no distribution, so KL of it measures nothing the user
    cares about; the embedding itself is what downstream code compares.
    """
    if ctx.cfg.compress.sensitivity_loss is not None:
        return ctx.cfg.compress.sensitivity_loss
    if ctx.loaded.spec.outputs[0].role == "embedding":
        ctx.note("--sensitivity-loss mse chosen because the model outputs an embedding, not logits "
                 "(pass --sensitivity-loss to choose)")
        return "mse"
    return "kl"
