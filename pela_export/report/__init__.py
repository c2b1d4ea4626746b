"""Report rendering: report.json (schema, validation), report.md with its tables
and charts, stage summaries, and the merge of workstation and device reports.

It reads what :mod:`pela_export.measure` measured; nothing in the measuring or
deploying code imports from here. Names resolve lazily (PEP 562) so importing
the package pulls in neither matplotlib nor torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "render_markdown": "markdown",
    "REPORT_SCHEMA_VERSION": "document", "VariantBenchmark": "document", "build_comparison": "document",
    "build_report": "document", "load_report": "document", "to_plain": "document",
    "validate_report": "document", "write_report": "document",
    "merge_reports": "merge",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static analysers see the eager imports
    from .document import (  # noqa: F401
        REPORT_SCHEMA_VERSION,
        VariantBenchmark,
        build_comparison,
        build_report,
        load_report,
        to_plain,
        validate_report,
        write_report,
    )
    from .markdown import render_markdown  # noqa: F401
    from .merge import merge_reports  # noqa: F401
