"""A representative slice of bench/arch_sweep.py through the real CLI: a CNN with depthwise and pointwise
convolutions, a ViT whose attention reads qkv.weight (BEiT), and a transformers encoder."""
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
import arch_sweep  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family,name,shape", [("mobilenetv3", "mobilenetv3_small_050", None),
                                               ("beit", "beitv2_base_patch16_224", "3,64,64")])
def test_timm_family_exports_compressed_and_verified(family: str, name: str, shape: str | None, tmp_path: Path) -> None:
    row = arch_sweep.run_one(family, name, f"sweep_models:{name}", shape, tmp_path / name, timeout=600)
    assert row["rc"] == 0, row.get("reason")
    assert row["original_verified"] and row["compressed_verified"] and row["layers_factorized"] > 0
    assert row["param_ratio"] < 1.0  # MobileNet-V3 small: 0.925, most parameters sit in grouped/stem/head layers
    layers = json.loads((tmp_path / name / "lowrank.json").read_text())["layers"]
    if family == "beit":  # F.linear(x, qkv.weight, qkv_bias): served by the factors, not left dense
        qkv = next(r for r in layers if r["name"] == "blocks.0.attn.qkv")
        assert qkv["status"] == "factorized" and "served by the two factors" in qkv["reason"]
    else:  # depthwise convolutions stay dense with the reason; 1x1 convolutions are factorized
        dw = [r for r in layers if "grouped convolution" in (r.get("reason") or "")]
        assert any(r["kind"] == "conv-channel" and r["status"] == "factorized" for r in layers)
        assert not dw  # grouped convolutions are never selected, so they are not in the table at all


def test_transformers_encoder(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    family, name, spec = next(m for m in arch_sweep.hf_models(tmp_path / "hf") if m[0] == "bert")
    row = arch_sweep.run_one(family, name, spec, None, tmp_path / "out", timeout=600)
    assert row["rc"] == 0 and row["compressed_verified"] and row["layers_factorized"] == 12, row.get("reason")


def test_reason_is_the_tools_one_line_error() -> None:
    err = "pela-export resolving model x\npela-export: error: model 'x' fails\n  fix: pass --input-shape\n"
    assert arch_sweep._reason(err) == "model 'x' fails   fix: pass --input-shape"
    assert arch_sweep._reason("Traceback ...\nValueError: boom\n").startswith("TRACEBACK: ValueError: boom")
