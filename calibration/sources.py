"""Where calibration examples come from, registered by name so ``--calib-data``
choices come from one place.

A source is a random-access list of examples: only the seeded selection is
decoded and adapted, so a large image folder costs what the selection costs.
Every source returns *model-ready* arrays (resized, channels matched,
normalised with the model's preprocessing) because the statistics must
describe what the deployed engine sees. Readers are shared with training
(:mod:`pela_export.train`) so both accept the same files.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pela_export._registry import Registry
from pela_export.errors import DatasetError, InputShapeError, OptionError
from pela_export.models.base import Preprocessing

DEFAULT_SOURCE = "digits"
FLAG = "--calib-data"


@dataclass(frozen=True)
class ModelInput:
    """The ONNX input a calibration feeds: name, per-example shape (no batch) and preprocessing."""

    name: str
    shape: tuple[int, ...]
    preprocessing: Preprocessing | None = None

    @classmethod
    def from_onnx(cls, path: str | Path, preprocessing: Preprocessing | None = None) -> ModelInput:
        """The single input of an ONNX file; its non-batch dimensions must be static."""
        from .graph import load_model

        graph = load_model(path, external_data=False).graph
        inits = {i.name for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in inits]
        if len(inputs) != 1:
            raise InputShapeError(f"{path}: model has {len(inputs)} inputs; image sources feed exactly one",
                                  fix="pass calibration arrays as a dict {input name: array} through the API")
        dims = inputs[0].type.tensor_type.shape.dim[1:]
        if not all(d.HasField("dim_value") for d in dims):
            raise InputShapeError(f"{path}: input {inputs[0].name!r} has dynamic non-batch dimensions",
                                  fix="export with a static input shape (--input-shape C,H,W)")
        return cls(inputs[0].name, tuple(int(d.dim_value) for d in dims), preprocessing)


@runtime_checkable
class Source(Protocol):
    """Random-access examples; ``take`` returns model-ready arrays keyed by ONNX input name."""

    spec: str

    def __len__(self) -> int: ...

    def take(self, indices: np.ndarray) -> dict[str, np.ndarray]: ...

    def files(self, indices: np.ndarray) -> list[str] | None: ...


SourceLoader = Callable[[str | None, "ModelInput | None"], Source]
SOURCES: Registry[SourceLoader] = Registry("calibration source", flag=FLAG)


def _image_input(spec: str, model_input: ModelInput | None) -> ModelInput:
    if model_input is None:
        raise OptionError(f"calibration source {spec!r} needs the model input (name, shape, preprocessing)",
                          fix="pass model_input=ModelInput.from_onnx(path, preprocessing)")
    if len(model_input.shape) != 3:
        raise DatasetError(f"{FLAG} {spec} gives images, but input {model_input.name!r} has shape "
                           f"{list(model_input.shape)} (not C, H, W)",
                           fix="pass calibration arrays through the API for non-image models")
    return model_input


class ArraySource:
    """Already model-ready arrays (API callers, ``.npz`` after adaptation, dataset splits)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], spec: str = "arrays") -> None:
        if not arrays:
            raise DatasetError(f"calibration source {spec!r} is empty", fix="pass at least one example")
        self.arrays = {k: _as_model_array(k, v) for k, v in arrays.items()}
        counts = {k: len(v) for k, v in self.arrays.items()}
        if len(set(counts.values())) != 1:
            raise DatasetError(f"calibration arrays have different example counts: {counts}",
                               fix="give every model input the same number of examples (first axis)")
        self.spec = spec

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v[indices]) for k, v in self.arrays.items()}

    def files(self, indices: np.ndarray) -> list[str] | None:
        return None


def _as_model_array(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 0:
        raise DatasetError(f"calibration input {name!r} is a scalar", fix="pass a batch: first axis = examples")
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32, copy=False)
    elif not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
        raise DatasetError(f"calibration input {name!r} has dtype {arr.dtype}", fix="pass float or integer arrays")
    return arr


