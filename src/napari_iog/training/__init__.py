"""Training and fine-tuning IOG networks (no napari or Qt here: GPU machines often lack them)."""

from .data import (DatasetStats, InstanceDataset, Pair, bsds_pairs, cvppp_pairs, pairs_from_arrays,
                   pairs_from_folders, split_pairs, sstem_pairs, validation_instances)
from .loop import TrainConfig, TrainingError, iog_loss, lr_factor, state_path, train, validate

__all__ = ["DatasetStats", "InstanceDataset", "Pair", "TrainConfig", "TrainingError", "bsds_pairs",
           "cvppp_pairs", "iog_loss", "lr_factor", "pairs_from_arrays", "pairs_from_folders", "split_pairs",
           "sstem_pairs", "state_path", "train", "validate", "validation_instances"]
