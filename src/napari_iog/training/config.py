"""``TrainConfig``: every option of a training run, in one place.

The command line (``napari-iog train``), the fine-tune widget's subprocess arguments and the
checkpoint's card are all derived from the fields below: a new option is one field here, with
its help text. ``add_arguments`` makes the argparse options, ``from_args`` reads them back,
and ``to_argv`` writes a config as command-line arguments (so ``from_args(parse(to_argv(c)))``
is ``c``).
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from ..zoo import DEFAULT_MODEL as DEFAULT_BASE

OPTIMIZERS = ("adamw", "sgd")
LOSSES = ("bce", "nfl", "bce+nfl")
NFL_GAMMA = 2.0     # RITM's
DEFAULT_LR = {"adamw": 1e-4, "sgd": 1e-8}     # sgd: the published value, for the summed loss
#: fine-tuning trained weights (docs/benchmarks.md, "Fine-tuning the default on one domain"): the
#: coarse outputs weighed 0.1 needed fewer clicks than the published loss; with the stage-6 default,
#: AdamW at 1e-4 (the rate it was trained at) was the only rate of 3e-5, 1e-4 and 3e-4 that needed
#: fewer clicks on all of ssTEM, CVPPP and DSB2018 (3e-4 lost DSB2018's first clicks)
FINETUNE_LR = {"adamw": 1e-4, "sgd": 1e-8}
#: ... and AdamW at UNSEEN_LR where the base has not learnt the domain: its mIoU@3 on the run's held-out
#: objects before training is below UNSEEN_BELOW (stage-11 default, 200 steps of 4: CWFID field plants, 0.46
#: before, went to 0.879 / 6.3 clicks on 60 other objects at 1e-3 against 0.802 / 11.9 at 1e-4; MoNuSeg, 0.72
#: before, gained nothing from 3e-4 or 1e-3; ssTEM, CVPPP and DSB2018 score 0.80-0.88 before, and 1e-3
#: cost DSB2018 0.044 mIoU@3 and ssTEM 1.2 clicks against 1e-4)
UNSEEN_LR, UNSEEN_BELOW = 1e-3, 0.6
FINETUNE_COARSE_WEIGHT = 0.1
#: the share of a fine-tune's change that the saved model keeps (WiSE-FT): halfway back to the base
#: was the only setting measured that was worse than the default on none of ssTEM, CVPPP, DSB2018
#: (stage-7 default; keeping all of it lost DSB2018 0.7 clicks), and it had the fewest clicks overall
FINETUNE_BLEND = 0.5
#: ... unless keeping all of it does better by this much mIoU@3 on the run's own held-out objects:
#: on a domain the default never saw, halfway threw much of the gain away (CWFID field plants,
#: stage 11: 0.40 -> 0.80 kept whole, 0.74 halfway), where on the ones it knew the two were level
KEEP_ALL_MARGIN = 0.01
DEFAULT_WEIGHT_DECAY = {"adamw": 1e-2, "sgd": 5e-4}
AMP_CHOICES = ("auto", "off", "bf16", "fp16")
DEFAULT_MIN_AREA = 64


def has_not_learnt(held_out_miou: float | None) -> bool:
    """The rate rule's test (fine-tune and learner alike): a base that scores below ``UNSEEN_BELOW``
    mIoU@3 on held-out objects has not learnt their domain."""
    return held_out_miou is not None and held_out_miou < UNSEEN_BELOW


class TrainingError(RuntimeError):
    """A training run that cannot start (bad data, bad base model, a resume that does not fit)."""


def option(default: Any = MISSING, help: str = "", group: str = "training", choices=None, **extra):
    """A config field with its command-line help (``group``: the --help section it is listed in)."""
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, **extra})


@dataclass
class TrainConfig:
    """Everything a run needs; stored in the checkpoint's card and in its resume state.

    ``base``: a zoo name, a checkpoint path, or an architecture name (``iog-resnet18`` ...)
    for random initialisation. ``steps`` (optimizer steps) overrides ``epochs`` when given.
    ``batch_size`` is per process; ``accumulate`` micro-batches make one optimizer step.
    ``val_every`` (steps) validates between epoch ends too, for a curve on long epochs.
    ``freeze_bn``: None freezes the BatchNorm statistics when starting from trained weights
    (small batches would spoil them) and trains them from a random start.
    """

    out: str = option(help="checkpoint to write (and PATH.state.pt to resume from)", required=True)
    base: str = option(DEFAULT_BASE, "model to start from: a zoo name, a checkpoint path, or an architecture "
                       f"(iog-resnet18, iog-refine-resnet101 ...) for random weights (default: {DEFAULT_BASE})")
    epochs: int = option(10, "passes over the training objects (10)")
    steps: int | None = option(None, "optimizer steps (overrides --epochs)")
    lr: float | None = option(None, f"learning rate (AdamW: {DEFAULT_LR['adamw']:g}, from trained weights as from "
                              f"random weights, but {UNSEEN_LR:g} from trained weights that score below "
                              f"{UNSEEN_BELOW} mIoU@3 on the held-out objects before training, a domain they have "
                              "not learnt; SGD 1e-8 as published)")
    optimizer: str = option("adamw", "adamw (default) or sgd (the published recipe)", choices=OPTIMIZERS)
    weight_decay: float | None = option(None, "weight decay (AdamW 1e-2, SGD 5e-4)")
    momentum: float = option(0.9, "SGD momentum (0.9)")
    coarse_weight: float | None = option(None, "weight of the four coarse outputs in the loss, against the fine "
                                         "output's 1 (default: 0.1 when fine-tuning trained weights, which keeps "
                                         "them from pulling the shared trunk their way; 1, as published, from "
                                         "random weights)")
    loss: str = option("bce", "bce (as published) or nfl (each pixel's BCE weighed by (1 - p)^2 and normalised: "
                       "RITM's normalised focal loss) or bce+nfl (their mean)", choices=LOSSES)
    blend: float | None = option(None, "share of what training changed that the saved model keeps: its weights "
                                 "lie this far from the base's toward the trained ones (WiSE-FT; default when "
                                 "fine-tuning trained weights: 0.5, which keeps what the base knew, or 1 where "
                                 "that does better by 0.01 mIoU@3 on the held-out objects; 1 from random weights)")
    batch_size: int = option(4, "objects per batch, per process (4)")
    accumulate: int = option(1, "micro-batches per optimizer step (1)")
    warmup_steps: int | None = option(None, "linear warm-up steps (default: 5 %% of the run, at most 100)")
    device: str = option("auto", "auto (CUDA, MPS, CPU), cpu, cuda, cuda:1 ...")
    amp: str = option("auto", "mixed precision (auto: bf16 on CUDA, off on CPU)", choices=AMP_CHOICES)
    freeze_backbone: bool = option(False, "train the heads only (fast on a CPU)")
    freeze_bn: bool | None = option(None, "freeze the BatchNorm statistics (default: when starting from "
                                    "trained weights)")
    val_fraction: float = option(0.2, "images held out for validation (0.2)", group="data")
    val_objects: int = option(200, "at most this many validation objects (200)", group="data")
    seed: int = option(0, "seed of every random draw (0)")
    min_area: int = option(DEFAULT_MIN_AREA, f"skip objects smaller than this, in pixels ({DEFAULT_MIN_AREA})",
                           group="data")
    augment: bool = option(True, "flips, rotations and scaling of the training objects (on)")
    jitter: bool = option(True, "jitter the simulated box and inside click (on)")
    correction_prob: float = option(0.5, "share of batches with simulated corrections: the model's own "
                                    "prediction, the next click at its largest error, drawn as the predictor "
                                    "draws it (0.5; 0: the three first clicks only)")
    correction_rounds: int = option(3, "at most this many correction rounds in such a batch (3)")
    correction_maps: bool = option(False, "widen a MobileNetV2 base to also take the corrections as maps (the "
                                   "first mask and click disks, RITM's inputs); its new weights start at zero")
    correction_head: bool = option(False, "with correction_maps: also a small head that changes the logits where "
                                   "the corrections say (zero for first clicks)")
    correction_maps_only: bool = option(False, "train only what reads the correction maps (the first conv's weights on "
                                        "them, the correction head): first clicks answer exactly as the base does")
    workers: int = option(0, "data-loading processes (0)")
    checkpoint_every: int = option(0, "also save every N steps")
    val_every: int = option(0, "also validate every N steps")
    resume: bool = option(False, "continue from OUT.state.pt")
    half: bool = option(False, "store the weights as float16 (half the size)")

    def check(self) -> None:
        for name, known in (("optimizer", OPTIMIZERS), ("amp", AMP_CHOICES), ("loss", LOSSES)):
            if getattr(self, name) not in known:
                raise TrainingError(f"{name} must be one of {known}, not {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "accumulate"):
            if int(getattr(self, name)) < 1:
                raise TrainingError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise TrainingError(f"steps must be at least 1, got {self.steps}")
        if self.lr is not None and not self.lr > 0:
            raise TrainingError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.correction_prob <= 1.0:
            raise TrainingError(f"correction_prob must be in [0, 1], got {self.correction_prob}")
        for name in ("correction_maps_only", "correction_head"):
            if getattr(self, name) and not self.correction_maps:
                raise TrainingError(f"{name} is about the correction maps: it needs correction_maps")
        if self.coarse_weight is not None and not self.coarse_weight >= 0:
            raise TrainingError(f"coarse_weight must be 0 or more, got {self.coarse_weight}")
        if self.blend is not None and not 0.0 < self.blend <= 1.0:
            raise TrainingError(f"blend must be in (0, 1], got {self.blend}")
        if self.correction_rounds < 1:
            raise TrainingError(f"correction_rounds must be at least 1, got {self.correction_rounds}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # --- the command line, derived from the fields ---------------------------------------------

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, groups: dict[str, Any] | None = None) -> None:
        """An option per field (``--batch-size`` for ``batch_size``; booleans get ``--x`` and
        ``--no-x``), each in ``groups[field's group]`` when given, else in ``parser``."""
        groups = groups or {}
        for f in fields(TrainConfig):
            meta = f.metadata
            target = groups.get(meta["group"], parser)
            kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
            kind = _kind(f.type)
            if kind is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["type"] = kind
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            if f.default is MISSING:
                kwargs["required"] = True
            else:
                kwargs["default"] = f.default
            target.add_argument(_flag(f.name), **kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def to_argv(self) -> list[str]:
        """The command-line arguments that give this config (fields at their default left out)."""
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.default is not MISSING and value == f.default and type(value) is type(f.default):
                continue
            if _kind(f.type) is bool:
                if value is not None:
                    argv.append(_flag(f.name) if value else "--no-" + f.name.replace("_", "-"))
            elif value is not None:
                argv += [_flag(f.name), str(value)]
        return argv


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _kind(annotation: str) -> type:
    """The argparse type of a field's annotation (``int | None`` -> int)."""
    base = str(annotation).split("|")[0].strip()
    return {"int": int, "float": float, "str": str, "bool": bool}[base]
