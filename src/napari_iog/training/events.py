"""What a training run reports while it runs: typed events, the same in the trainer, the CLI and
the fine-tune widget (which reads them from a subprocess as JSON lines).

``train(on_event=...)`` receives these objects; ``napari-iog train --progress json`` prints
:func:`to_json` of each; :func:`from_json` reads one back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

#: the exit status of ``napari-iog train`` / ``predict`` when stopped early (SIGINT, SIGTERM);
#: what was done is saved
CANCELLED_EXIT = 3


@dataclass
class TrainingStarted:
    kind: ClassVar[str] = "start"
    arch: str
    device: str
    world_size: int
    objects: int
    data: dict[str, Any]
    validation_objects: int
    total_steps: int
    epochs: int
    steps_per_epoch: int
    resumed_from: int
    amp: str
    lr: float
    optimizer: str


@dataclass
class StepDone:
    kind: ClassVar[str] = "step"
    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    steps_per_s: float
    eta_s: float | None


@dataclass
class Validated:
    kind: ClassVar[str] = "validation"
    step: int
    epoch: int
    miou: float | None


@dataclass
class CheckpointSaved:
    kind: ClassVar[str] = "checkpoint"
    path: str
    step: int
    status: str


@dataclass
class TrainingEnded:
    """The run's summary (also what :func:`~napari_iog.training.train` returns, as a dict)."""

    kind: ClassVar[str] = "end"
    status: str                     # "complete" or "cancelled at step N of M"
    out: str
    arch: str
    steps: int
    total_steps: int
    resumed_from: int = 0
    objects: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    validation_objects: int = 0
    val_miou_before: float | None = None
    val_miou_after: float | None = None
    val_history: list = field(default_factory=list)
    final_loss: float | None = None
    seconds: float = 0.0
    world_size: int = 1
    rank_digests: list[str] = field(default_factory=list)
    blend: float = 1.0              # the share of training's change the saved model keeps
    blend_scores: dict[str, float | None] = field(default_factory=dict)   # held-out mIoU@3 by share, when chosen
    lr: float | None = None         # the rate the run trained at (a fine-tune's by its held-out score before)

    @property
    def blend_said(self) -> str:
        return blend_in_words(self.blend, self.blend_scores)

    @property
    def complete(self) -> bool:
        return self.status == "complete"


TrainingEvent = TrainingStarted | StepDone | Validated | CheckpointSaved | TrainingEnded
KINDS: dict[str, type] = {cls.kind: cls for cls in (TrainingStarted, StepDone, Validated, CheckpointSaved,
                                                     TrainingEnded)}


def to_json(event: TrainingEvent) -> str:
    """One line of JSON: ``{"event": kind, ...fields}``."""
    return json.dumps({"event": event.kind, **asdict(event)})


def from_json(line: str | dict[str, Any]) -> TrainingEvent:
    """An event from :func:`to_json`'s line (or its parsed dict); a ValueError if it is none."""
    data = json.loads(line) if isinstance(line, str) else dict(line)
    kind = data.pop("event", None)
    if kind not in KINDS:
        raise ValueError(f"not a training event: {str(line)[:80]!r}")
    return KINDS[kind](**data)


def blend_in_words(blend: float, scores: dict[str, float | None]) -> str:
    """What the end of a fine-tune chose to save, in words, where it chose (held-out objects given)."""
    if len(scores) < 2 or None in scores.values():
        return ""
    halfway = next(v for k, v in scores.items() if k != "1")
    if blend == 1.0:
        return f" (all of training's change kept: halfway back to the base scored {halfway:.3f})"
    return f" (saved halfway back to the base: all of the change scored {scores['1']:.3f})"
