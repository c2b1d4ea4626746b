"""Which CUDA the driver supports, which one cuda-python bundles, and the cuda-python pin that fits.

pip's cuda-python carries its own CUDA runtime: ``cudaRuntimeGetVersion`` reports the wheel's version
(12090 for cuda-python 12.9, 13050 for cuda-bindings 13.5) whatever CUDA the machine has, and that
runtime needs a driver at least as new. Desktop drivers run a newer *minor* of their major (CUDA minor
version compatibility), Jetson (L4T) drivers do not: ``pip install 'cuda-python>=12,<13'`` installs 12.9
on JetPack 6.1 (driver CUDA 12.6) and every call then fails with ``cudaErrorInsufficientDriver``
(NVlabs/FoundationStereo#209, anduril/jetpack-nixos#328). :func:`startup_problem` compares the two
versions before the first real CUDA call so the error names the pin for this JetPack/driver.

No torch and no cuda-python at import time: the module is plain data plus functions taking the
cudart module (the real one or the tests' fake).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DependencyError

TEGRA_RELEASE = Path("/etc/nv_tegra_release")


@dataclass(frozen=True)
class JetPack:
    """A JetPack release line, its L4T release prefix and the CUDA it ships (the cuda-python to pin)."""

    name: str
    l4t: str
    cuda: tuple[int, int]


#: JetPack lines pela-export targets (README "Deploying to a Jetson"): the CUDA each ships.
JETPACKS: tuple[JetPack, ...] = (JetPack("JetPack 6.0", "R36.3", (12, 2)),
                                 JetPack("JetPack 6.1 / 6.2", "R36.4", (12, 6)),
                                 JetPack("JetPack 7", "R38", (13, 0)))


def setup_lines() -> list[str]:
    """The device install commands per JetPack line (the bundle's build_engines.sh header prints them)."""
    width = max(len(f"{j.name} (L4T {j.l4t}, CUDA {j.cuda[0]}.{j.cuda[1]}):") for j in JETPACKS)
    rows = [f"{j.name} (L4T {j.l4t}, CUDA {j.cuda[0]}.{j.cuda[1]}):".ljust(width)
            + f" pip install numpy '{cuda_python_pin(j.cuda)}'" for j in JETPACKS]
    return [*rows, "desktop GPU:".ljust(width) + " pip install numpy 'cuda-python>=12,<13' (CUDA 12 driver: the "
                   "driver's CUDA major)"]


def cuda_python_pin(cuda: tuple[int, int]) -> str:
    """``cuda-python==12.6.*``: the cuda-python series whose bundled runtime is this CUDA major.minor."""
    return f"cuda-python=={cuda[0]}.{cuda[1]}.*"


JETPACK_PINS = "; ".join(f"{j.name} (CUDA {j.cuda[0]}.{j.cuda[1]}): `pip install '{cuda_python_pin(j.cuda)}'`"
                         for j in JETPACKS)
CUDA_PYTHON_FIX = (f"install the cuda-python whose CUDA matches the device's: {JETPACK_PINS}; a desktop GPU: the "
                   "driver's CUDA major, e.g. `pip install 'cuda-python>=12,<13'` for a CUDA 12 driver (the driver's "
                   "CUDA is the `CUDA Version` in `nvidia-smi`; JetPack's is in /usr/local/cuda/version.json)")
NO_GPU_FIX = ("run on the Jetson/GPU machine the engine was built for; check `nvidia-smi` (desktop) or that the "
              "user is in the `video` group (Jetson), and in Docker start the container with `--runtime nvidia`")


def version_pair(code: Any) -> tuple[int, int] | None:
    """CUDA's integer version (12060) as (12, 6); None for 0 (no driver) or nonsense."""
    try:
        n = int(code)
    except (TypeError, ValueError):
        return None
    return (n // 1000, n % 1000 // 10) if n > 0 else None


def version_text(pair: tuple[int, int] | None) -> str | None:
    return None if pair is None else f"{pair[0]}.{pair[1]}"


def _query(cudart: Any, name: str) -> int | None:
    """The integer a cudart version query returns; None when the call is absent or fails."""
    fn = getattr(cudart, name, None)
    if fn is None:
        return None
    with contextlib.suppress(Exception):  # a version query must never be the error the user sees
        result = fn()
        err, value = result if isinstance(result, tuple) else (result, None)
        if int(err) == 0 and value is not None:
            return int(value)
    return None


@dataclass(frozen=True)
class CudaVersions:
    """``driver``: the newest CUDA the driver supports (``cudaDriverGetVersion``; 0 = no driver);
    ``runtime``: the CUDA runtime cuda-python bundles (``cudaRuntimeGetVersion``). None: not readable."""

    driver: int | None
    runtime: int | None

    @property
    def driver_pair(self) -> tuple[int, int] | None:
        return version_pair(self.driver)

    @property
    def runtime_pair(self) -> tuple[int, int] | None:
        return version_pair(self.runtime)


def read_versions(cudart: Any) -> CudaVersions:
    """Both versions; neither query initialises CUDA, so they work even where every other call fails."""
    return CudaVersions(_query(cudart, "cudaDriverGetVersion"), _query(cudart, "cudaRuntimeGetVersion"))


def cuda_python_package() -> str | None:
    """``cuda-python 12.6.2`` (or ``cuda-bindings 13.5.0`` where only the bindings are installed), else None."""
    from importlib import metadata

    for dist in ("cuda-python", "cuda-bindings"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return f"{dist} {metadata.version(dist)}"
    return None


def is_tegra(release_file: Path | None = None) -> bool:
    """A Jetson (L4T writes /etc/nv_tegra_release): no CUDA minor version compatibility there."""
    return (release_file or TEGRA_RELEASE).is_file()


def jetpack_for(cuda: tuple[int, int] | None) -> JetPack | None:
    return next((j for j in JETPACKS if j.cuda == cuda), None)


def pin_for_driver(driver: tuple[int, int], tegra: bool) -> str:
    """The pip command that fits this driver: its exact CUDA series on a Jetson, its major elsewhere."""
    if tegra:
        jp = jetpack_for(driver)
        where = f" ({jp.name})" if jp else ""
        return f"`pip install '{cuda_python_pin(driver)}'`{where}"
    return f"`pip install 'cuda-python>={driver[0]},<{driver[0] + 1}'`"


def startup_problem(versions: CudaVersions, *, tegra: bool, package: str | None = None) -> DependencyError | None:
    """The error to raise before the first CUDA call, or None when the runtime can work with this driver.

    No driver (version 0): say so. A runtime of a later major than the driver never works; a later minor of
    the same major works on desktop drivers (minor version compatibility) but not on a Jetson.
    """
    if versions.driver == 0:
        return DependencyError("no NVIDIA driver is loaded (cudaDriverGetVersion reports 0), so CUDA cannot run "
                               "here", fix=NO_GPU_FIX)
    drv, rt = versions.driver_pair, versions.runtime_pair
    if drv is None or rt is None or rt <= drv or (rt[0] == drv[0] and not tegra):
        return None
    who = package or "the installed cuda-python"
    board = "this Jetson's" if tegra else "the"
    why = ("Jetson drivers do not run a newer CUDA minor" if tegra and rt[0] == drv[0]
           else "a CUDA runtime of a later major needs a newer driver")
    return DependencyError(
        f"{who} bundles the CUDA {version_text(rt)} runtime, but {board} NVIDIA driver supports CUDA up to "
        f"{version_text(drv)} ({why}); every CUDA call would fail with cudaErrorInsufficientDriver",
        fix=f"{pin_for_driver(drv, tegra)} to match the driver's CUDA {version_text(drv)}"
            + (f" (the JetPack pins: {JETPACK_PINS})" if tegra else "")
            + "; or upgrade the driver (JetPack) to one that supports CUDA " + str(version_text(rt)))
