"""Training and fine-tuning IOG networks (no napari or Qt here: GPU machines often lack them).

``config`` (every option, and the command line derived from it), ``events`` (what a run
reports), ``data`` (datasets of images and instance labels, augmentation), ``synthetic``
(scenes of pasted objects), ``loop`` (the train/fine-tune loop, checkpoints, resume, DDP).
The names below are imported on first use, so that ``config`` and ``events`` (the command
line, the fine-tune widget) do not load torch.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["TrainConfig", "TrainingError"], ".config"),
    **dict.fromkeys(["CANCELLED_EXIT", "StepDone", "TrainingEnded", "TrainingStarted", "Validated"], ".events"),
    **dict.fromkeys(["DatasetStats", "InstanceDataset", "Pair", "bsds_pairs", "cvppp_pairs", "pairs_from_arrays",
                     "pairs_from_folders", "split_pairs", "sstem_pairs", "validation_instances"], ".data"),
    **dict.fromkeys(["iog_loss", "lr_factor", "state_path", "train", "validate"], ".loop"),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
