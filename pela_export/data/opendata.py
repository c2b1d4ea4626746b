"""Open a :class:`~.spec.DataSpec` for a model: the one reader behind ``--data``,
``--calib-data`` and ``--train-data``.

Every use gets the same model-ready rows for the same split, selection and
seed: images resized/normalised to the model input, text tokenized with the
model's tokenizer, seeded random inputs where the model has no dataset. Uses
differ only in the split and selection they ask for, so a calibration sample
and a training example of the same index are the same array.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, OptionError
from ..models.base import Preprocessing
from .spec import DataSpec, check_use, data_choices, flag_of, parse_data_spec

Select = Callable[[int], "slice | np.ndarray"]
#: ``preprocessing=`` default: the model's recorded preprocessing.
MODEL_PREPROCESSING: Any = object()
_FLAG_WORD = re.compile(r"(?<![\w-])--(?:train-|calib-)?data\b")


@dataclass
class DataSplit:
    """Model-ready inputs of one split with labels and provenance.

    ``x`` is one array (single-input models) or ``{input name: array}`` (text models).
    """

    x: Any
    labels: np.ndarray | None
    num_classes: int | None
    raw_shape: tuple[int, ...]
    class_names: list[str] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    spec: DataSpec | None = None
    name: str = ""


def selector(samples: int | None = None, seed: int | None = None, ordered: bool = False) -> Select:
    """Rows to take of ``count``: the first ``samples`` (no seed), or the first ``samples`` of a seeded
    permutation (sorted when ``ordered``); every row when ``samples`` is None (seeded: permuted)."""

    def select(count: int) -> slice | np.ndarray:
        if seed is None:
            return slice(0, samples)
        idx = np.random.default_rng(seed).permutation(count)[:samples]
        return np.sort(idx) if ordered else idx

    return select


def reflag(exc: DatasetError, flag: str) -> DatasetError:
    """The same error, its fix speaking of ``flag`` (shared readers name one flag)."""
    return DatasetError(exc.problem, where=exc.where, fix=_FLAG_WORD.sub(flag, exc.fix or "") or None)


def resolve_spec(spec: DataSpec | str | None, loaded: Any, use: str) -> DataSpec:
    """Parse ``spec`` and turn ``default`` into the model's own dataset, or ``random`` when it has none
    (training: an error naming ``--train-data``); a kind ``use`` does not serve is an error."""
    flag = flag_of(use)
    try:
        parsed = parse_data_spec(spec, flag)
    except DatasetError as exc:
        text_model = getattr(getattr(loaded, "spec", None), "is_text", lambda: False)()
        if not (text_model and exc.problem.startswith("unknown")):
            raise
        raise DatasetError(f"{flag} {str(spec).strip()} is not a text data file, and {loaded.name!r} is a text model",
                           fix=f"pass {flag} text:FILE or FILE.tab|.tsv|.csv|.jsonl (or TRAIN,TEST)") from None
    if parsed.kind == "default":
        own = getattr(loaded, "default_dataset", None)
        if own is not None:
            parsed = parse_data_spec(own, flag)
        elif use == "train":
            raise OptionError(f"{flag} is needed: {getattr(loaded, 'name', 'the model')!r} has no dataset",
                              fix=f"pass {flag} with one of: {', '.join(data_choices(use))}")
        else:
            parsed = DataSpec("random")
    return check_use(parsed, use)


def random_inputs(loaded: Any, samples: int, seed: int) -> Any:
    """Seeded valid random inputs: one array for a single-tensor model, else a dict for every input."""
    from ..models.io import SEQUENCE

    spec = loaded.spec
    if spec.is_single_tensor() and SEQUENCE not in spec.axes:
        return loaded.dummy_input(samples, seed=seed).numpy()
    return spec.dummy(samples, seed=seed)


def check_image_model(loaded: Any, spec: DataSpec, flag: str) -> None:
    """Image data needs an image model: a text model or a non-image input is a DatasetError naming ``flag``."""
    if loaded.spec.is_text():
        if spec.kind not in ("digits", "fashion-mnist", "idx"):
            raise DatasetError(f"{flag} {spec.label} is not a text data file, and {loaded.name!r} is a text model",
                               fix=f"pass {flag} text:FILE or FILE.tab|.tsv|.csv|.jsonl (or TRAIN,TEST)")
        raise DatasetError(f"{flag} {spec.label} gives images, but {loaded.name!r} is a text model "
                           f"(inputs {', '.join(loaded.spec.input_names)})",
                           fix=f"pass {flag} a text file: text:FILE or FILE.tab|.tsv|.csv|.jsonl "
                               "(--text-column/--label-column name its columns)")
    if not loaded.input_dtype.is_floating_point or len(loaded.input_shape) != 3:
        raise DatasetError(f"{flag} {spec.label} gives images, but {loaded.name!r} takes input "
                           f"{list(loaded.input_shape)} of {loaded.input_dtype}", fix=f"drop {flag} for non-image models")


def _text(loaded: Any, spec: DataSpec, flag: str, split: str, select: Select | None,
          text_column: str | None, label_column: str | None) -> DataSplit:
    from .tokens import text_model_split

    tok = text_model_split(loaded, spec.spelling, split, select, text_column=text_column,
                           label_column=label_column, flag=flag)
    ds = tok.dataset
    details = {**ds.describe(), "split": split, "max_length": tok.max_length, "at_max_length": tok.at_max_length,
               "padded_length": int(next(iter(tok.x.values())).shape[1])}
    # integer labels are ids as given: the label range is checked against the logits instead
    num_classes = None if ds.label_mapping and ds.label_mapping.startswith("integer") else ds.num_classes
    return DataSplit(tok.x, tok.labels, num_classes, (), ds.class_names, details, spec, ds.name)


def _arrays(spec: DataSpec, split: str, flag: str) -> tuple[np.ndarray, np.ndarray | None, int | None,
                                                               list[str] | None, str]:
    """Raw [0, 1] NCHW images, labels, class count, class names and name of an in-memory image kind."""
    if spec.kind == "npz":
        from ..train.data import read_npz

        path = spec.paths[0] if split == "train" or len(spec.paths) == 1 else spec.paths[1]
        try:
            x, y = read_npz(Path(path).expanduser())
        except DatasetError as exc:
            raise reflag(exc, flag) from None
        return x, y, (int(y.max()) + 1 if y is not None and len(y) else None), None, path
    from . import load_dataset

    try:
        ds = load_dataset(spec.spelling)
    except DatasetError as exc:
        raise reflag(exc, flag) from None
    x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    return x, y, ds.num_classes, ds.class_names, ds.name


def image_folder_data(root: str | Path, shape: tuple[int, ...], preprocessing: Preprocessing | None,
                      flag: str) -> Any:
    """The lazily decoded :class:`~pela_export.train.images.ImageFolderData` of ``root`` for a C×H×W input."""
    from ..train.images import ImageFolderData, preprocessing_transform

    c, h, w = (int(v) for v in shape)
    pre = preprocessing or Preprocessing(mean=(0.0,) * c, std=(1.0,) * c, size=(h, w), channels=c)
    try:
        return ImageFolderData(Path(root).expanduser(), preprocessing_transform(pre))
    except DatasetError as exc:
        raise reflag(exc, flag) from None


def _folder(loaded: Any, spec: DataSpec, flag: str, select: Select | None,
            pre: Preprocessing | None) -> DataSplit:
    shape = tuple(int(v) for v in loaded.input_shape)
    data = image_folder_data(spec.paths[0], shape, pre, flag)
    idx = np.arange(len(data))[select(len(data)) if select is not None else slice(None)]
    items = [data.items[int(i)] for i in idx]
    x = np.stack([np.asarray(data[int(i)][0] if it[1] is not None else data[int(i)], dtype=np.float32)
                  for i, it in zip(idx, items, strict=True)]) if len(idx) else np.zeros((0, *shape), np.float32)
    labels = np.array([it[1] for it in items], dtype=np.int64) if data.classes else None
    names = list(data.classes) or None
    return DataSplit(x, labels, len(names) if names else None, shape, names, {}, spec, spec.paths[0])


def open_data(spec: DataSpec | str | None, loaded: Any, *, use: str = "eval", split: str = "test",
              samples: int | None = None, seed: int | None = None, ordered: bool = False,
              select: Select | None = None, labelled: bool = False, why: str | None = None,
              preprocessing: Any = MODEL_PREPROCESSING, text_column: str | None = None,
              label_column: str | None = None) -> DataSplit:
    """Model-ready rows of ``split`` of ``spec`` for ``loaded`` (a LoadedModel).

    Rows: ``select(count)`` if given, else :func:`selector` of ``samples``/``seed``/``ordered``.
    ``random`` gives ``samples`` seeded random inputs (``seed``). ``labelled``: rows without labels
    are an error naming ``why`` (or the flag). An image folder or a single file is both splits.
    """
    flag = flag_of(use)
    ds = resolve_spec(spec, loaded, use)
    if ds.kind == "random":
        if labelled:
            raise OptionError(f"{why or flag} needs labelled data, and {flag} {ds.label} has no labels",
                              fix=f"pass {flag} with one of: {', '.join(data_choices(use))}")
        n = samples if samples is not None else 64
        return DataSplit(random_inputs(loaded, n, seed or 0), None, None, (), spec=ds, name="random")
    pick = select if select is not None else selector(samples, seed, ordered)
    if ds.kind == "text":
        out = _text(loaded, ds, flag, split, pick, text_column, label_column)
    else:
        check_image_model(loaded, ds, flag)
        pre = loaded.preprocessing if preprocessing is MODEL_PREPROCESSING else preprocessing
        if ds.kind == "images":
            out = _folder(loaded, ds, flag, pick, pre)
        else:
            from . import adapt_images

            x_all, y_all, num_classes, names, name = _arrays(ds, split, flag)
            chosen = pick(len(x_all))
            x = adapt_images(x_all[chosen], loaded.input_shape, pre).astype(np.float32)
            y = y_all[chosen].astype(np.int64) if y_all is not None else None
            out = DataSplit(x, y, num_classes, tuple(x_all.shape[1:]), names, {}, ds, name)
    if labelled and out.labels is None:
        raise DatasetError(f"{why or flag} needs labelled data, and {flag} {ds.label} has no labels",
                           fix=f"pass {flag} with labelled data (a label column, 'y' in the .npz, class sub-folders)")
    return out
