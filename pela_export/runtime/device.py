"""Facts about the machine a device report was measured on.

A latency number means little without the GPU, its compute capability, the
TensorRT/CUDA versions (the driver's, the toolkit's and the runtime cuda-python
bundles, kept apart) and, on a Jetson, the L4T release and power mode (MAXN
vs 15 W changes latency several-fold). Everything is best effort and never
fails the benchmark: a fact that cannot be read is ``None``. File paths and
commands are parameters so tests can feed recorded Jetson output.
"""
from __future__ import annotations

import json
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
CUDA_VERSION_JSON = Path("/usr/local/cuda/version.json")
NVPMODEL_QUERY = ("nvpmodel", "-q")
NVIDIA_SMI_GPU = ("nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader")

#: (argv) -> stdout text, or None when the command is missing or fails
CommandRunner = Callable[[Sequence[str]], "str | None"]


def run_command(argv: Sequence[str], timeout: float = 10.0) -> str | None:
    """stdout of ``argv``, or None if it is absent, fails or hangs."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def parse_tegra_release(text: str) -> str | None:
    """``# R36 (release), REVISION: 4.0, GCID: ...`` -> ``R36.4.0``."""
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{m.group(1)}.{m.group(2).rstrip('.')}" if m else None


def parse_nvpmodel(text: str) -> str | None:
    """``NV Power Mode: MAXN`` (first line of ``nvpmodel -q``) -> ``MAXN``."""
    m = re.search(r"NV Power Mode:\s*(\S.*?)\s*$", text, re.MULTILINE)
    return m.group(1) if m else None


def jetson_facts(*, release_file: Path = TEGRA_RELEASE, model_file: Path = DEVICE_TREE_MODEL,
                 nvpmodel: Sequence[str] = NVPMODEL_QUERY, run: CommandRunner = run_command) -> dict[str, Any] | None:
    """L4T release, power mode and board name on a Jetson; None elsewhere (no nv_tegra_release)."""
    text = _read(release_file)
    if text is None:
        return None
    mode_out = run(nvpmodel)
    model = _read(model_file)
    return {"l4t_release": parse_tegra_release(text),
            "power_mode": parse_nvpmodel(mode_out) if mode_out else None,
            "model": model.strip("\x00 \n") if model else None}


def _toolkit(version_file: Path) -> str | None:
    """The CUDA toolkit's version: version.json (CUDA >= 11.1, JetPack 5+), else version.txt beside it."""
    text = _read(version_file)
    if text:
        try:
            v = json.loads(text).get("cuda", {}).get("version")
            if v:
                return str(v)
        except (ValueError, AttributeError):
            pass
    m = re.search(r"CUDA Version\s+([\d.]+)", _read(version_file.with_name("version.txt")) or "")
    return m.group(1) if m else None


def _smi_driver_cuda(run: CommandRunner) -> str | None:
    """The driver's CUDA from nvidia-smi's header (``CUDA Version: 12.6``: what the driver supports)."""
    m = re.search(r"CUDA Version:\s*([\d.]+)", run(("nvidia-smi",)) or "")
    return m.group(1) if m else None


def cuda_facts(*, cudart: Any = None, package: str | None = None, version_file: Path = CUDA_VERSION_JSON,
               run: CommandRunner = run_command) -> dict[str, Any]:
    """The three CUDA versions a device report keeps apart (``cudart``/``package`` injected in tests):

    ``cuda_driver``: the newest CUDA the driver supports (cudaDriverGetVersion, else nvidia-smi; None: no
    driver); ``cuda_toolkit``: the installed toolkit (/usr/local/cuda/version.json); ``cuda_python``: the
    cuda-python distribution and the CUDA runtime it bundles (cudaRuntimeGetVersion reports the wheel's
    own version, not the machine's: 12.9 for cuda-python 12.9 anywhere), None when not importable.
    """
    from ..tensorrt.cuda_versions import cuda_python_package, read_versions, version_pair, version_text

    if cudart is None:
        from ..tensorrt.cuda_backend import import_cudart

        cudart = import_cudart()
        package = cuda_python_package() if cudart is not None else None
    versions = read_versions(cudart) if cudart is not None else None
    driver = version_text(version_pair(versions.driver)) if versions is not None else None
    if driver is None and (versions is None or versions.driver is None):  # unknown (not "no driver"): ask nvidia-smi
        driver = _smi_driver_cuda(run)
    py = None if versions is None else {"package": package,
                                        "runtime": version_text(version_pair(versions.runtime))}
    return {"cuda_driver": driver, "cuda_toolkit": _toolkit(version_file), "cuda_python": py}


