"""What every model source resolves to: the module plus the facts export,
verification and benchmarking need (Optimum-style per-family config)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from ..tolerance import Tolerance
from .io import IOSpec, io_to_dict, single_input

__all__ = ["LoadedModel", "Preprocessing", "Tolerance"]


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become model input, completely enough for a device to reproduce it.

    Written to deploy.json and applied there by :func:`pela_export.runtime.preprocess`
    (whose module docstring defines every step). Defaults are the pipeline used before
    these facts were recorded: raw values already in [0, 1], squashed to ``size``
    by bilinear interpolation without antialiasing, in float32.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: tuple[int, int]
    channels: int
    layout: str = "NCHW"
    channel_order: str = ""  # "" → "gray" for 1 channel, else "RGB"
    input_range: tuple[float, float] = (0.0, 1.0)  # raw values that map to 0 and 1
    interpolation: str = "bilinear"
    antialias: bool = False  # True: Pillow's resize (filter widens when shrinking)
    resize_mode: str = "squash"  # squash | shorter_side | fit_shorter | fit_longer
    resize_size: tuple[int, ...] = ()  # () → from size and crop_pct as timm does: floor(side / crop_pct)
    crop_pct: float = 1.0
    crop_offset: str = "round"  # centre-crop offset: round half to even (torchvision) | floor (Hugging Face)
    resize_dtype: str = "float32"  # uint8: resize the raw 8-bit pixels (Pillow), then scale
    pad_fill: tuple[float, ...] = ()  # raw value for padding when the resized image is smaller than size

    def __post_init__(self) -> None:
        if not self.channel_order:
            object.__setattr__(self, "channel_order", "gray" if self.channels == 1 else "RGB")
        if not self.resize_size:
            sides = [min(self.size)] if self.resize_mode == "shorter_side" else list(self.size)
            object.__setattr__(self, "resize_size", tuple(math.floor(s / self.crop_pct) for s in sides))

    def to_dict(self) -> dict[str, Any]:
        """deploy.json's ``preprocessing`` object (JSON-ready)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Any) -> Preprocessing:
        """Read deploy.json's ``preprocessing`` (older records without the newer keys included)."""
        from ..errors import ArtifactError
        from ..runtime.preprocess import FIX, validate_preprocessing

        problems = validate_preprocessing(d)
        if problems:
            raise ArtifactError("preprocessing is invalid: " + "; ".join(problems), fix=FIX, where="preprocessing")
        names = {f.name for f in fields(cls)}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        return cls(**kw)


@dataclass
class LoadedModel:
    """A resolved model and its family config.

    ``input_shape`` excludes the batch dimension. ``input_shape_origin`` records
    where it came from ("config", "user", "recipe", "example_inputs") so the
    report can say which choices were automatic.
    """

    model: nn.Module
    name: str
    source: str
    input_shape: tuple[int, ...]
    input_shape_origin: str
    input_name: str = "input"
    output_name: str = "logits"
    input_dtype: torch.dtype = torch.float32
    preprocessing: Preprocessing | None = None
    num_classes: int | None = None
    tolerance: Tolerance = field(default_factory=Tolerance)
    default_dataset: str | None = None
    family: str = "generic"
    extra: dict[str, Any] = field(default_factory=dict)
    io: IOSpec | None = None

    def __post_init__(self) -> None:
        if self.io is None:  # the classic single tensor in, single tensor out, batch axis dynamic
            self.io = single_input(self.input_name, self.input_shape, str(self.input_dtype).replace("torch.", ""),
                                   self.output_name, high=int(self.extra.get("vocab_size", 100)))

    @property
    def spec(self) -> IOSpec:
        """The model's I/O description (never None after construction)."""
        assert self.io is not None  # set in __post_init__; not user input
        return self.io

    def dummy_inputs(self, batch: int = 1, seed: int = 0, sizes: dict[str, int] | None = None) -> tuple[torch.Tensor, ...]:
        """Valid inputs for every declared input, in ``forward`` order (single-tensor models: ``dummy_input``)."""
        if self.spec.is_single_tensor() and sizes is None:
            return (self.dummy_input(batch, seed),)
        feeds = self.spec.dummy(batch, seed, sizes)
        return tuple(torch.from_numpy(feeds[n]) for n in self.spec.input_names)

    def dummy_feeds(self, batch: int = 1, seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, Any]:
        """The same values as :meth:`dummy_inputs`, as numpy arrays by input name (ONNX Runtime feeds)."""
        return {n: t.numpy() for n, t in zip(self.spec.input_names, self.dummy_inputs(batch, seed, sizes), strict=True)}

    def dummy_input(self, batch: int = 1, seed: int = 0) -> torch.Tensor:
        """Deterministic random input of the model's shape and dtype (single-input models)."""
        if len(self.spec.inputs) != 1:
            from ..errors import InputShapeError

            raise InputShapeError(f"model {self.name!r} takes {len(self.spec.inputs)} inputs "
                                  f"({', '.join(self.spec.input_names)}), not one tensor",
                                  fix="this step supports single-input models only so far; use dummy_inputs()")
        g = torch.Generator().manual_seed(seed)
        shape = (batch, *self.input_shape)
        if self.input_dtype.is_floating_point:
            return torch.randn(shape, generator=g, dtype=self.input_dtype)
        vocab = int(self.extra.get("vocab_size", 100))
        return torch.randint(0, vocab, shape, generator=g, dtype=self.input_dtype)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for reports."""
        return {
            "name": self.name,
            "source": self.source,
            "family": self.family,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "input_shape": list(self.input_shape),
            "input_shape_origin": self.input_shape_origin,
            "input_dtype": str(self.input_dtype).replace("torch.", ""),
            "num_classes": self.num_classes,
            "preprocessing": asdict(self.preprocessing) if self.preprocessing else None,
            "tolerance": asdict(self.tolerance),
            "io": io_to_dict(self.spec),
        }
