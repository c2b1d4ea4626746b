"""The installed package list in pyproject.toml matches the source tree (packages are listed, not found,
because calibration/ installs under another name)."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_package_is_listed_and_calibration_is_mapped() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "pela_export").rglob("__init__.py")}
    assert found - listed == set(), "packages missing from pyproject.toml"
    assert conf["package-dir"] == {"pela_export.calibration": "calibration"}
    assert "pela_export.calibration" in listed and (ROOT / "calibration" / "__init__.py").is_file()


def test_calibration_imports_only_under_the_product_name() -> None:
    import pela_export.calibration as calibration

    assert Path(calibration.__file__).resolve().parent == ROOT / "calibration"
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if ".git" not in p.parts
                 and any(line.lstrip().startswith(("from calibration", "import calibration"))
                         for line in p.read_text(encoding="utf-8").splitlines())]
    assert offenders == []


def test_matplotlib_is_a_base_dependency_so_reports_have_charts() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert any(d.replace(" ", "").startswith("matplotlib>=") for d in project["dependencies"])


def test_device_side_and_sweep_planning_import_no_matplotlib() -> None:
    """The device runtime and commands stay light although matplotlib is installed with the package;
    planning a sweep (grid, front) loads neither matplotlib nor torch either."""
    import subprocess
    import sys

    script = ("import sys\n"
              "import pela_export.runtime, pela_export.runtime.devicebench, pela_export.runtime.bundle\n"
              "from pela_export.cli.main import build_parser\n"
              "build_parser(device_only=True).parse_args(['verify', 'x'])\n"
              "import pela_export.sweep, pela_export.sweep.pareto, pela_export.sweep.run\n"
              "print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