class AdaptedSource:
    """Raw [0, 1] NCHW images adapted to the model input on ``take`` (datasets, ``.npz``)."""

    def __init__(self, spec: str, images: np.ndarray, model_input: ModelInput) -> None:
        self.spec, self.images, self.model_input = spec, images, model_input

    def __len__(self) -> int:
        return len(self.images)

    def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        from pela_export.data import adapt_images

        mi = self.model_input
        x = adapt_images(self.images[indices], mi.shape, mi.preprocessing)  # type: ignore[arg-type]
        return {mi.name: x.astype(np.float32, copy=False)}

    def files(self, indices: np.ndarray) -> list[str] | None:
        return None


class ImageFolderSource:
    """An ImageNet-layout (or flat) image folder decoded lazily with the model's preprocessing."""

    def __init__(self, root: Path, model_input: ModelInput) -> None:
        from pela_export.train.images import ImageFolderData, preprocessing_transform

        c, h, w = model_input.shape
        pre = model_input.preprocessing or Preprocessing(mean=(0.0,) * c, std=(1.0,) * c, size=(h, w), channels=c)
        self.spec, self.root, self.model_input = f"images:{root}", root, model_input
        try:
            self.data = ImageFolderData(root, preprocessing_transform(pre))
        except DatasetError as exc:  # shared reader speaks of --train-data
            raise DatasetError(exc.problem, where=exc.where,
                               fix=(exc.fix or "").replace("--train-data", FLAG)) from None

    def __len__(self) -> int:
        return len(self.data)

    def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        items = [self.data[int(i)] for i in indices]
        xs = [it[0] if isinstance(it, tuple) else it for it in items]
        return {self.model_input.name: np.stack([np.asarray(x, dtype=np.float32) for x in xs])}

    def files(self, indices: np.ndarray) -> list[str] | None:
        return [self.data.items[int(i)][0].relative_to(self.root).as_posix() for i in indices]


def _dataset(scheme: str) -> SourceLoader:
    def load(arg: str | None, model_input: ModelInput | None) -> Source:
        from pela_export.data import load_dataset

        spec = f"{scheme}:{arg}" if arg else scheme
        mi = _image_input(spec, model_input)
        try:
            ds = load_dataset(spec)
        except DatasetError as exc:
            raise DatasetError(exc.problem, where=exc.where, fix=(exc.fix or "").replace("--data", FLAG)) from None
        return AdaptedSource(f"{spec} (train split)", ds.x_train, mi)

    return load


for _scheme in ("digits", "fashion-mnist", "idx"):
    SOURCES.register(_scheme)(_dataset(_scheme))


@SOURCES.register("npz")
def _npz(arg: str | None, model_input: ModelInput | None) -> Source:
    """``x`` images (N, C, H, W) or (N, H, W) in [0, 1] or uint8; ``y`` is ignored."""
    from pela_export.train.data import read_npz

    if not arg:
        raise DatasetError("calibration source 'npz' needs a file", fix=f"pass {FLAG} npz:FILE.npz")
    path = Path(arg).expanduser()
    if not path.is_file():
        raise DatasetError(f"npz file {str(path)!r} does not exist", fix=f"check the path passed with {FLAG}")
    x, _ = read_npz(path)
    return AdaptedSource(f"npz:{path}", x, _image_input(f"npz:{path}", model_input))


@SOURCES.register("images")
def _images(arg: str | None, model_input: ModelInput | None) -> Source:
    if not arg:
        raise DatasetError("calibration source 'images' needs a folder", fix=f"pass {FLAG} images:DIR")
    root = Path(arg).expanduser()
    return ImageFolderSource(root, _image_input(f"images:{root}", model_input))


@SOURCES.register("random")
def _random(arg: str | None, model_input: ModelInput | None) -> Source:
    if model_input is None:
        raise OptionError("calibration source 'random' needs the model input (name, shape)",
                          fix="pass model_input=ModelInput.from_onnx(path, preprocessing)")
    return RandomSource(model_input)


class RandomSource:
    """Seeded standard-normal inputs of the model's shape, one seed per index: the stand-in
    calibration when a model has no dataset (its spec says ``random``, so reports say so)."""

    COUNT = 4096

    def __init__(self, model_input: ModelInput) -> None:
        self.spec, self.model_input = "random", model_input

    def __len__(self) -> int:
        return self.COUNT

    def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        shape = self.model_input.shape
        rows = [np.random.default_rng(int(i)).standard_normal(shape, dtype=np.float32) for i in indices]
        return {self.model_input.name: np.stack(rows) if rows else np.zeros((0, *shape), np.float32)}

    def files(self, indices: np.ndarray) -> list[str] | None:
        return None


