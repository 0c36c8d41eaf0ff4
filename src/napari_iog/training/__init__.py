"""Training and fine-tuning IOG networks (no napari or Qt here: GPU machines often lack them).

``config`` (every option, and the command line derived from it), ``events`` (what a run
reports), ``data`` (datasets of images and instance labels, augmentation), ``synthetic``
(scenes of pasted objects), ``loop`` (the train/fine-tune loop, checkpoints, resume, DDP).
"""

from .config import TrainConfig, TrainingError
from .data import (DatasetStats, InstanceDataset, Pair, bsds_pairs, cvppp_pairs, pairs_from_arrays,
                   pairs_from_folders, split_pairs, sstem_pairs, validation_instances)
from .events import CANCELLED_EXIT, StepDone, TrainingEnded, TrainingStarted, Validated
from .loop import iog_loss, lr_factor, state_path, train, validate

__all__ = ["CANCELLED_EXIT", "DatasetStats", "InstanceDataset", "Pair", "StepDone", "TrainConfig",
           "TrainingEnded", "TrainingError", "TrainingStarted", "Validated", "bsds_pairs", "cvppp_pairs",
           "iog_loss", "lr_factor", "pairs_from_arrays", "pairs_from_folders", "split_pairs", "sstem_pairs",
           "state_path", "train", "validate", "validation_instances"]
