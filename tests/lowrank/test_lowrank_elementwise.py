"""ewsvd: element-wise Fisher-weighted low rank by alternating weighted least squares from FWSVD."""
import pytest
import torch
from torch import nn

from pela_export.lowrank import DECOMPOSITIONS, CalibrationError, LayerStats, factorize_model, truncated_svd
from pela_export.lowrank.elementwise import (ElementwiseFactors, elementwise_lowrank, ewsvd_budget,
                                             weighted_objective)
from pela_export.lowrank.stats import collect_fisher, with_fisher

OUT, IN = 24, 16


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(OUT, IN, generator=g, dtype=torch.float64)
    fisher = torch.rand(OUT, IN, generator=g, dtype=torch.float64) ** 3 + 1e-3  # positive, far from rank 1
    return w, fisher


def _fwsvd_objective(w, fisher, rank):
    f = DECOMPOSITIONS.get("fwsvd")(w, rank, LayerStats(fisher_rows=fisher.sum(dim=1)))
    return weighted_objective(w, f.u, f.v, fisher)


def test_registered_with_its_statistic():
    assert "ewsvd" in DECOMPOSITIONS.names()
    spec = DECOMPOSITIONS.get("ewsvd")
    assert spec.requires == "fisher_elements" and spec.fisher == "elements" and spec.needs == "fisher"


@pytest.mark.parametrize("rank", [1, 3, 6, 10])
def test_objective_strictly_below_fwsvd(rank):
    w, fisher = _problem(rank)
    f = DECOMPOSITIONS.get("ewsvd")(w, rank, LayerStats(fisher_elements=fisher))
    assert isinstance(f, ElementwiseFactors)
    assert f.u.shape == (OUT, rank) and f.v.shape == (rank, IN)
    ew, fw = weighted_objective(w, f.u, f.v, fisher), _fwsvd_objective(w, fisher, rank)
    assert f.fwsvd_objective == pytest.approx(fw, rel=1e-9)  # the start is FWSVD's closed form
    assert f.objective == pytest.approx(ew, rel=1e-9)
    assert ew < 0.95 * fw  # a non-rank-1 F: ALS gains clearly over the row-weighted solution
    assert f.history == sorted(f.history, reverse=True)  # exact half-steps never increase the objective


def test_never_worse_than_fwsvd_for_row_constant_weights():
    """F_ij = a_i is FWSVD's own case (its solution is optimal): ALS must keep it, not drift away."""
    w, fisher = _problem(7)
    rows = fisher[:, :1].expand(OUT, IN).contiguous()
    f = elementwise_lowrank(w, 4, rows, max_iters=5)
    assert f.objective <= f.fwsvd_objective * (1 + 1e-9)
    assert weighted_objective(w, f.u, f.v, rows) == pytest.approx(_fwsvd_objective(w, rows, 4), rel=1e-6)


@pytest.mark.parametrize("rank", [1, 5, 12])
def test_uniform_weights_give_the_svd_solution(rank):
    w, _ = _problem(2)
    ones = torch.ones_like(w)
    f = DECOMPOSITIONS.get("ewsvd")(w, rank, LayerStats(fisher_elements=ones))
    s = truncated_svd(w, rank)
    assert weighted_objective(w, f.u, f.v, ones) == pytest.approx(weighted_objective(w, s.u, s.v, ones), rel=1e-6)
    assert torch.allclose(f.u @ f.v, s.u @ s.v, atol=1e-6)


def test_exact_at_full_rank():
    w, fisher = _problem(3)
    f = DECOMPOSITIONS.get("ewsvd")(w, IN, LayerStats(fisher_elements=fisher))
    assert f.u.shape == (OUT, IN) and f.v.shape == (IN, IN)
    assert float(torch.linalg.norm(w - f.u @ f.v) / torch.linalg.norm(w)) < 1e-8


def test_factors_are_balanced_and_dtype_kept():
    w, fisher = _problem(4)
    f = DECOMPOSITIONS.get("ewsvd")(w.float(), 5, LayerStats(fisher_elements=fisher))
    assert f.u.dtype == torch.float32 and f.v.dtype == torch.float32
    u, v = f.u.double(), f.v.double()
    # √Σ split: UᵀU = VVᵀ = diag(σ) of the product
    assert torch.allclose(u.T @ u, v @ v.T, atol=1e-4)
    assert torch.allclose(u.T @ u, torch.diag((u.T @ u).diagonal()), atol=1e-4)


def test_scale_of_fisher_does_not_change_the_factors():
    w, fisher = _problem(5)
    a = elementwise_lowrank(w, 4, fisher, max_iters=4, rel_tol=0)
    b = elementwise_lowrank(w, 4, fisher * 1e-9, max_iters=4, rel_tol=0)
    assert torch.allclose(a.u @ a.v, b.u @ b.v, atol=1e-8)
    assert b.objective == pytest.approx(a.objective * 1e-9, rel=1e-8)


