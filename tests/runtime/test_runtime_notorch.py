"""The device path never imports torch (nor onnx, rich, scikit-learn, matplotlib): a subprocess with them made unimportable loads, verifies, runs and
benchmarks a real bundle through the runtime, the API and the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(r"""
    import json, sys
    # `import torch` etc. now raise ImportError: the device needs numpy + onnxruntime (or TensorRT) only
    for mod in ("torch", "timm", "onnx", "onnxscript", "onnxsim", "onnxslim", "rich", "sklearn", "matplotlib",
                "torchvision", "transformers", "PIL"):
        sys.modules[mod] = None
    bundle, out = sys.argv[1], sys.argv[2]

    import pela_export.runtime as rt
    from pela_export import api
    from pela_export.cli.main import main
    from pela_export.export.compare import compare_outputs

    b = rt.Bundle.load(bundle)
    results = {}
    for name in b.variants():
        outputs = rt.run_variant(b, name)
        _, golden = b.golden(name)
        results[name] = compare_outputs(golden, outputs, b.tolerance(name)).ok
    assert api.verify_bundle(bundle) == []
    codes = {"verify": main(["verify", bundle]),
             "device-bench": main(["device-bench", bundle, "--out", out, "--runs", "30", "--warmup", "0"]),
             "run": main(["run"])}
    heavy = sorted(m for m in ("torch", "timm", "onnxsim", "rich") if sys.modules.get(m) is not None)
    print("RESULT " + json.dumps({"golden": results, "codes": codes, "heavy": heavy}))
""")


def test_runtime_runs_a_bundle_without_torch(digits_run: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PELA_EXPORT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(digits_run / "bundle.tar.gz"), str(tmp_path / "dev")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["heavy"] == [], result
    assert result["golden"] and all(result["golden"].values()), result
    # the device commands work; a workstation command explains what is missing instead of a traceback
    assert result["codes"] == {"verify": 0, "device-bench": 0, "run": 2}, done.stderr
    assert "only `pela-export verify`, `device-bench` and `device-latency` work" in done.stderr
    assert (tmp_path / "dev" / "device-report.json").is_file()


TEXT_SCRIPT = textwrap.dedent(r"""
    import json, sys
    for mod in ("torch", "timm", "onnx", "onnxscript", "onnxsim", "onnxslim", "rich", "sklearn", "matplotlib",
                "torchvision", "transformers", "PIL"):
        sys.modules[mod] = None
    bundle, out = sys.argv[1], sys.argv[2]

    import pela_export.runtime as rt
    from pela_export.cli.main import main
    from pela_export.export.compare import compare_outputs

    b = rt.Bundle.load(bundle)
    golden = {}
    for name in b.variants():
        inputs, expected = b.golden(name)
        outputs = rt.run_variant(b, name, inputs)  # a dict of named arrays in, every output out
        golden[name] = sorted(outputs) == sorted(expected) and compare_outputs(expected, outputs, b.tolerance(name)).ok
    text = b.run_text(["the market rose", "oil price fell"])  # raw strings, with the `tokenizers` package
    codes = {"verify": main(["verify", bundle]),
             "device-bench": main(["device-bench", bundle, "--out", out, "--runs", "30", "--warmup", "0",
                                   "--batch-sizes", "2", "--sequence-length", "16"])}
    heavy = sorted(m for m in ("torch", "timm", "onnx", "transformers", "rich") if sys.modules.get(m) is not None)
    print("RESULT " + json.dumps({"golden": golden, "codes": codes, "heavy": heavy,
                                  "text": {k: list(v.shape) for k, v in text.items()}}))
""")


def test_runtime_runs_a_text_bundle_without_torch(text_run_dir: Path, tmp_path: Path) -> None:
    """Three named inputs, two outputs, raw strings through the bundle's tokenizer: still numpy + onnxruntime
    (+ the optional `tokenizers`) only."""
    import pytest

    pytest.importorskip("tokenizers")
    env = {**os.environ, "PELA_EXPORT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", TEXT_SCRIPT, str(text_run_dir / "bundle.tar.gz"),
                           str(tmp_path / "dev")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    assert result["heavy"] == [], result
    assert result["golden"] and all(result["golden"].values()), result
    assert result["codes"] == {"verify": 0, "device-bench": 0}, done.stderr
    assert result["text"]["sentence_embedding"] == [2, 32] and result["text"]["last_hidden_state"][:1] == [2]
    report = json.loads((tmp_path / "dev" / "device-report.json").read_text())
    assert report["variants"]["compressed.fp32"]["latency"]["2"]["axes"] == {"batch": 2, "sequence": 16}
