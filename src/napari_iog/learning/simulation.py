"""A simulated annotation session with and without learning (``napari-iog evaluate --learn``).

A simulated user annotates the objects in file order: the three first clicks, then a click at
the centre of the largest error, until IoU 0.90 or ``max_clicks``, and commits what the model
shows. With learning, each commit joins the learner's pool, the learner trains for a fixed
budget (what runs in the background while a user clicks the next object) and the model in use
is replaced when the learner's check says so. The same objects are annotated without learning
too, with the model the session started from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn

from .. import geometry as G
from ..evaluation import IOGMethod
from ..evaluation.datasets import Instance
from ..evaluation.metrics import noc
from ..evaluation.runner import click_session
from ..training.data import as_rgb8
from .learner import Learner, LearnSettings
from .pool import learned_object

TARGET_IOU = 0.90
BLOCK = 10
COMMITS = ("shown", "true")


def annotate(method: IOGMethod, instance: Instance, max_clicks: int) -> tuple[list[float], np.ndarray, dict]:
    """Click until IoU 0.90 (or ``max_clicks``); returns the IoU after each click (the last one
    repeated up to ``max_clicks``), the mask committed and the clicks."""
    session = click_session(method, instance, max_clicks, stop_at=TARGET_IOU)
    return session.ious, session.prediction, session.clicks


def simulate(model: nn.Module, instances: Sequence[Instance], settings: LearnSettings | None = None,
             learn_seconds: float | None = 5.0, learn_steps: int | None = None, max_clicks: int = 20,
             warmup: int = 30, postprocess: bool = True, device: str = "cpu", commit: str = "shown",
             progress: Callable[[int, int, dict], None] | None = None) -> dict[str, Any]:
    """Annotate ``instances`` with and without learning; see the module's docstring. The budget
    per committed object is ``learn_steps`` training steps when given, else ``learn_seconds``.
    ``commit``: what the user commits, ``"shown"`` (the model's mask after the last click) or
    ``"true"`` (the user touches it up with the brush to the true object first)."""
    if commit not in COMMITS:
        raise ValueError(f"commit must be one of {COMMITS}, not {commit!r}")
    from ..predictor import IOGPredictor

    learner = Learner(model, settings, device)

    def method_of(network: nn.Module) -> IOGMethod:
        predictor = IOGPredictor(network, device=device, precision="float32", warmup=False, backend="torch")
        return IOGMethod(predictor, postprocess=postprocess)

    fixed, learning = method_of(learner.base), method_of(learner.in_use)
    rows = []
    for index, instance in enumerate(instances):
        without, _, _ = annotate(fixed, instance, max_clicks)
        with_, committed, clicks = annotate(learning, instance, max_clicks)
        if commit == "true":
            committed = instance.mask.astype(bool)
        rgb = as_rgb8(instance.image)
        whole = G.Box(0, 0, rgb.shape[0] - 1, rgb.shape[1] - 1)
        obj = learned_object(index, lambda region, rgb=rgb: G.crop_padded(rgb, region), rgb.shape[:2], whole, committed,
                             clicks)
        started = time.perf_counter()
        steps = 0
        if obj is not None:
            learner.add(obj)
            steps = learner.train(steps=learn_steps, seconds=None if learn_steps else learn_seconds)
        report = learner.check()
        if report.swapped:
            learning = method_of(learner.in_use)
        rows.append({"name": instance.name, "with": with_, "without": without, "steps": steps,
                     "learn_seconds": time.perf_counter() - started, "model_version": report.version,
                     "report": report.to_dict()})
        if progress:
            progress(index + 1, len(instances), rows[-1])
    return {"max_clicks": max_clicks, "warmup": warmup, "commit": commit, "settings": learner.settings.__dict__,
            "learn_seconds": learn_seconds, "learn_steps": learn_steps, **summarise(rows, max_clicks, warmup),
            "objects": rows}


def _figures(rows: list[dict], which: str, max_clicks: int) -> dict[str, Any]:
    if not rows:
        return {"objects": 0, "miou@3": None, "noc@90": None}
    return {"objects": len(rows), "miou@3": float(np.mean([r[which][2] for r in rows])),
            "noc@90": float(np.mean([noc(r[which], TARGET_IOU, max_clicks) for r in rows]))}


def summarise(rows: list[dict], max_clicks: int, warmup: int) -> dict[str, Any]:
    """Per block of ten objects and for all objects after the first ``warmup``: ``"with"`` and
    ``"without"`` learning, each ``"miou@3"`` and ``"noc@90"``."""
    blocks = [{"objects": [start, min(start + BLOCK, len(rows))],
               "with": _figures(rows[start:start + BLOCK], "with", max_clicks),
               "without": _figures(rows[start:start + BLOCK], "without", max_clicks)}
              for start in range(0, len(rows), BLOCK)]
    after = rows[warmup:]
    return {"blocks": blocks,
            "after_warmup": {"with": _figures(after, "with", max_clicks),
                             "without": _figures(after, "without", max_clicks)},
            "swaps": max((r["model_version"] for r in rows), default=0),
            "train_seconds_per_object": float(np.mean([r["learn_seconds"] for r in rows])) if rows else 0.0}
