"""The sensitivity probe defaults to KL on logits and MSE on an embedding output, and says so."""
import torch

from pela_export.models.base import LoadedModel
from pela_export.models.io import BATCH, AxisRange, InputSpec, IOSpec, OutputSpec
from pela_export.pipeline.config import RunConfig
from pela_export.pipeline.context import prepare
from pela_export.pipeline.dataaware import sensitivity_probe


def _loaded(role: str) -> LoadedModel:
    io = IOSpec((InputSpec("input", "float32", (BATCH, 16)),), (OutputSpec("y", role=role),), {BATCH: AxisRange(1, 1, 8)})
    return LoadedModel(torch.nn.Linear(16, 4).eval(), "tiny", "tests:tiny", (16,), "user", io=io)


def test_logits_default_to_kl(tmp_path):
    ctx = prepare(RunConfig.of(out=str(tmp_path), rank_policy="sensitivity"), loaded=_loaded("logits"))
    assert sensitivity_probe(ctx) == "kl" and not any("sensitivity-loss" in c for c in ctx.choices)


def test_embeddings_default_to_mse_and_the_choice_is_recorded(tmp_path):
    ctx = prepare(RunConfig.of(out=str(tmp_path), rank_policy="sensitivity"), loaded=_loaded("embedding"))
    assert sensitivity_probe(ctx) == "mse"
    assert any("--sensitivity-loss mse" in c and "embedding" in c for c in ctx.choices)


def test_a_given_probe_is_kept(tmp_path):
    cfg = RunConfig.of(out=str(tmp_path), rank_policy="sensitivity", sensitivity_loss="kl")
    assert sensitivity_probe(prepare(cfg, loaded=_loaded("embedding"))) == "kl"
