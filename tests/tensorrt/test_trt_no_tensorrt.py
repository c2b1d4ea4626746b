"""Without TensorRT: the package imports, entry points raise DependencyError with the fix,
and every TensorRT name the adapter spells out exists in at least one manifest."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from fake_tensorrt import VERSIONS, load_manifest

import pela_export.tensorrt as pkg
from pela_export.errors import DependencyError
from pela_export.tensorrt import BuildOptions, HostBackend, TrtRunner, build_engine


def test_import_needs_neither_tensorrt_nor_torch() -> None:
    code = ("import sys; sys.modules['tensorrt'] = None\n"
            "import pela_export.tensorrt as t\n"
            "assert 'torch' not in sys.modules and 'onnx' not in sys.modules, sorted(sys.modules)\n"
            "print(t.features_for_version('10.3').weak_typing)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_build_without_tensorrt_raises_dependency_error(monkeypatch: pytest.MonkeyPatch, models: dict[str, Path],
                                                       tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(DependencyError) as exc:
        build_engine(models["fp32"], tmp_path / "m.plan", BuildOptions())
    assert "TensorRT Python bindings are not installed" in str(exc.value)
    assert "pip install tensorrt" in exc.value.fix and "JetPack" in exc.value.fix and "pela-export build" in exc.value.fix
    assert not (tmp_path / "m.plan").exists()
    plan = tmp_path / "x.plan"
    plan.write_bytes(b"x")
    with pytest.raises(DependencyError, match="not installed"):
        TrtRunner(plan, backend=HostBackend())


def test_a_folder_named_tensorrt_is_not_mistaken_for_the_bindings(models: dict[str, Path], tmp_path: Path) -> None:
    """``tests/`` is on sys.path in this session, so ``import tensorrt`` finds the test folder (a namespace package)."""
    from pela_export.tensorrt._trt import tensorrt_available

    if tensorrt_available():
        pytest.skip("real TensorRT bindings are installed")
    had = sys.modules.pop("tensorrt", None)
    try:
        with pytest.raises(DependencyError, match="not installed"):
            build_engine(models["fp32"], tmp_path / "m.plan", BuildOptions())
    finally:
        sys.modules.pop("tensorrt", None)
        if had is not None:
            sys.modules["tensorrt"] = had


def _trt_names(tree: ast.AST) -> set[tuple[str, ...]]:
    """Attribute chains rooted at a name called ``trt`` (``trt.BuilderFlag.FP16`` -> ('BuilderFlag', 'FP16'))."""
    chains: set[tuple[str, ...]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts = []
            cur: ast.AST = node
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            root = cur.id if isinstance(cur, ast.Name) else None
            if root == "trt" or (root == "self" and parts and parts[-1] == "trt"):
                chain = tuple(reversed(parts[:-1] if root == "self" else parts))
                if chain:
                    chains.add(chain[:2])
    return chains


def test_every_spelled_out_tensorrt_name_exists_somewhere() -> None:
    """Catches typos in branches a given version never takes (the fakes check the taken ones)."""
    manifests = [load_manifest(v) for v in VERSIONS]
    chains: set[tuple[str, ...]] = set()
    for src in Path(pkg.__file__).parent.glob("*.py"):
        chains |= _trt_names(ast.parse(src.read_text()))
    assert ("BuilderFlag",) in {c[:1] for c in chains} and ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED") in chains
    for chain in sorted(chains):
        top = chain[0]
        if top in ("__version__",):
            continue
        found = False
        for m in manifests:
            members = (m["enums"].get(top) or m["classes_with_inherited"].get(top) or m["classes"].get(top))
            if members is None:
                found |= top in m["functions"] or top in m["module_attributes"]
                continue
            found |= len(chain) == 1 or chain[1] in members
        assert found, f"trt.{'.'.join(chain)} is in no TensorRT manifest"


def test_torch_backend_needs_cuda_and_gpu_info_falls_back() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from pela_export.tensorrt import TorchCudaBackend, gpu_info

    with pytest.raises(DependencyError, match="CUDA GPU"):
        TorchCudaBackend()
    info = gpu_info()
    assert not info.known and info.name == "unknown" and info.to_dict()["source"] == "none"
