"""PELA intermediate training: distil the frozen original (teacher) into its
low-rank factorization (student) before fine-tuning or export."""
from .blocks import capture_outputs, find_blocks, first_tensor
from .checkpoint import CHECKPOINT_NAME, checkpoint_path, load_checkpoint
from .config import SCOPES, TrainConfig
from .data import (
    TrainData,
    from_array_dataset,
    from_arrays,
    from_npz,
    from_spec,
    from_torch_dataset,
    load_train_data,
    model_preprocessing,
    read_npz,
)
from .evaluate import accuracy_fn
from .images import ImageFolderData, image_folder
from .loop import TrainResult, format_epoch, train_pela
from .losses import LossTerms, PelaLoss, feature_loss, logit_kl, weight_perturbation

__all__ = [
                   "CHECKPOINT_NAME",
                   "SCOPES",
                   "ImageFolderData",
                   "LossTerms",
                   "PelaLoss",
                   "TrainConfig",
                   "TrainData",
                   "TrainResult",
                   "accuracy_fn",
                   "capture_outputs",
                   "checkpoint_path",
                   "feature_loss",
                   "find_blocks",
                   "first_tensor",
                   "format_epoch",
                   "from_array_dataset",
                   "from_arrays",
                   "from_npz",
                   "from_spec",
                   "from_torch_dataset",
                   "image_folder",
                   "load_checkpoint",
                   "load_train_data",
                   "logit_kl",
                   "model_preprocessing",
                   "read_npz",
                   "train_pela",
                   "weight_perturbation",
]
