"""The agreement rule between two backends, kept free of torch.

Lives outside :mod:`pela_export.models.base` (which imports torch) so that the
device runtime can judge outputs with the same :class:`Tolerance` the
workstation used; ``models.base`` re-exports it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    """Allowed |a-b| <= atol + rtol*|b| per element between two backends."""

    atol: float = 1e-4
    rtol: float = 1e-3
