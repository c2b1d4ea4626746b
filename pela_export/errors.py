"""One error family for every problem a user can fix.

Each error names *where* (layer, node, output, file), *what* was observed vs
expected, and the *fix* (usually a flag). The CLI prints ``str(err)`` and exits
with :attr:`PelaExportError.exit_code`; tracebacks only appear with ``--debug``.
"""
from __future__ import annotations


class PelaExportError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code: int = 2

    def __init__(self, problem: str, *, fix: str | None = None, where: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        self.where = where
        super().__init__(self._render())

    def _render(self) -> str:
        head = f"{self.where}: {self.problem}" if self.where else self.problem
        return f"{head}\n  fix: {self.fix}" if self.fix else head


class ModelSourceError(PelaExportError):
    """The model spec cannot be resolved (unknown name, bad factory path, missing extra)."""


class CheckpointError(PelaExportError):
    """A checkpoint is missing, unreadable, or does not match the architecture."""


class InputShapeError(PelaExportError):
    """The input shape is missing or does not fit the model."""


class OptionError(PelaExportError):
    """A command-line or API option has an invalid value."""


class OutputDirError(PelaExportError):
    """The output location cannot be created or written."""


class DatasetError(PelaExportError):
    """A dataset spec cannot be resolved or its files are malformed."""


class DependencyError(PelaExportError):
    """An optional dependency is missing or too old."""


class ArtifactError(PelaExportError):
    """A saved artifact needed to restart a stage is missing or corrupt."""


class OnnxCheckError(PelaExportError):
    """An ONNX file fails ``onnx.checker`` or cannot be loaded."""


class ExportError(PelaExportError):
    """Tracing the model to ONNX failed."""


class VerificationError(PelaExportError):
    """Outputs of two backends disagree beyond tolerance; lists every failing output."""

    def __init__(self, problem: str, *, failures: list[str] | None = None,
                 fix: str | None = None, where: str | None = None) -> None:
        self.failures = list(failures or [])
        if self.failures:
            problem = problem + "\n" + "\n".join(f"  - {f}" for f in self.failures)
        super().__init__(problem, fix=fix, where=where)


class ParameterPreservationError(PelaExportError):
    """The ONNX graph holds more/other weights than the compressed model (factors merged back)."""
