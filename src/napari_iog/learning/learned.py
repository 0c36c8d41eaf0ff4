"""A model learned while annotating, put in use and saved: the predictor with the learner's
weights, its model card, and where it is saved by default (both model lists find it there)."""

from __future__ import annotations

import copy
import datetime
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .. import zoo
from .learner import LearnReport, LearnSettings


def learned_predictor(base, state: dict[str, torch.Tensor], report: LearnReport):
    """A predictor like ``base`` whose network has the learner's weights ``state``."""
    from ..predictor import IOGPredictor

    network = copy.deepcopy(base.network)
    network.load_state_dict(state)
    network.card = {**base.card, "learned": report.to_dict()}
    return IOGPredictor(network, device=base.device, precision=base.precision, threshold=base.threshold,
                        backend="torch")


def learned_model_path(base_name: str) -> Path:
    """A new file in the cache's fine-tuned folder for a model learned from ``base_name``."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(base_name)).stem).strip("-") or "model"
    return zoo.finetuned_dir() / f"{name}-learned-{stamp}.pt"


def learned_card(base_name: str, base_card: dict[str, Any], report: LearnReport,
                 settings: LearnSettings) -> dict[str, Any]:
    """The model card of a model learned while annotating: its base, what it learned from, the
    figures that put it in use."""
    return {"base": str(base_name), "base_card": {k: base_card[k] for k in ("arch", "trained_on", "data")
                                                  if k in base_card},
            "learned_while_annotating": {"objects": report.learned_from, "held_out_objects": report.held_out,
                                         "miou@3_base": report.base_miou, "miou@3_learned": report.in_use_miou,
                                         "blend": report.in_use_blend, "steps": report.steps,
                                         "settings": asdict(settings)}}