def source_choices() -> list[str]:
    """Spec forms for help texts and errors: the one resolver's ``--calib-data`` spellings without
    text (text needs the model's tokenizer, which only the pipeline has)."""
    from pela_export.data.spec import data_choices

    return data_choices("calib", text=False)


def open_source(source: Any, model_input: ModelInput | None = None) -> Source:
    """Resolve a spec, path, array, ``{input: array}`` dict, iterable of batches, or Source."""
    if isinstance(source, Source):
        return source
    if isinstance(source, np.ndarray):
        if model_input is None:
            raise OptionError("a bare calibration array needs the ONNX input name",
                              fix="pass model_input, or a dict {input name: array}")
        return ArraySource({model_input.name: source})
    if isinstance(source, Mapping):
        return ArraySource(source)
    if isinstance(source, (str, Path)):
        return _from_spec(str(source), model_input)
    if isinstance(source, Iterable):
        return _from_batches(source, model_input)
    raise OptionError(f"cannot use a {type(source).__name__} as calibration data",
                      fix=f"pass {FLAG} with one of: {', '.join(source_choices())}")


def _from_spec(text: str, model_input: ModelInput | None) -> Source:
    """A spec parsed by the one resolver (:func:`pela_export.data.spec.parse_data_spec`), opened with
    this library's readers: dataset train split, ``.npz`` (its first file), image folder, random."""
    from pela_export.data.spec import check_use, parse_data_spec

    spec = check_use(parse_data_spec(text, FLAG), "calib")
    if spec.kind == "default":
        spec = parse_data_spec(DEFAULT_SOURCE, FLAG)
    if spec.kind == "text":
        raise DatasetError(f"{FLAG} {spec.label} is text: the calibration library has no tokenizer to read it",
                           fix=f"pass {FLAG} {spec.label} to pela-export with the hf:DIR model, or token arrays "
                               "{input name: array} through the API")
    return SOURCES.get(spec.kind)(spec.paths[0] if spec.paths else None, model_input)


def _from_batches(batches: Iterable[Any], model_input: ModelInput | None) -> Source:
    """Concatenate batches (arrays or dicts) into one array source."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        if not isinstance(batch, Mapping):
            if model_input is None:
                raise OptionError("calibration batches given as arrays need the ONNX input name",
                                  fix="pass model_input, or batches as dicts {input name: array}")
            batch = {model_input.name: batch}
        for k, v in batch.items():
            parts.setdefault(k, []).append(_as_model_array(k, v))
    if not parts:
        raise DatasetError("calibration source is empty (no batches)", fix="pass at least one batch")
    padded = {k: _right_pad(k, v) for k, v in parts.items()}
    try:
        arrays = {k: np.concatenate(v) for k, (v, _) in padded.items()}
    except ValueError as exc:
        raise DatasetError(f"calibration batches do not concatenate ({exc})",
                           fix="give every batch the same per-example shape") from None
    grown = {k: shape for k, (_, shape) in padded.items() if shape is not None}
    note = "; ".join(f"{k} right-padded with 0 to {list(shape)}" for k, shape in grown.items())
    return ArraySource(arrays, spec=f"batches ({note})" if note else "batches")


def _right_pad(name: str, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], tuple[int, ...] | None]:
    """Integer batches of different lengths (token ids, attention masks of text batches padded to
    their own longest row) right-padded with 0 to the longest, as a tokenizer pads: a 0 mask hides
    the added positions from the model. Float arrays are never padded (a 0 there is a value).
    Returns the arrays and the padded per-example shape (None when nothing was padded)."""
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) < 2 or len({len(s) for s in shapes}) != 1:
        return arrays, None
    if not all(np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_ for a in arrays):
        return arrays, None
    top = tuple(max(dims) for dims in zip(*shapes, strict=True))
    out = [np.pad(a, [(0, 0)] + [(0, t - d) for t, d in zip(top, a.shape[1:], strict=True)]) for a in arrays]
    return out, top
