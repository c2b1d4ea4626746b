"""``pela-export device-latency``: a bundle's layer shapes timed on the device (ONNX Runtime here; TensorRT contract-
tested with fake modules), written as a table the workstation's ``--latency-table`` reads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fake_tensorrt import make_fake_tensorrt

from pela_export.errors import ArtifactError, OptionError
from pela_export.runtime.device_latency import device_latency, model_batch
from pela_export.runtime.latency_table import LatencyTable, LayerOp, RuntimeEnv
from pela_export.runtime.sums import write_sums
from pela_export.tensorrt import GpuInfo, HostBackend

HOST = RuntimeEnv("onnxruntime-cpu", "1.0", "workstation-cpu", 2)
OPS = [LayerOp("linear", 32, 64, True, rows=17), LayerOp("conv", 4, 8, False, input_shape=(1, 4, 9, 9), kernel=(3, 3),
                                                          padding=(1, 1))]
MODEL_KEY = "default:digits|input=[1, 16, 16]|batch=2|opset=17|dynamo|dynamic"
ORIN = GpuInfo("Orin (nvgpu)", "8.7", "test")


def _with_table(bundle_dir: Path) -> Path:
    """The bundle as a --rank-policy latency run packages it: the workstation table inside, named in deploy.json."""
    table = LatencyTable()
    table.ensure(OPS, HOST, lambda op, rank, env: 1.0 if rank is None else 0.1 * rank, batch=1,
                 grids={OPS[0].key: [4, 8, 16], OPS[1].key: [2, 5]})
    table.set_model_ms(HOST, MODEL_KEY, 3.0)
    table.save(bundle_dir / "latency_table.json")
    deploy = json.loads((bundle_dir / "deploy.json").read_text())
    deploy["latency_table"] = "latency_table.json"
    (bundle_dir / "deploy.json").write_text(json.dumps(deploy))
    write_sums(bundle_dir)
    return bundle_dir


def test_onnxruntime_table_has_the_bundles_shapes_ranks_and_model(bundle_copy: Path, tmp_path: Path) -> None:
    path = device_latency(_with_table(bundle_copy), tmp_path / "dev", backend="onnxruntime", runs=30, warmup=0,
                          threads=1, log_fn=lambda _m: None)
    table = LatencyTable.load(path)
    (env,) = table.envs()
    assert env.runtime == "onnxruntime-cpu" and env.threads == 1 and env != HOST
    for op, ranks in zip(OPS, ([4, 8, 16], [2, 5])):
        entry = table.get(env, op)
        assert entry is not None and sorted(entry.ranks) == ranks and entry.dense_ms > 0
        assert all(ms > 0 for ms in entry.ranks.values())
    assert list(table.models_of(env)) == [MODEL_KEY] and table.model_ms(env, MODEL_KEY) > 0
    md = (tmp_path / "dev" / "latency_table.md").read_text()
    assert OPS[0].key in md and "Whole original model" in md


def test_tensorrt_builds_one_engine_per_layer_graph_at_the_precision(bundle_copy: Path, tmp_path: Path) -> None:
    trt = make_fake_tensorrt("10.3.0")
    path = device_latency(_with_table(bundle_copy), tmp_path / "dev", backend="tensorrt", trt=trt,
                          device_backend=HostBackend(ORIN), gpu=ORIN, engine_cache=tmp_path / "engines", runs=30,
                          warmup=0, log_fn=lambda _m: None)
    table = LatencyTable.load(path)
    (env,) = table.envs()
    assert (env.runtime, env.version, env.device, env.threads) == ("tensorrt-fp16", "10.3.0", "Orin (nvgpu)", 0)
    graphs = (1 + 3) + (1 + 2)  # dense + each rank, per shape
    assert len(trt._fake.plans) == graphs + 1  # and the original model's fp16 variant
    assert sorted(table.get(env, OPS[0]).ranks) == [4, 8, 16] and table.model_ms(env, MODEL_KEY) is not None
    fp32 = LatencyTable.load(device_latency(bundle_copy, tmp_path / "dev32", backend="tensorrt", precision="fp32",
                                            trt=trt, device_backend=HostBackend(ORIN), gpu=ORIN,
                                            engine_cache=tmp_path / "engines", runs=30, warmup=0,
                                            log_fn=lambda _m: None))
    assert fp32.envs()[0].runtime == "tensorrt-fp32"


def test_a_bundle_without_a_table_and_bad_options_are_errors(bundle_copy: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ArtifactError, match="carries no latency table") as err:
        device_latency(bundle_copy, tmp_path / "dev", backend="onnxruntime", runs=30)
    assert "--rank-policy latency" in str(err.value.fix)
    with pytest.raises(OptionError, match="ONNX Runtime tables are fp32"):
        device_latency(_with_table(bundle_copy), tmp_path / "dev", backend="onnxruntime", precision="fp16", runs=30)
    deploy = json.loads((bundle_copy / "deploy.json").read_text())
    del deploy["variants"]["original.fp16"]  # a bundle packaged without fp16: said before any layer is timed
    (bundle_copy / "deploy.json").write_text(json.dumps(deploy))
    write_sums(bundle_copy)
    trt = make_fake_tensorrt("10.3.0")
    with pytest.raises(OptionError, match="no original.fp16 variant") as err:
        device_latency(bundle_copy, tmp_path / "dev", backend="tensorrt", trt=trt, device_backend=HostBackend(ORIN),
                       gpu=ORIN, runs=30)
    assert "--precision fp32" in str(err.value.fix) and not trt._fake.plans
    with pytest.raises(OptionError, match="--runs"):
        device_latency(bundle_copy, tmp_path / "dev", backend="onnxruntime", runs=3)
    assert not (tmp_path / "dev" / "latency_table.json").exists()
    from pela_export.cli.main import main

    assert main(["device-latency", str(tmp_path / "missing.tar.gz")]) == 2
    assert "bundle not found" in capsys.readouterr().err


def test_model_batch_reads_the_workstation_key() -> None:
    assert model_batch(MODEL_KEY) == 2
    with pytest.raises(ArtifactError, match="names no batch"):
        model_batch("something|else")


SCRIPT = textwrap.dedent(r"""
    import sys
    for mod in ("torch", "timm", "onnxsim", "rich", "sklearn", "matplotlib", "torchvision", "transformers"):
        sys.modules[mod] = None
    if sys.argv[3] == "no-onnx":
        sys.modules["onnx"] = None
    from pela_export.cli.main import main
    code = main(["device-latency", sys.argv[1], "--out", sys.argv[2], "--backend", "onnxruntime", "--runs", "30",
                 "--warmup", "0"])
    print("RESULT", code, sys.modules.get("torch") is not None)
