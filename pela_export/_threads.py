"""Temporarily set torch's intra-op thread count, for timing and for training alike."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import OptionError


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Set the count (``None`` keeps the current one), yield the count in effect, restore it afterwards."""
    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise OptionError(f"--threads must be >= 1, got {threads}", fix="pass --threads with a positive integer")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