def test_iteration_budget_is_respected():
    w, fisher = _problem(6)
    for iters in (0, 1, 3):
        f = elementwise_lowrank(w, 4, fisher, max_iters=iters, rel_tol=0.0)
        assert f.iterations == iters and len(f.history) == iters
    zero = elementwise_lowrank(w, 4, fisher, max_iters=0)
    assert zero.objective == pytest.approx(zero.fwsvd_objective)  # no iterations: FWSVD's solution
    loose = elementwise_lowrank(w, 4, fisher, max_iters=100, rel_tol=0.5)
    assert loose.iterations < 100 and loose.converged
    with ewsvd_budget(max_iters=2, rel_tol=0.0):
        assert DECOMPOSITIONS.get("ewsvd")(w, 4, LayerStats(fisher_elements=fisher)).iterations == 2
    assert DECOMPOSITIONS.get("ewsvd")(w, 4, LayerStats(fisher_elements=fisher), max_iters=1).iterations == 1


def test_more_iterations_do_not_hurt():
    w, fisher = _problem(8)
    objs = [elementwise_lowrank(w, 5, fisher, max_iters=n, rel_tol=0).objective for n in (0, 1, 4, 12)]
    assert objs == sorted(objs, reverse=True)


@pytest.mark.parametrize("stats", [None, LayerStats(), LayerStats(fisher_rows=torch.ones(OUT, dtype=torch.float64))])
def test_missing_statistic_is_a_clear_error(stats):
    w, _ = _problem()
    with pytest.raises(CalibrationError) as err:
        DECOMPOSITIONS.get("ewsvd")(w, 3, stats)
    text = str(err.value) + " " + str(getattr(err.value, "fix", ""))
    assert "--method ewsvd" in text and "fisher_elements" in text and "--calib-data" in text


@pytest.mark.parametrize("bad,needle", [
    (torch.ones(IN, OUT, dtype=torch.float64), "fisher_elements is (16, 24)"),
    (-torch.ones(OUT, IN, dtype=torch.float64), "negative"),
])
def test_wrong_statistic_is_a_clear_error(bad, needle):
    w, _ = _problem()
    with pytest.raises(CalibrationError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        DECOMPOSITIONS.get("ewsvd")(w, 3, LayerStats(fisher_elements=bad))


def test_bad_budget_is_a_clear_error():
    w, fisher = _problem()
    with pytest.raises(CalibrationError, match="max_iters"):
        elementwise_lowrank(w, 3, fisher, max_iters=-1)
    with pytest.raises(CalibrationError, match="rel_tol"):
        elementwise_lowrank(w, 3, fisher, rel_tol=float("nan"))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 12))
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        return self.head(self.mlp(x))


def test_collected_per_element_fisher_through_factorize():
    torch.manual_seed(0)
    model = _Tiny()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 12, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(6)]
    names = ["mlp.0", "mlp.2"]
    rows = collect_fisher(model, names, batches)
    elements = collect_fisher(model, names, batches, per_element=True)
    assert elements["mlp.0"].shape == (32, 12) and elements["mlp.2"].shape == (12, 32)
    assert torch.allclose(elements["mlp.0"].sum(dim=1), rows["mlp.0"])  # row Fisher = row sums
    stats = with_fisher({}, elements)
    assert torch.allclose(stats["mlp.0"].fisher_rows, rows["mlp.0"])
    res_ew = factorize_model(model, ratio=2, method="ewsvd", stats=stats)
    res_fw = factorize_model(model, ratio=2, method="fwsvd", stats=stats)
    assert [r.name for r in res_ew.factorized] == names
    for name in names:
        w = model.get_submodule(name).weight
        ew, fw = res_ew.model.get_submodule(name), res_fw.model.get_submodule(name)
        f = stats[name].fisher_elements
        assert weighted_objective(w, ew.second.weight, ew.first.weight, f) <= \
            weighted_objective(w, fw.second.weight, fw.first.weight, f) * (1 + 1e-6)


def test_factorize_without_statistics_names_the_flag():
    with pytest.raises(CalibrationError) as err:
        factorize_model(_Tiny(), ratio=2, method="ewsvd")
    assert "--method ewsvd" in str(err.value)


def test_unlabelled_batches_for_per_element_fisher_are_a_clear_error():
    with pytest.raises(CalibrationError, match="ewsvd needs labelled"):
        collect_fisher(_Tiny(), ["mlp.0"], [(torch.randn(4, 12), None)], per_element=True)


def test_cli_method_choices_come_from_the_registry():
    from pela_export.cli.main import build_parser  # noqa: PLC0415

    assert build_parser().parse_args(["compress", "--method", "ewsvd"]).method == "ewsvd"