""")


@pytest.mark.parametrize("onnx", ["with-onnx", "no-onnx"])
def test_cli_runs_without_torch_and_names_the_onnx_install(bundle_copy: Path, tmp_path: Path, onnx: str) -> None:
    env = {**os.environ, "PELA_EXPORT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(_with_table(bundle_copy)), str(tmp_path / "dev"), onnx],
                          capture_output=True, text=True, env=env, timeout=300)
    result = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")).split()
    assert result[2] == "False", done.stderr  # torch never imported
    if onnx == "with-onnx":
        assert result[1] == "0", done.stderr
        assert (tmp_path / "dev" / "latency_table.json").is_file()
    else:
        assert result[1] == "2" and "pip install onnx" in done.stderr
        assert not (tmp_path / "dev" / "latency_table.json").exists()


def test_an_onnxruntime_cuda_table_is_labelled_with_the_gpu(bundle_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pela_export.export.runtime import _onnxruntime
    from pela_export.runtime import device as device_mod
    from pela_export.runtime.backends import BackendChoice
    from pela_export.runtime.bundle import Bundle
    from pela_export.runtime.device_latency import _runtime

    monkeypatch.setattr(_onnxruntime(), "get_available_providers", lambda: ["CUDAExecutionProvider",
                                                                          "CPUExecutionProvider"])
    monkeypatch.setattr(device_mod, "local_gpu", lambda: ORIN)
    env, _ = _runtime(BackendChoice("onnxruntime"), None, None, {}, Bundle.load(bundle_copy))
    assert (env.runtime, env.device) == ("onnxruntime-cuda", "Orin (nvgpu)")
