"""SHA256SUMS of a bundle and the file-by-file verification built on it.

A bundle travels by USB stick, scp or a CI artifact store; any of them can
truncate or alter a file. ``verify_bundle`` reports every problem at once,
each naming its file (changed hash, missing file, extra file, corrupt or
wrong-version deploy.json), so the user re-copies exactly what broke. The
format is ``sha256sum``'s, so ``sha256sum -c SHA256SUMS`` works on the device too.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .._io import sha256_file, write_text_atomic
from ..errors import ArtifactError
from .schema import deploy_problems, is_safe_relpath

SUMS_NAME = "SHA256SUMS"
DEPLOY_NAME = "deploy.json"
#: Folders the device writes into (engines built by build_engines.sh); never part of the checked content.
LOCAL_DIRS = ("engines",)
_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


@dataclass(frozen=True)
class Problem:
    """One verification finding: the file (bundle-relative), the kind and what was observed."""

    path: str
    kind: str  # changed | missing | extra | corrupt | schema | link | sums
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind, "detail": self.detail}


def _is_local(rel: str) -> bool:
    return rel.split("/", 1)[0] in LOCAL_DIRS


def bundle_files(root: str | os.PathLike[str]) -> list[str]:
    """Every entry under ``root`` as a sorted POSIX relative path (not SHA256SUMS, not device-local folders)."""
    base = Path(root)
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = Path(dirpath).relative_to(base)
        for d in list(dirnames):
            rel = (rel_dir / d).as_posix()
            if _is_local(rel) and rel_dir == Path("."):
                dirnames.remove(d)
            elif (Path(dirpath) / d).is_symlink():
                out.append(rel)  # reported as a link, never followed
                dirnames.remove(d)
        for f in filenames:
            rel = (rel_dir / f).as_posix()
            if rel != SUMS_NAME:
                out.append(rel)
    return sorted(out)


def write_sums(root: str | os.PathLike[str]) -> Path:
    """Hash every file of the bundle into ``root/SHA256SUMS`` (sorted, sha256sum format)."""
    base = Path(root)
    lines = [f"{sha256_file(base / rel)}  {rel}" for rel in bundle_files(base)]
    return write_text_atomic(base / SUMS_NAME, "\n".join(lines) + "\n")


def parse_sums(text: str) -> tuple[dict[str, str], list[Problem]]:
    """``{relpath: sha256}`` and a Problem per malformed line (line number and content named)."""
    sums: dict[str, str] = {}
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m or not is_safe_relpath(m.group(2)):
            problems.append(Problem(SUMS_NAME, "sums", f"line {number} is not '<sha256>  <relative path>': {line[:80]!r}"))
            continue
        rel = m.group(2)
        if rel in sums:
            problems.append(Problem(SUMS_NAME, "sums", f"line {number} lists {rel} a second time"))
        sums[rel] = m.group(1).lower()
    return sums, problems


def _check_deploy(base: Path, sums: dict[str, str]) -> list[Problem]:
    path = base / DEPLOY_NAME
    if not path.is_file():
        return []  # reported as missing by the hash pass (or below when SHA256SUMS lacks it)
    try:
        deploy = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return [Problem(DEPLOY_NAME, "corrupt", f"truncated or corrupt JSON ({exc})")]
    problems = [Problem(DEPLOY_NAME, "schema", p) for p in deploy_problems(deploy)]
    if problems:
        return problems
    for name, v in deploy["variants"].items():
        for key in ("onnx", "golden", "calibration_cache"):
            rel = v.get(key)
            if rel and rel not in sums and not (base / rel).is_file():
                problems.append(Problem(rel, "missing", f"named by deploy.json (variants.{name}.{key}) but not in the bundle"))
        for version, entry in v["trtexec"].items():
            rel = entry["script"]
            if rel not in sums and not (base / rel).is_file():
                problems.append(Problem(rel, "missing",
                                        f"named by deploy.json (variants.{name}.trtexec.{version}) but not in the bundle"))
        onnx = v["onnx"]
        if onnx in sums and sums[onnx] != v["sha256"]:
            problems.append(Problem(onnx, "changed", f"SHA256SUMS says {sums[onnx][:12]}…, deploy.json "
                                                    f"(variants.{name}.sha256) says {v['sha256'][:12]}…"))
    tok = deploy.get("tokenizer") if isinstance(deploy.get("tokenizer"), dict) else {}
    for rel in tok.get("files", []):
        if rel not in sums and not (base / rel).is_file():
            problems.append(Problem(rel, "missing", "named by deploy.json (tokenizer.files) but not in the bundle"))
    return problems


def verify_bundle(root: str | os.PathLike[str]) -> list[Problem]:
    """Every problem of the unpacked bundle at ``root`` (empty list: intact)."""
    base = Path(root)
    if not base.is_dir():
        raise ArtifactError("bundle directory not found", where=str(base),
                            fix="pass the bundle directory or bundle.tar.gz written by `pela-export package`")
    problems: list[Problem] = []
    sums_path = base / SUMS_NAME
    sums: dict[str, str] = {}
    if not sums_path.is_file():
        problems.append(Problem(SUMS_NAME, "missing", "missing: file hashes cannot be checked"))
    else:
        try:
            text = sums_path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            text = ""
            problems.append(Problem(SUMS_NAME, "corrupt", "not UTF-8 text"))
        sums, bad = parse_sums(text)
        problems += bad
    for rel, want in sums.items():
        p = base / rel
        if p.is_symlink():
            problems.append(Problem(rel, "link", "is a symbolic link; bundles hold plain files only"))
        elif not p.is_file():
            problems.append(Problem(rel, "missing", "missing (listed in SHA256SUMS)"))
        else:
            got = sha256_file(p)
            if got != want:
                problems.append(Problem(rel, "changed", f"changed: sha256 {got[:12]}… ({p.stat().st_size} bytes), "
                                                        f"SHA256SUMS expects {want[:12]}…"))
    if sums_path.is_file():
        for rel in bundle_files(base):
            if rel not in sums:
                kind = "link" if (base / rel).is_symlink() else "extra"
                problems.append(Problem(rel, kind, "not listed in SHA256SUMS (extra file: added or left over)"))
    if not (base / DEPLOY_NAME).is_file() and DEPLOY_NAME not in sums:
        problems.append(Problem(DEPLOY_NAME, "missing", "missing: the bundle has no deploy.json"))
    problems += _check_deploy(base, sums)
    return problems


def format_problems(problems: list[Problem]) -> str:
    """One line per problem, file first."""
    return "\n".join(f"  - {p}" for p in problems)
