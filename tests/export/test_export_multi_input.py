"""Multi-input export: the ONNX signature is exactly the model's, batch and sequence stay dynamic,
and outputs match PyTorch on padded batches of two lengths (both exporters)."""
import numpy as np
import onnx
import pytest
import torch

from pela_export.errors import ExportError, OptionError
from pela_export.export.onnx_export import export_example, export_onnx
from pela_export.export.runtime import ort_run, ort_session
from pela_export.export.verify import make_verification_inputs, verify_onnx
from pela_export.lowrank import factorize_model
from pela_export.models.io import BATCH, AxisRange, InputSpec, IOSpec, OutputSpec
from pela_export.models.sources import resolve_model

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
import tiny_hf_text as tiny  # noqa: E402  (tests/fixtures)


def _signature(path):
    proto = onnx.load(str(path))
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    return ({v.name: dims(v) for v in proto.graph.input}, {v.name: dims(v) for v in proto.graph.output})


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_bert_classifier_exports_every_input_with_named_dynamic_axes(tmp_path, exporter):
    m = resolve_model(f"hf:{tiny.bert_classifier(tmp_path / 'bert')}")
    res = export_onnx(m.model, export_example(m), tmp_path / "m.onnx", io=m.spec, exporter=exporter)
    inputs, outputs = _signature(res.path)
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(v == ["batch", "sequence"] for v in inputs.values())
    assert outputs == {"logits": ["batch", 3]} and res.inputs == inputs
    batches = make_verification_inputs(m)
    lengths = {b["input_ids"].shape[1] for b in batches}
    assert len(lengths) >= 2 and any(not b["attention_mask"].all() for b in batches), "padded, two lengths"
    vres = verify_onnx(m.model, res.path, batches, m.tolerance, m.spec.input_names, m.spec.output_names)
    assert vres.ok, vres.failures()


def test_compressed_text_model_ignores_tokens_at_masked_positions(tmp_path):
    m = resolve_model(f"hf:{tiny.distilbert_classifier(tmp_path / 'd')}")
    factorize_model(m.model, ratio=2)
    res = export_onnx(m.model, export_example(m), tmp_path / "c.onnx", io=m.spec)
    session = ort_session(res.path)
    feeds = m.spec.dummy(4, seed=5, sizes={"sequence": 21})
    assert not feeds["attention_mask"].all()
    changed = dict(feeds, input_ids=np.where(feeds["attention_mask"] == 1, feeds["input_ids"], 9))
    a, b = ort_run(session, feeds)["logits"], ort_run(session, changed)["logits"]
    np.testing.assert_allclose(a, b, atol=1e-5)
    with torch.no_grad():
        ref = m.model(*(torch.from_numpy(feeds[n]) for n in m.spec.input_names)).numpy()
    np.testing.assert_allclose(a, ref, atol=1e-4, rtol=1e-3)


def test_encoder_with_two_outputs_exports_and_verifies_both(tmp_path):
    m = resolve_model(f"hf:{tiny.sentence_encoder(tmp_path / 'enc')}", hidden_state=True)
    res = export_onnx(m.model, export_example(m), tmp_path / "e.onnx", io=m.spec)
    _, outputs = _signature(res.path)
    assert outputs == {"sentence_embedding": ["batch", 32], "last_hidden_state": ["batch", "sequence", 32]}
    vres = verify_onnx(m.model, res.path, make_verification_inputs(m), m.tolerance, m.spec.input_names,
                       m.spec.output_names)
    assert vres.ok and set(vres.outputs) == {"sentence_embedding", "last_hidden_state"}


class _IgnoresSecond(torch.nn.Module):
    def forward(self, x, unused):
        return x * 2


def test_an_input_the_model_ignores_is_kept_or_named(tmp_path):
    """dynamo keeps an unused input in the signature; the legacy exporter drops it, which we name."""
    io = IOSpec((InputSpec("x", "float32", (BATCH, 4)), InputSpec("unused", "float32", (BATCH, 4))),
                (OutputSpec("y"),), {BATCH: AxisRange(1, 1, 8)})
    examples = (torch.randn(2, 4), torch.randn(2, 4))
    res = export_onnx(_IgnoresSecond(), examples, tmp_path / "d.onnx", io=io)
    assert list(res.inputs) == ["x", "unused"]
    with pytest.raises(ExportError, match="declares \\['x', 'unused'\\]"):
        export_onnx(_IgnoresSecond(), examples, tmp_path / "l.onnx", io=io, exporter="legacy")
    assert not (tmp_path / "l.onnx").exists(), "no half-written artifact"


def test_example_count_must_match_the_declared_inputs():
    io = IOSpec((InputSpec("x", "float32", (BATCH, 4)), InputSpec("z", "float32", (BATCH, 4))),
                (OutputSpec("y"),), {BATCH: AxisRange(1, 1, 8)})
    with pytest.raises(OptionError, match="1 example inputs for 2 declared inputs"):
        export_onnx(_IgnoresSecond(), (torch.randn(2, 4),), "/tmp/pela-count.onnx", io=io)
