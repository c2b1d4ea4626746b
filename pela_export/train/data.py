"""Training data for PELA intermediate training: every source becomes a
:class:`TrainData` that yields ``(x, y or None)`` batches in an order drawn
from a caller-owned ``torch.Generator``.

The generator is owned by the loop (and saved in its checkpoints) rather than
reseeded per epoch, so an interrupted run resumes on exactly the batches an
uninterrupted one would have seen. Sources: the dataset registry (``digits``,
``fashion-mnist``, ``idx:DIR``), ``.npz`` arrays, an ImageNet-layout image
folder (:mod:`.images`), text files for text models (``text:FILE``,
``FILE.tab|.tsv|.csv|.jsonl``, tokenized with the model's tokenizer; ``x`` is then
``{input name: int64 tensor}``) and any map-style torch Dataset. Unlabelled sources
give ``y = None`` (distillation only).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data import ArrayDataset, adapt_images, load_dataset
from ..data.tokens import trim_padding
from ..errors import DatasetError, OptionError
from ..models.base import LoadedModel, Preprocessing
from ..models.call import Inputs, call_model  # noqa: F401  (call_model re-exported for train/)
from ..models.io import batch_len

#: Model input of one batch: a tensor, or ``{input name: tensor}`` for multi-input (text) models.
Batch = tuple[Inputs, torch.Tensor | None]


def batch_to(x: Inputs, device: torch.device | str, non_blocking: bool = True) -> Inputs:
    """Move a batch's input tensor(s) to ``device``."""
    if isinstance(x, Mapping):
        return {k: v.to(device, non_blocking=non_blocking) for k, v in x.items()}
    return x.to(device, non_blocking=non_blocking)


@dataclass
class TrainData:
    """Training examples the loop shuffles by index: in-memory tensors or a map-style Dataset."""

    name: str
    x: torch.Tensor | dict[str, torch.Tensor] | None = None
    y: torch.Tensor | None = None
    dataset: Dataset | None = None
    labelled: bool = False

    def __post_init__(self) -> None:
        if (self.x is None) == (self.dataset is None):
            raise ValueError("TrainData needs exactly one of x (tensors) or dataset")
        if self.x is not None:
            self.labelled = self.y is not None
        if len(self) == 0:
            raise DatasetError(f"training data {self.name!r} is empty", fix="pass a training set with examples")

    def __len__(self) -> int:
        return batch_len(self.x) if self.x is not None else len(self.dataset)  # type: ignore[arg-type]

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """One epoch of batches, shuffled with ``generator`` (in order when it is None)."""
        if batch_size < 1:
            raise OptionError(f"batch size must be >= 1, got {batch_size}", fix="pass --batch-size 64 (or >= 1)")
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.take(order[start:start + batch_size])

    def take(self, idx: torch.Tensor, like: torch.Tensor | None = None) -> Batch:
        """The batch of examples ``idx``; text is cut to the longest row of ``like`` (the global batch that
        ``idx`` is one rank's share of under torchrun, so every rank runs the sequence length one process would)."""
        if isinstance(self.x, Mapping):  # text: each batch cut to its longest row
            return _text_rows(self.x, idx, like), (self.y[idx] if self.y is not None else None)
        if self.x is not None:
            return self.x[idx], (self.y[idx] if self.y is not None else None)
        return self._collate([self.dataset[int(i)] for i in idx])  # type: ignore[index]

    def _collate(self, items: list[Any]) -> Batch:
        if self.labelled:
            xs = torch.stack([torch.as_tensor(it[0]) for it in items]).float()
            ys = torch.as_tensor([int(it[1]) for it in items], dtype=torch.int64)
            return xs, ys
        xs = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
        return torch.stack([torch.as_tensor(x) for x in xs]).float(), None