def cuda_version(*, version_file: Path = CUDA_VERSION_JSON, run: CommandRunner = run_command,
                 cudart: Any = None) -> str | None:
    """The device's CUDA for the report's ``cuda`` field: the toolkit's where installed, else the driver's.

    Never cuda-python's own runtime version, which says what the wheel bundles, not what the device has.
    """
    facts = cuda_facts(cudart=cudart, version_file=version_file, run=run)
    return facts["cuda_toolkit"] or facts["cuda_driver"]


def _gpu_from_smi(run: CommandRunner) -> Any:
    from ..tensorrt.device import GpuInfo

    out = run(NVIDIA_SMI_GPU)
    if not out or "," not in out:
        return None
    name, cc = (s.strip() for s in out.strip().splitlines()[0].split(",", 1))
    return GpuInfo(name, cc, "nvidia-smi") if re.fullmatch(r"\d+\.\d+", cc) else None


def local_gpu(run: CommandRunner = run_command) -> Any:
    """GPU 0 without importing torch: cuda-python, then nvidia-smi, then torch only if already imported."""
    from ..tensorrt import device as trt_device

    probe = getattr(trt_device, "_from_cuda_python", None)
    found = probe() if probe is not None else None
    if found is None:
        found = _gpu_from_smi(run)
    if found is None and sys.modules.get("torch") is not None:
        found = trt_device.gpu_info()
    return found or trt_device.GpuInfo()


def _cpu_name() -> str | None:
    text = _read(Path("/proc/cpuinfo")) or ""
    for key in ("model name", "Model", "Hardware"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine() or None


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def tensorrt_version(trt: Any = None) -> str | None:
    """The TensorRT bindings' version (``trt`` injected in tests), None when not installed."""
    if trt is not None:
        return str(trt.__version__)
    from ..tensorrt._trt import tensorrt_available

    if not tensorrt_available():
        return None
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except Exception:  # noqa: BLE001 - half-installed bindings: report absent
        return None


def device_facts(*, trt: Any = None, gpu: Any = None, run: CommandRunner = run_command,
                 release_file: Path = TEGRA_RELEASE, model_file: Path = DEVICE_TREE_MODEL,
                 cuda_file: Path = CUDA_VERSION_JSON, cudart: Any = None) -> dict[str, Any]:
    """The ``device`` block of device-report.json (backend/fallback fields are added by the benchmark).

    Schema 2 reports the driver's, the toolkit's and cuda-python's CUDA apart (:func:`cuda_facts`); ``cuda``
    stays for readers of schema 1: the toolkit's version, else the driver's.
    """
    g = gpu if gpu is not None else local_gpu(run)
    cuda = cuda_facts(cudart=cudart, version_file=cuda_file, run=run)
    ort = None
    try:
        import onnxruntime

        ort = str(onnxruntime.__version__)
    except ImportError:
        pass
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "python": platform.python_version(),
        "gpu": {"name": g.name, "compute_capability": g.compute_capability, "source": g.source} if g.known else None,
        "tensorrt": tensorrt_version(trt),
        "cuda": cuda["cuda_toolkit"] or cuda["cuda_driver"],
        **cuda,
        "onnxruntime": ort,
        "numpy": _version("numpy"),
        "jetson": jetson_facts(release_file=release_file, model_file=model_file, run=run),
    }
