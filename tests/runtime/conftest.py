"""Fixtures for the device-runtime tests: a private copy of the session's digits bundle (safe to tamper with)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def bundle_copy(digits_run: Path, tmp_path: Path) -> Path:
    """A writable copy of the digits bundle directory."""
    dst = tmp_path / "bundle"
    shutil.copytree(digits_run / "bundle", dst)
    return dst


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpacked archives and engines go to a per-test cache, never ~/.cache."""
    monkeypatch.setenv("PELA_EXPORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PELA_EXPORT_ENGINE_CACHE", raising=False)


@pytest.fixture(scope="session")
def text_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny text encoder's run and bundle (three inputs, two outputs, tokenizer): see fixtures/text_bundles.py."""
    from text_bundles import text_run

    return text_run(tmp_path_factory.getbasetemp() / "shared-text")