def _text_rows(x: Mapping[str, torch.Tensor], idx: torch.Tensor, like: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Rows ``idx`` of tokenized text, cut to the longest row of ``like`` (else of ``idx``)."""
    rows = {k: v[idx] for k, v in x.items()}
    if like is None or "attention_mask" not in rows:
        return trim_padding(rows)
    width = trim_padding({"attention_mask": x["attention_mask"][like]})["attention_mask"].shape[1]
    seq = rows["attention_mask"].shape[1]
    return {k: (v[:, :width] if v.ndim >= 2 and v.shape[1] == seq else v) for k, v in rows.items()}


def from_arrays(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor | None = None,
                name: str = "arrays") -> TrainData:
    """Already model-ready inputs (float, batch first) and optional integer labels."""
    xt = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x).float()
    yt = None if y is None else torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long()
    if yt is not None and (yt.ndim != 1 or len(yt) != len(xt)):
        raise DatasetError(f"{name}: labels have shape {tuple(yt.shape)}, expected ({len(xt)},)",
                           fix="provide exactly one integer label per example")
    return TrainData(name=name, x=xt, y=yt)


def from_torch_dataset(dataset: Dataset, name: str | None = None, labelled: bool | None = None) -> TrainData:
    """Any map-style Dataset whose items are ``x`` or ``(x, y)``; labels are detected from item 0."""
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise OptionError(f"{type(dataset).__name__} is not a map-style Dataset (needs __len__ and __getitem__)",
                          fix="wrap an iterable dataset in a map-style one, or pass arrays")
    if labelled is None:
        first = dataset[0] if len(dataset) else None  # type: ignore[arg-type]
        labelled = isinstance(first, (tuple, list)) and len(first) >= 2
    return TrainData(name=name or type(dataset).__name__, dataset=dataset, labelled=labelled)


def from_array_dataset(data: ArrayDataset, input_shape: tuple[int, int, int],
                       preprocessing: Preprocessing | None, split: str = "train") -> TrainData:
    """One split of an :class:`ArrayDataset`, resized/normalised to the model input."""
    x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    return from_arrays(adapt_images(x, input_shape, preprocessing), y, name=f"{data.name}:{split}")


def from_spec(spec: str, input_shape: tuple[int, int, int], preprocessing: Preprocessing | None,
              split: str = "train") -> TrainData:
    """A dataset-registry spec (``digits``, ``fashion-mnist``, ``idx:DIR``)."""
    return from_array_dataset(load_dataset(spec), input_shape, preprocessing, split)


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated ``x`` (float32 NCHW in [0, 1]) and optional ``y`` (int64) from an ``.npz`` file.

    ``x`` may be (N, C, H, W) or (N, H, W) (one channel), float in [0, 1] or uint8 0..255.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"npz file {str(p)!r} does not exist", fix="check the path passed with --train-data")
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile/pickle/OSError variants
        raise DatasetError(f"cannot read npz file {str(p)!r} ({type(exc).__name__}: {exc})",
                           fix="write it with numpy.savez(path, x=images, y=labels)") from None
    if "x" not in arrays:
        raise DatasetError(f"npz file {str(p)!r} has no key 'x' (keys: {', '.join(arrays) or 'none'})",
                           fix="store the images under key 'x' (and optional labels under 'y')")
    x = arrays["x"]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or len(x) == 0:
        raise DatasetError(f"npz file {str(p)!r}: key 'x' has shape {arrays['x'].shape}, "
                           "expected (N, C, H, W) or (N, H, W) with N >= 1",
                           fix="store a batch of images under key 'x'")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    else:
        raise DatasetError(f"npz file {str(p)!r}: key 'x' has dtype {x.dtype}, expected float (values in [0, 1]) "
                           "or uint8 (0..255)", fix="cast images with .astype(np.float32) / 255")
    y = arrays.get("y")
    if y is not None:
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise DatasetError(f"npz file {str(p)!r}: key 'y' has dtype {y.dtype} shape {y.shape}, "
                               f"expected integer labels of shape ({len(x)},)",
                               fix="store one integer label per image under 'y', or omit 'y' for unlabelled data")
        if y.min() < 0:
            raise DatasetError(f"npz file {str(p)!r}: key 'y' has negative labels", fix="labels must be 0..C-1")
        y = y.astype(np.int64)
    return np.ascontiguousarray(x), y


def from_npz(path: str | Path, input_shape: tuple[int, int, int],
             preprocessing: Preprocessing | None) -> TrainData:
    """``.npz`` images adapted to the model input like the registry datasets."""
    x, y = read_npz(path)
    return from_arrays(adapt_images(x, input_shape, preprocessing), y, name=str(path))


def from_text(spec: str, loaded: LoadedModel, split: str = "train", *, text_column: str | None = None,
              label_column: str | None = None, flag: str = "--train-data") -> TrainData:
    """A text file (``text:FILE``, ``FILE.tab|.tsv|.csv|.jsonl``, ``TRAIN,TEST``) tokenized for ``loaded``.

    ``x`` holds every model input (int64, padded to the longest text, cut at the model's
    ``sequence`` max); labels are class ids when the file has a label column and the model
    outputs logits (an embedding model has no classes: its training is distillation only).
    """
    from ..data.tokens import text_model_split

    tok = text_model_split(loaded, spec, split, None, text_column=text_column, label_column=label_column, flag=flag)
    x = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tok.x.items()}
    classifier = loaded.spec.outputs[0].role == "logits"
    y = torch.from_numpy(tok.labels) if tok.labels is not None and classifier else None
    return TrainData(name=f"{tok.dataset.name}:{split}", x=x, y=y)


def model_preprocessing(loaded: LoadedModel) -> Preprocessing | None:
    """The recorded preprocessing of ``loaded``, or one from timm's data config (mean/std), or None."""
    if loaded.preprocessing is not None:
        return loaded.preprocessing
    if getattr(loaded.model, "pretrained_cfg", None) and len(loaded.input_shape) == 3:
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=loaded.model)
        c, h, w = (int(v) for v in loaded.input_shape)
        return Preprocessing(mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), size=(h, w), channels=c)
    return None


