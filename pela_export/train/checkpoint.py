"""Per-epoch training checkpoints that make ``resume`` exact.

A checkpoint holds everything the next epoch depends on: student weights,
optimizer, scheduler and grad-scaler state, the epoch/step counters, the
history so far, and every RNG that training draws from (torch CPU and CUDA,
NumPy, Python, and the generator that orders the data). Restoring all of it
makes a resumed run produce the same weights, bit for bit, as one that was
never interrupted (same device and thread count). Files are written through
:func:`atomic_path`, so a run killed mid-write leaves the previous checkpoint.

Under torchrun only rank 0 writes (the others wait at a barrier) and only rank 0
reads, then sends the content to the others, so nodes need no shared disk. Nothing
in a checkpoint depends on the number of processes: the world size that wrote it is
recorded (``world_size``), and each rank's RNG states (``rng_ranks``) are restored
only when resuming on as many processes.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._io import atomic_path
from ..errors import ArtifactError, CheckpointError, PelaExportError

if TYPE_CHECKING:
    from .distributed import Session

CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "pela-train-last.pt"
PAYLOAD_KEYS: frozenset[str] = frozenset({
    "fingerprint", "config_hash", "epoch", "global_step", "student", "optimizer",
    "scheduler", "scaler", "rng", "history",
})


def checkpoint_path(directory: str | Path) -> Path:
    return Path(directory).expanduser() / CHECKPOINT_NAME


def capture_rng(data_state: torch.Tensor) -> dict[str, Any]:
    """Every RNG state training consumes, in a form ``torch.load(weights_only=True)`` accepts.

    ``data_state`` is the data-order generator's state; the order is recomputed from the seed and the
    epoch on resume, so it is kept for the record, not restored.
    """
    name, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(np.asarray(key, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
        "data": data_state,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (the data order comes from the seed and epoch, see its docstring)."""
    torch.set_rng_state(state["torch"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically (temp file + rename); missing keys are a programming error."""
    missing = PAYLOAD_KEYS - set(payload)
    if missing:
        raise ValueError(f"checkpoint payload lacks {sorted(missing)}")
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and structurally check a checkpoint; any problem is a :class:`CheckpointError` with a fix."""
    p = Path(path)
    fix = f"delete {str(p)!r} to start training over, or run without --resume"
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"training checkpoint {str(p)!r} does not exist", fix="run without --resume") from None
    except Exception as exc:  # truncated zip, unpickling error, ...
        raise CheckpointError(f"training checkpoint {str(p)!r} is corrupt or unreadable "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})",
                              fix=fix) from None
    if not isinstance(blob, dict):
        raise CheckpointError(f"training checkpoint {str(p)!r} holds a {type(blob).__name__}, not a checkpoint",
                              fix=fix)
    missing = (PAYLOAD_KEYS | {"format"}) - set(blob)
    if missing:
        raise CheckpointError(f"training checkpoint {str(p)!r} lacks {', '.join(sorted(missing))}", fix=fix)
    if blob["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"training checkpoint {str(p)!r} has format {blob['format']!r}, "
                              f"expected {CHECKPOINT_FORMAT}", fix=fix)
    return blob


def check_fingerprint(blob: dict[str, Any], fingerprint: dict[str, Any], path: str | Path) -> None:
    """Refuse to resume when anything that determines the result differs; names every differing field."""
    stored = blob["fingerprint"] if isinstance(blob["fingerprint"], dict) else {}
    keys = sorted(set(stored) | set(fingerprint))
    diffs = [f"{k} ({stored.get(k)!r} in checkpoint, {fingerprint.get(k)!r} now)"
             for k in keys if stored.get(k) != fingerprint.get(k)]
    if diffs:
        raise ArtifactError(
            f"cannot resume from {str(path)!r}: it was written with a different configuration: {'; '.join(diffs)}",
            fix="resume with the same training options and data, or run without --resume "
                "(or with another --checkpoint-dir) to start over")


def load_for_resume(path: Path, fingerprint: dict[str, Any], sess: Session) -> dict[str, Any] | None:
    """Rank 0 reads and checks the checkpoint (None when there is none yet) and every rank gets the result,
    or the same error, so no rank waits for a peer that has failed."""
    blob, error = None, None
    if sess.main:
        try:
            if path.is_file():
                blob = load_checkpoint(path)
                check_fingerprint(blob, fingerprint, path)
        except PelaExportError as exc:
            blob, error = None, exc
    blob, error = sess.broadcast((blob, error))
    if error is not None:
        raise error
    return blob
