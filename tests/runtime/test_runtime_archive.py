"""bundle.tar.gz: unpacked safely (no absolute paths, no '..', no links), cached by hash, round-trips."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pela_export import api
from pela_export.cli.main import main
from pela_export.errors import ArtifactError
from pela_export.runtime import Bundle, extract_archive


def _archive_with(path: Path, bundle: Path, extra: tarfile.TarInfo, payload: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(bundle, arcname="bundle")
        tar.addfile(extra, io.BytesIO(payload) if extra.isfile() else None)
    return path


def _file(name: str, size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_archive_round_trip_and_cache(digits_run: Path, tmp_path: Path) -> None:
    root = extract_archive(digits_run / "bundle.tar.gz", tmp_path / "x")
    assert root.name == "bundle" and (root / "deploy.json").is_file()
    assert extract_archive(digits_run / "bundle.tar.gz", tmp_path / "x") == root  # reused, not unpacked again
    assert not [p for p in (tmp_path / "x").iterdir() if p.name.startswith(".")]
    b = Bundle.load(digits_run / "bundle.tar.gz")  # default cache: $PELA_EXPORT_CACHE/bundles (per-test here)
    assert b.root.parent.parent.name == "bundles" and b.variants() == Bundle.load(digits_run / "bundle").variants()


@pytest.mark.parametrize("member,needle", [
    (_file("bundle/../../evil.txt"), "climbs out"),
    (_file("/tmp/evil-absolute.txt"), "absolute path"),
    (_link("bundle/onnx/link.onnx", "/etc/passwd"), "is a link"),
    (_link("bundle/onnx/hard.onnx", "bundle/deploy.json", tarfile.LNKTYPE), "is a link"),
    (_file("elsewhere/file.txt"), "outside the archive's bundle/ folder"),
])
def test_malicious_members_are_refused(digits_run: Path, tmp_path: Path, member: tarfile.TarInfo, needle: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    archive = _archive_with(tmp_path / "evil.tar.gz", digits_run / "bundle", member)
    dest = tmp_path / "dest"
    with pytest.raises(ArtifactError, match=needle) as exc:
        Bundle.load(archive, extract_to=dest)
    assert repr(member.name) in str(exc.value)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil-absolute.txt").exists()
    assert not dest.exists() or not any(dest.iterdir()), "nothing may be left unpacked"
    with pytest.raises(ArtifactError, match=needle):
        api.verify_bundle(archive)
    assert main(["verify", str(archive)]) == 2
    assert needle in capsys.readouterr().err


def test_truncated_archive_is_a_clear_error(digits_run: Path, tmp_path: Path) -> None:
    data = (digits_run / "bundle.tar.gz").read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated or not a tar.gz"):
        Bundle.load(cut, extract_to=tmp_path / "dest")
    with pytest.raises(ArtifactError, match="bundle not found"):
        Bundle.load(tmp_path / "nope.tar.gz")
