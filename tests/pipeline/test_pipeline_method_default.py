"""--method defaults to svd, and to the data-aware DATA_AWARE_METHOD when --calib-data is given (recorded)."""
import dataclasses

import torch

from pela_export.cli.main import build_parser
from pela_export.models.base import LoadedModel
from pela_export.pipeline.config import DATA_AWARE_METHOD, RunConfig
from pela_export.pipeline.context import prepare


def test_plain_default_is_svd_without_a_note():
    cfg = RunConfig()
    assert cfg.compress.method == "svd" and cfg.compress.method_choice is None


def test_calibration_data_selects_the_data_aware_method_and_says_why():
    cfg = RunConfig.of(calib_data="digits")
    assert cfg.compress.method == DATA_AWARE_METHOD != "svd"
    assert "--calib-data" in cfg.compress.method_choice and "--method svd" in cfg.compress.method_choice
    assert dataclasses.replace(cfg.compress, ratio=3.0).method == DATA_AWARE_METHOD, "survives replace()"


def test_a_method_the_user_gives_is_kept():
    cfg = RunConfig.of(calib_data="digits", method="svd")
    assert cfg.compress.method == "svd" and cfg.compress.method_choice is None


def test_structures_keep_svd():
    assert RunConfig.of(calib_data="digits", structure="mpo").compress.method == "svd"


def test_the_choice_is_recorded_in_the_run(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    loaded = LoadedModel(model, "tiny", "tests:tiny", (16,), "user")
    ctx = prepare(RunConfig.of(out=str(tmp_path), calib_data="digits"), loaded=loaded)
    assert any(DATA_AWARE_METHOD in c and "--calib-data" in c for c in ctx.choices)


def test_cli_leaves_method_unset_by_default():
    ns = build_parser().parse_args(["compress"])
    assert ns.method is None
