"""The device validates a bundle without the precision registry: every variant carries its own tolerance
and ONNX Runtime level, so a precision this pela-export has no spec for still verifies; malformed names fail."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pela_export.precision.spec import find_spec
from pela_export.runtime.report_md import render_device_markdown  # noqa: F401  (imports without the registry)
from pela_export.runtime.schema import deploy_problems, validate_deploy

FIXTURE = Path(__file__).parents[1] / "fixtures" / "deploy_v1_digits.json"


def _renamed(precision: str) -> dict:
    d = json.loads(FIXTURE.read_text())
    v = copy.deepcopy(d["variants"].pop("compressed.fp16"))
    v["precision"] = precision
    d["variants"][f"compressed.{precision}"] = v
    return d


def test_todays_fixture_still_validates() -> None:
    assert deploy_problems(json.loads(FIXTURE.read_text())) == []


def test_a_precision_without_a_spec_here_is_accepted_with_its_recorded_tolerance() -> None:
    assert find_spec("bf16") is None
    d = validate_deploy(_renamed("bf16"))
    recorded = json.loads(FIXTURE.read_text())["variants"]["compressed.fp16"]["tolerance"]
    assert d["variants"]["compressed.bf16"]["tolerance"] == recorded


@pytest.mark.parametrize("bad", ["FP16", "fp.16", "", "16fp"])
def test_malformed_precision_names_are_named(bad: str) -> None:
    d = _renamed("bf16")
    d["variants"]["compressed.bf16"]["precision"] = bad
    problems = deploy_problems(d)
    assert any("compressed.bf16.precision" in p and "precision name" in p for p in problems), problems
