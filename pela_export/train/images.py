"""An image folder as training data: ImageNet layout (one sub-folder per class)
or a flat folder of images (unlabelled, distillation only).

Images are decoded lazily, one per item, because an ImageNet-style folder is
far larger than memory; each is resized and normalised with the model's
:class:`Preprocessing` (or a timm data config) so it matches what the teacher saw.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DatasetError, OptionError
from ..models.base import Preprocessing
from .data import TrainData, from_torch_dataset

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp",
                                            ".ppm", ".pgm", ".tif", ".tiff"})


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scan_folder(root: Path) -> tuple[list[tuple[Path, int | None]], list[str]]:
    """(image, class index or None) pairs and the class names; classes are sorted sub-folder names."""
    if not root.is_dir():
        raise DatasetError(f"image folder {str(root)!r} does not exist",
                           fix="pass --train-data with a folder of class sub-folders holding images")
    classes = [d for d in sorted(root.iterdir()) if d.is_dir() and _images_under(d)]
    if classes:
        items = [(p, i) for i, d in enumerate(classes) for p in _images_under(d)]
        return items, [d.name for d in classes]
    flat = [(p, None) for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not flat:
        raise DatasetError(
            f"image folder {str(root)!r} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})",
            fix="pass --train-data with a folder in ImageNet layout (ROOT/CLASS/IMAGE.jpg) or holding images")
    return flat, []


def preprocessing_transform(pre: Preprocessing) -> Callable[[Any], torch.Tensor]:
    """PIL image → float tensor C×H×W: channel conversion, bilinear resize, normalisation."""
    if pre.channels not in (1, 3):
        raise OptionError(f"image folders feed 1- or 3-channel models, this one has {pre.channels}",
                          fix="pass training data as arrays (.npz) or a torch Dataset instead")
    mode = "L" if pre.channels == 1 else "RGB"
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(-1, 1, 1)
    h, w = pre.size

    def transform(img: Any) -> torch.Tensor:
        from PIL import Image

        img = img.convert(mode).resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        t = torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())
        return (t - mean) / std

    return transform


class ImageFolderData(Dataset):
    """Lazily decoded images from :func:`scan_folder`; items are ``(x, y)`` or ``x`` when unlabelled."""

    def __init__(self, root: str | Path, transform: Callable[[Any], torch.Tensor]) -> None:
        self.root = Path(root)
        self.items, self.classes = scan_folder(self.root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        from PIL import Image, UnidentifiedImageError

        path, label = self.items[index]
        try:
            with Image.open(path) as img:
                x = self.transform(img)
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"cannot decode image {str(path)!r} ({exc})",
                               fix="remove or replace the corrupt file") from None
        return x if label is None else (x, label)


def image_folder(root: str | Path, preprocessing: Preprocessing | None,
                 input_shape: tuple[int, int, int] | None = None,
                 data_config: dict[str, Any] | None = None) -> TrainData:
    """Training data from an image folder.

    ``data_config`` (timm's ``resolve_data_config`` output) takes precedence and
    uses timm's eval transform (resize, centre crop, normalise); otherwise
    ``preprocessing`` (or, without it, plain [0, 1] pixels at ``input_shape``).
    """
    if data_config is not None:
        from timm.data import create_transform

        transform = create_transform(**data_config, is_training=False)
    else:
        if preprocessing is None:
            if input_shape is None:
                raise OptionError("an image folder needs the model's input size",
                                  fix="pass preprocessing, input_shape or a timm data_config")
            c, h, w = input_shape
            preprocessing = Preprocessing(mean=(0.0,) * c, std=(1.0,) * c, size=(h, w), channels=c)
        transform = preprocessing_transform(preprocessing)
    ds = ImageFolderData(root, transform)
    return from_torch_dataset(ds, name=str(root), labelled=bool(ds.classes))