def open_train_data(spec: Any, loaded: LoadedModel, split: str = "train", *, flag: str = "--train-data",
                    text_column: str | None = None, label_column: str | None = None) -> TrainData:
    """``split`` of a data spec through the one resolver (:func:`pela_export.data.opendata.open_data`),
    as TrainData: the same rows calibration and evaluation see. An image folder stays lazily decoded
    (it may be far larger than memory); text labels are kept only for a classifier (logits)."""
    from ..data.opendata import image_folder_data, open_data, resolve_spec
    from ..data.spec import use_of

    use = use_of(flag)
    resolved = resolve_spec(spec, loaded, use)
    pre = model_preprocessing(loaded)
    if resolved.kind == "text":
        s = open_data(resolved, loaded, use=use, split=split, text_column=text_column, label_column=label_column)
        x = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in s.x.items()}
        classifier = loaded.spec.outputs[0].role == "logits"
        y = torch.from_numpy(s.labels) if s.labels is not None and classifier else None
        return TrainData(name=f"{s.name}:{split}", x=x, y=y)
    if loaded.spec.is_text():
        raise DatasetError(f"{flag} {resolved.label} is not text, but {loaded.name!r} is a text model "
                           f"(inputs {', '.join(loaded.spec.input_names)})",
                           fix=f"pass {flag} text:FILE or FILE.tab|.tsv|.csv|.jsonl")
    if len(loaded.input_shape) != 3:
        raise OptionError(f"model input shape {tuple(loaded.input_shape)} is not an image (C, H, W)",
                          fix="pass training data as a torch Dataset through the API")
    if resolved.kind == "images":
        shape = tuple(int(v) for v in loaded.input_shape)
        ds = image_folder_data(resolved.paths[0], shape, pre, flag)
        return from_torch_dataset(ds, name=str(Path(resolved.paths[0]).expanduser()), labelled=bool(ds.classes))
    s = open_data(resolved, loaded, use=use, split=split, preprocessing=pre)
    name = s.name if resolved.kind == "npz" else f"{s.name}:{split}"
    return from_arrays(s.x, s.labels, name=name)


def load_train_data(source: Any, loaded: LoadedModel, *, text_column: str | None = None,
                    label_column: str | None = None) -> TrainData:
    """Resolve a training source for ``loaded``'s input.

    ``source``: a :class:`TrainData`, a torch Dataset, an :class:`ArrayDataset`
    (train split), or a data spec (:func:`pela_export.data.spec.parse_data_spec`; the
    spellings of ``--data``/``--calib-data``: ``digits``, ``fashion-mnist``, ``idx:DIR``,
    ``FILE.npz``, ``IMAGE_DIR``, and for a text model ``text:FILE``,
    ``FILE.tab|.tsv|.csv|.jsonl``, ``TRAIN,TEST``; columns ``text_column``/``label_column``,
    else detected).
    """
    if isinstance(source, TrainData):
        return source
    if isinstance(source, Dataset):
        return from_torch_dataset(source)
    if isinstance(source, ArrayDataset):
        if loaded.spec.is_text():
            raise DatasetError(f"--train-data {source.name} is not text, but {loaded.name!r} is a text model "
                               f"(inputs {', '.join(loaded.spec.input_names)})",
                               fix="pass --train-data text:FILE or FILE.tab|.tsv|.csv|.jsonl")
        if len(loaded.input_shape) != 3:
            raise OptionError(f"model input shape {tuple(loaded.input_shape)} is not an image (C, H, W)",
                              fix="pass training data as a torch Dataset through the API")
        return from_array_dataset(source, tuple(int(v) for v in loaded.input_shape),  # type: ignore[arg-type]
                                  model_preprocessing(loaded))
    return open_train_data(source, loaded, text_column=text_column, label_column=label_column)
