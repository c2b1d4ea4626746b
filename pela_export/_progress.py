"""One progress-bar factory for long steps (training loops), shared by every stage."""
from __future__ import annotations

import sys
from typing import Any


def make_progress(enabled: bool) -> Any:
    """A rich Progress on stderr when enabled and stderr is a terminal, else None (logs stay clean in CI)."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)
