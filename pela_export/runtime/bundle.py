"""Open a deployment bundle (a directory or ``bundle.tar.gz``) on the device.

The archive is unpacked member by member after checking every name: an
absolute path, a ``..`` component, a link or a device node is refused (a
bundle is data from another machine, and tar extraction must never write
outside its folder). Unpacked bundles are cached by archive hash, so running
``device-bench`` twice does not unpack twice.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .._io import sha256_file
from ..errors import ArtifactError, OptionError
from ..tolerance import Tolerance
from .schema import REPACKAGE_FIX, load_json_file, validate_deploy
from .sums import DEPLOY_NAME, format_problems, verify_bundle

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
ARCHIVE_ROOT = "bundle"
CACHE_ENV = "PELA_EXPORT_CACHE"


def cache_root() -> Path:
    """``$PELA_EXPORT_CACHE`` or ``~/.cache/pela-export`` (same rule as the workstation's model cache)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pela-export"


def _check_member(m: tarfile.TarInfo, archive: Path) -> None:
    name = m.name
    parts = Path(name).parts
    bad = None
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        bad = "has an absolute path"
    elif ".." in parts or "\\" in name:
        bad = "climbs out of the bundle ('..' in its path)"
    elif m.issym() or m.islnk():
        bad = f"is a link (to {m.linkname!r})"
    elif not (m.isfile() or m.isdir()):
        bad = "is not a regular file or folder"
    elif not parts or parts[0] != ARCHIVE_ROOT:
        bad = f"is outside the archive's {ARCHIVE_ROOT}/ folder"
    if bad:
        raise ArtifactError(f"archive member {name!r} {bad}; refusing to unpack", where=str(archive),
                            fix="use the bundle.tar.gz written by `pela-export package` (this archive was altered "
                                "or made by hand)")


def extract_archive(archive: str | os.PathLike[str], dest_parent: str | os.PathLike[str] | None = None) -> Path:
    """Unpack ``archive`` safely; returns the bundle root (``<cache>/bundles/<sha>/bundle``).

    Unpacks into a temporary sibling and renames it into place, so an interrupted
    extraction is never mistaken for a complete bundle.
    """
    src = Path(archive)
    if not src.is_file():
        raise ArtifactError("bundle archive not found", where=str(src),
                            fix="pass the bundle.tar.gz written by `pela-export package` (or the bundle directory)")
    digest = sha256_file(src)[:16]
    parent = Path(dest_parent) if dest_parent is not None else cache_root() / "bundles"
    final = parent / digest
    if (final / ARCHIVE_ROOT / DEPLOY_NAME).is_file():
        return final / ARCHIVE_ROOT
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{digest}.", suffix=".tmp"))
    try:
        try:
            with tarfile.open(src, "r:*") as tar:
                members = tar.getmembers()
                for m in members:
                    _check_member(m, src)
                for m in members:
                    target = tmp / m.name
                    if m.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    fobj = tar.extractfile(m)
                    if fobj is None:
                        raise ArtifactError(f"archive member {m.name!r} cannot be read", where=str(src), fix=REPACKAGE_FIX)
                    with fobj, open(target, "wb") as out:
                        shutil.copyfileobj(fobj, out)
                    if m.mode & 0o111:
                        os.chmod(target, 0o755)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ArtifactError(f"cannot unpack the bundle archive ({type(exc).__name__}: {exc}); it is truncated "
                                "or not a tar.gz", where=str(src), fix="copy bundle.tar.gz again (compare its size "
                                "with the workstation's), or copy the bundle directory instead") from None
        if not (tmp / ARCHIVE_ROOT).is_dir():
            raise ArtifactError(f"the archive has no {ARCHIVE_ROOT}/ folder", where=str(src), fix=REPACKAGE_FIX)
        try:
            os.replace(tmp, final)
        except OSError:  # another process unpacked the same archive meanwhile
            if not (final / ARCHIVE_ROOT / DEPLOY_NAME).is_file():
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final / ARCHIVE_ROOT


def is_archive(path: str | os.PathLike[str]) -> bool:
    return str(path).endswith(ARCHIVE_SUFFIXES)


class Bundle:
    """A verified, loaded bundle: deploy.json plus paths to its files."""

    def __init__(self, root: Path, deploy: dict[str, Any], source: Path) -> None:
        self.root = root
        self.deploy = deploy
        self.source = source

    @classmethod
    def load(cls, path: str | os.PathLike[str], verify: bool = True,
             extract_to: str | os.PathLike[str] | None = None) -> Bundle:
        """Open a bundle directory or ``.tar.gz``; ``verify`` checks every hash first (ArtifactError listing
        each problem file by file)."""
        src = Path(path)
        if src.is_dir():
            root = src
        elif src.is_file() and (is_archive(src) or tarfile.is_tarfile(src)):
            root = extract_archive(src, extract_to)
        else:
            raise ArtifactError("bundle not found" if not src.exists() else "not a bundle directory or .tar.gz",
                                where=str(src),
                                fix="pass the bundle directory or bundle.tar.gz written by `pela-export package`")
        if verify:
            problems = verify_bundle(root)
            if problems:
                raise ArtifactError(f"the bundle failed verification ({len(problems)} problem(s)):\n"
                                    + format_problems(problems),
                                    where=str(src), fix="copy the bundle again from the workstation; if the files "
                                    "there are fine, re-create it with `pela-export package`")
        deploy = load_json_file(root / DEPLOY_NAME, "deploy.json", validate_deploy, REPACKAGE_FIX)
        return cls(root, deploy, src)

    # -- facts ------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return str(self.deploy["model"]["name"])

    @property
    def deploy_sha256(self) -> str:
        return sha256_file(self.root / DEPLOY_NAME)

    @property
    def schema_version(self) -> int:
        return int(self.deploy["schema_version"])

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """Every input (name, dtype, shape with axis names, role, low/high, profile); schema-1 entries read as
        role ``tensor`` without value bounds."""
        return [{"role": "tensor", "low": None, "high": None, **t} for t in self.deploy["io"]["inputs"]]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return [{"role": "tensor", **t} for t in self.deploy["io"]["outputs"]]

    @property
    def input_names(self) -> list[str]:
        return [t["name"] for t in self.inputs]

    def axes(self) -> dict[str, dict[str, int]]:
        """min/opt/max of every named axis (``batch``, ``sequence``...): deploy.json's ``io.axes`` (schema 2),
        else read off the input profiles (schema 1)."""
        recorded = self.deploy["io"].get("axes")
        if isinstance(recorded, dict):
            return {str(k): {m: int(v[m]) for m in ("min", "opt", "max")} for k, v in recorded.items()}
        out: dict[str, dict[str, int]] = {}
        for t in self.inputs:
            prof = t.get("profile") or {}
            for i, axis in enumerate(t["shape"]):
                if isinstance(axis, str) and prof.get("min"):
                    out.setdefault(axis, {m: int(prof[m][i]) for m in ("min", "opt", "max")})
        return out

    def io_spec(self) -> Any:
        """The model's I/O description (:class:`pela_export.models.io.IOSpec`, numpy only) from deploy.json."""
        from ..models.io import io_from_dict

        return io_from_dict({"inputs": self.inputs, "outputs": self.outputs, "axes": self.axes()})

    @property
    def tokenizer(self) -> dict[str, Any] | None:
        """deploy.json's ``tokenizer`` record (text models, schema 2), else None."""
        tok = self.deploy.get("tokenizer")
        return dict(tok) if isinstance(tok, dict) else None

    def encode_text(self, texts: Any, max_length: int | None = None) -> dict[str, np.ndarray]:
        """Feeds for raw strings with the bundle's tokenizer (needs the ``tokenizers`` package)."""
        from .text import encode

        return encode(self, texts, max_length)

    def run_text(self, texts: Any, variant: str | None = None, backend: str = "onnxruntime",
                 max_length: int | None = None, **kw: Any) -> dict[str, np.ndarray]:
        """Every output of ``variant`` (default ``compressed.fp32``) for raw strings, in chunks of at most the
        profile's largest batch; padding/truncation as deploy.json says (see :mod:`.text`)."""
        from .backends import choose_backend, open_variant

        name = variant or ("compressed.fp32" if "compressed.fp32" in self.variants() else self.variants()[0])
        self.variant(name)
        feeds = self.encode_text(texts, max_length)
        runner = open_variant(self, name, choose_backend(backend), **kw)
        _, hi = self.batch_range()
        n = len(next(iter(feeds.values())))
        parts = [runner.run({k: v[i:i + hi] for k, v in feeds.items()}) for i in range(0, n, hi)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def profile_batches(self) -> list[int]:
        """The batch sizes of the first input's profile (min, opt, max; deduplicated, ascending)."""
        prof = self.inputs[0]["profile"]
        return sorted({int(prof[k][0]) for k in ("min", "opt", "max") if prof[k]}) or [1]

    def batch_range(self) -> tuple[int, int]:
        prof = self.inputs[0]["profile"]
        return (int(prof["min"][0]), int(prof["max"][0])) if prof["min"] else (1, 1)

    def variants(self) -> list[str]:
        return list(self.deploy["variants"])

    def variant(self, name: str) -> dict[str, Any]:
        try:
            return dict(self.deploy["variants"][name])
        except KeyError:
            raise OptionError(f"the bundle has no variant {name!r}",
                              fix=f"use one of: {', '.join(self.variants())}", where=str(self.source)) from None

    def path(self, rel: str) -> Path:
        return self.root / rel

    def onnx_path(self, name: str) -> Path:
        return self.path(self.variant(name)["onnx"])

    def tolerance(self, name: str) -> Tolerance:
        tol = self.variant(name)["tolerance"]
        return Tolerance(atol=float(tol["atol"]), rtol=float(tol["rtol"]))

    def ort_optimization(self, name: str) -> str:
        """The ONNX Runtime optimisation level the golden outputs were computed at (int8: basic)."""
        return str(self.variant(name).get("onnxruntime_optimization", "all"))

    def golden(self, name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Golden (inputs, outputs) of variant ``name`` as numpy arrays keyed by tensor name."""
        rel = self.variant(name)["golden"]
        path = self.path(rel)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"golden file of {name} is unreadable ({exc})", where=str(path), fix=REPACKAGE_FIX) from None
        inputs = {k.split(":", 1)[1]: v for k, v in arrays.items() if k.startswith("input:")}
        outputs = {k.split(":", 1)[1]: v for k, v in arrays.items() if k.startswith("output:")}
        want_in = [t["name"] for t in self.inputs]
        want_out = [t["name"] for t in self.outputs]
        missing = [f"input:{n}" for n in want_in if n not in inputs] + [f"output:{n}" for n in want_out if n not in outputs]
        if missing:
            raise ArtifactError(f"golden file of {name} lacks key(s) {', '.join(missing)} (has: {', '.join(arrays)})",
                                where=str(path), fix=REPACKAGE_FIX)
        return inputs, outputs

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.source), "root": str(self.root), "model": self.model_name,
                "deploy_sha256": self.deploy_sha256, "variants": self.variants()}


class VerifyResult:
    """Outcome of :func:`verify_path`: the problems, and deploy.json facts for the summary when intact."""

    def __init__(self, source: Path, problems: list[Any], deploy: dict[str, Any] | None, files: int) -> None:
        self.source, self.problems, self.deploy, self.files = source, problems, deploy, files

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        d = self.deploy or {}
        model = d.get("model", {})
        names = list(d.get("variants", {}))
        return "\n".join([
            f"bundle OK: {self.source}",
            f"  model {model.get('name')} ({model.get('source')}), created {d.get('created_at')} by pela-export "
            f"{d.get('tool', {}).get('version')}, deploy.json schema {d.get('schema_version')}",
            f"  {len(names)} variant(s): {', '.join(names)}",
            f"  {self.files} file(s) match SHA256SUMS"])


def verify_path(path: str | os.PathLike[str]) -> VerifyResult:
    """Verify a bundle directory or ``.tar.gz`` (unpacked into a temporary folder, removed afterwards)."""
    import json

    from .sums import SUMS_NAME, parse_sums

    src = Path(path)

    def check(root: Path) -> VerifyResult:
        problems = verify_bundle(root)
        if problems:
            return VerifyResult(src, problems, None, 0)
        sums, _ = parse_sums((root / SUMS_NAME).read_text(encoding="utf-8"))
        return VerifyResult(src, [], json.loads((root / DEPLOY_NAME).read_text(encoding="utf-8")), len(sums))

    if src.is_file() and (is_archive(src) or tarfile.is_tarfile(src)):
        with tempfile.TemporaryDirectory(prefix="pela-verify-") as tmp:
            return check(extract_archive(src, tmp))
    if not src.is_dir():
        raise ArtifactError("bundle not found" if not src.exists() else "not a bundle directory or .tar.gz",
                            where=str(src), fix="pass the bundle directory or bundle.tar.gz written by `pela-export package`")
    return check(src)
