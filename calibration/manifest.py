"""What a calibration saw, so it can be reproduced and checked.

An INT8 engine is only as reproducible as its calibration data: the manifest
records the source spec, the seeded selection (indices, and file names for
image folders) and a sha256 of the model-ready arrays. Reloading a manifest
against data that hashes differently is an error rather than a silent drift.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pela_export._io import write_json_atomic
from pela_export.errors import ArtifactError

MANIFEST_FORMAT = 1


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """Hash of the arrays in input-name order, including names, dtypes and shapes (no ambiguity)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class CalibrationManifest:
    """Source, selection and content hash of one calibration set."""

    source: str
    seed: int | None  # None: the caller's batches were used as given
    samples: int
    batch_size: int
    indices: list[int]
    inputs: dict[str, list[int]]  # input name -> full array shape (samples, ...)
    sha256: str
    files: list[str] | None = None  # image folders: selected files, relative to the folder
    format: int = MANIFEST_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "calibration manifest") -> CalibrationManifest:
        fix = "re-run the calibration to write a new manifest"
        if not isinstance(data, Mapping):
            raise ArtifactError("is not a JSON object", where=where, fix=fix)
        if data.get("format") != MANIFEST_FORMAT:
            raise ArtifactError(f"has format {data.get('format')!r}, expected {MANIFEST_FORMAT}", where=where, fix=fix)
        try:
            return cls(source=str(data["source"]), seed=None if data["seed"] is None else int(data["seed"]),
                       samples=int(data["samples"]), batch_size=int(data["batch_size"]),
                       indices=[int(i) for i in data["indices"]],
                       inputs={str(k): [int(d) for d in v] for k, v in data["inputs"].items()},
                       sha256=str(data["sha256"]),
                       files=None if data.get("files") is None else [str(f) for f in data["files"]])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"is malformed ({type(exc).__name__}: {exc})", where=where, fix=fix) from None

    def write(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> CalibrationManifest:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ArtifactError("calibration manifest not found", where=str(p),
                                fix="pass the .calib.manifest.json written next to the INT8 model") from None
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot read calibration manifest ({exc})", where=str(p),
                                fix="re-run the calibration to write a new manifest") from None
        return cls.from_dict(data, where=str(p))

    def differences(self, other: CalibrationManifest) -> list[str]:
        """Human-readable field differences (empty when the two describe the same data)."""
        out = []
        for key in ("source", "seed", "samples", "batch_size", "inputs", "sha256"):
            a, b = getattr(self, key), getattr(other, key)
            if a != b:
                out.append(f"{key}: recorded {a!r}, now {b!r}")
        if self.indices != other.indices:
            out.append("selected indices differ")
        if self.files != other.files:
            out.append("selected files differ")
        return out

    def check(self, other: CalibrationManifest, where: str = "calibration manifest") -> None:
        """Raise an ArtifactError listing every difference between a recorded and a rebuilt manifest."""
        diffs = self.differences(other)
        if diffs:
            raise ArtifactError("calibration data no longer matches the recorded manifest: " + "; ".join(diffs),
                                where=where, fix="restore the original calibration data (same files, seed and "
                                "sample count), or re-run the calibration to record new data")
