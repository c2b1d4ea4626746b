"""Model size on disk and in parameters.

The ONNX size includes external-data files (``*.onnx.data``), because large
models are saved that way and the main file alone would under-report them.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ArtifactError, DependencyError

MB = 1_000_000  # decimal megabytes, as file managers and `ls -h --si` show them


@dataclass(frozen=True)
class OnnxFileSize:
    """Bytes of the .onnx file plus any external tensor data it references."""

    path: str
    model_bytes: int
    external_data_bytes: int

    @property
    def bytes(self) -> int:
        return self.model_bytes + self.external_data_bytes

    @property
    def mb(self) -> float:
        return self.bytes / MB

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bytes"] = self.bytes
        d["mb"] = round(self.mb, 6)
        return d


def onnx_file_size(onnx_path: str | os.PathLike[str]) -> OnnxFileSize:
    """Size of an exported ONNX model including its external data files."""
    path = Path(onnx_path)
    external = sum((path.parent / loc).stat().st_size
                   for loc in _external_locations(_load_header(path)) if (path.parent / loc).is_file())
    return OnnxFileSize(path=str(path), model_bytes=path.stat().st_size, external_data_bytes=external)


def _load_header(path: Path) -> Any:
    """Load the graph without external tensor bytes (cheap even for large models)."""
    if not path.is_file():
        raise ArtifactError(f"ONNX file {str(path)!r} does not exist",
                            fix="run the export stage first so the ONNX file exists")
    try:
        import onnx  # noqa: PLC0415
    except ImportError:
        raise DependencyError("onnx is not installed, so ONNX file sizes cannot be measured",
                              fix="pip install 'onnx>=1.16'") from None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors are untyped
        raise ArtifactError(f"cannot read ONNX file {str(path)!r}: {exc}",
                            fix="re-run the export stage to regenerate the ONNX file") from None
    return proto


def _external_locations(proto: Any) -> set[str]:
    """File names referenced as external data."""
    import onnx  # noqa: PLC0415

    locs: set[str] = set()
    for t in _all_tensors(proto.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            locs.update(e.value for e in t.external_data if e.key == "location")
    return locs


def _all_tensors(graph: Any) -> list[Any]:
    tensors = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                tensors.extend(_all_tensors(sub))
    return tensors


def count_params(model: nn.Module) -> int:
    """Number of unique parameter elements (tied weights counted once)."""
    from ..export.params import count_torch_params  # one counting rule for the whole tool

    return count_torch_params(model)
