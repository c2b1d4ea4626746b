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
