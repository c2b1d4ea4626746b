"""TensorRT-specific error: the engine could not be parsed or built.

A subclass of :class:`~pela_export.errors.PelaExportError` so the CLI prints it
without a traceback; ``details`` lists every parser/builder message so the user
sees all failing nodes at once instead of fixing them one run at a time.
"""
from __future__ import annotations

from ..errors import PelaExportError


class TensorRTError(PelaExportError):
    """TensorRT rejected the network (parse or build failure); lists every message."""

    exit_code = 3

    def __init__(self, problem: str, *, details: list[str] | None = None,
                 fix: str | None = None, where: str | None = None) -> None:
        self.details = list(details or [])
        if self.details:
            problem = problem + "\n" + "\n".join(f"  - {d}" for d in self.details)
        super().__init__(problem, fix=fix, where=where)
