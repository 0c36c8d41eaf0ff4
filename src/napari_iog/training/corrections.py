"""Simulated correction clicks for training (iterative training, as RITM and SimpleClick do):
run the model on the batch, put each sample's next click at its largest error exactly as the
simulated user of the evaluation does (:func:`~napari_iog.evaluation.next_click`), draw it
into the network's input exactly as the predictor draws a correction, and repeat; the
training step then learns from the last input. A network trained so has seen corrections."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import geometry as G
from ..evaluation import next_click
from ..models import IOGRefineNetwork

#: chance that a sample also gets a random extra click before the rounds (positive inside the
#: object, or negative in the crop outside it): clicks a user places anywhere, not only at the
#: centre of the largest error
RANDOM_CLICK_PROB = 0.3


def _rounds(rng: np.random.Generator, max_rounds: int) -> int:
    return int(rng.integers(1, max_rounds + 1))


def add_corrections(model: nn.Module, batch: dict[str, torch.Tensor], rng: np.random.Generator,
                    max_rounds: int = 3) -> torch.Tensor:
    """Refinement models: corrections go to the click maps ``batch["clicks"]`` (returned), the
    backbone keeps its first-pass input; 1..``max_rounds`` rounds."""
    clicks = batch["clicks"].clone()
    target, ignore = _truth(batch)
    modes = _modes(model)
    model.eval()
    with torch.no_grad():
        features = model.encode(batch["x"])
        for _ in range(_rounds(rng, max_rounds)):
            predicted = (model.decode(features, clicks) > 0)[:, 0].cpu().numpy()
            maps = clicks.cpu().numpy()
            for i in range(len(target)):
                click = next_click(predicted[i], target[i], ignore[i])
                if click is None:
                    continue
                point, positive = click
                point = np.array([point], dtype=np.float64)
                none = np.zeros((0, 2))
                maps[i] = G.add_clicks(maps[i], point if positive else none, none if positive else point,
                                       quantise=True)
            clicks = torch.from_numpy(maps).to(batch["x"].device)
    _restore(model, modes)
    return clicks


def add_guidance_corrections(model: nn.Module, batch: dict[str, torch.Tensor], rng: np.random.Generator,
                             max_rounds: int = 3) -> torch.Tensor:
    """Plain IOG networks: a correction is drawn as the predictor draws it
    (``G.guidance_with_corrections``: a positive click with the inside click, a negative one
    with the outside corners, both maps scaled together). Needs ``batch["inside"]`` [B, 1, 2] and ``batch["outside"]``
    [B, 4, 2] (frame coordinates, from :class:`~napari_iog.training.data.InstanceDataset`).
    Returns the new input ``x``; 1..``max_rounds`` rounds, after a random extra click in
    :data:`RANDOM_CLICK_PROB` of the samples."""
    x = batch["x"].clone()
    target, ignore = _truth(batch)
    inside, outside = batch["inside"].cpu().numpy(), batch["outside"].cpu().numpy()
    clicks: list[dict[bool, list]] = [{True: [], False: []} for _ in range(len(target))]   # positive? -> points
    changed = set()
    for i in range(len(target)):
        extra = _random_click(target[i], ignore[i], rng) if rng.random() < RANDOM_CLICK_PROB else None
        if extra is not None:
            clicks[i][extra[1]].append(extra[0])
            changed.add(i)
    _redraw(x, inside, outside, clicks, changed)
    modes = _modes(model)
    model.eval()
    with torch.no_grad():
        for _ in range(_rounds(rng, max_rounds)):
            predicted = (model(x) > 0)[:, 0].cpu().numpy()
            changed = set()
            for i in range(len(target)):
                click = next_click(predicted[i], target[i], ignore[i])
                if click is not None:
                    clicks[i][click[1]].append(click[0])
                    changed.add(i)
            if not changed:
                break
            _redraw(x, inside, outside, clicks, changed)
    _restore(model, modes)
    return x


def simulate_corrections(model: nn.Module, batch: dict[str, torch.Tensor], rng: np.random.Generator,
                         max_rounds: int = 3) -> None:
    """Put simulated corrections into ``batch``: the click maps of a refinement network
    (:func:`add_corrections`), the guidance maps of a plain one (:func:`add_guidance_corrections`)."""
    if isinstance(model, IOGRefineNetwork):
        batch["clicks"] = add_corrections(model, batch, rng, max_rounds)
    else:
        batch["x"] = add_guidance_corrections(model, batch, rng, max_rounds)


def _modes(model: nn.Module) -> list[bool]:
    """Each module's training flag: frozen BatchNorm layers stay in eval mode afterwards."""
    return [m.training for m in model.modules()]


def _restore(model: nn.Module, modes: list[bool]) -> None:
    for module, training in zip(model.modules(), modes):
        module.training = training


def _truth(batch: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    target = batch["target"][:, 0].cpu().numpy()
    return target > 0.5, target < 0          # -1: a pixel whose class is unknown


def _redraw(x: torch.Tensor, inside: np.ndarray, outside: np.ndarray, clicks: list, which: set[int]) -> None:
    for i in which:
        maps = G.guidance_with_corrections(inside[i], outside[i], clicks[i][True], clicks[i][False])
        x[i, 3:5] = torch.from_numpy(maps).to(x.device, x.dtype)


def _random_click(truth: np.ndarray, ignore: np.ndarray, rng: np.random.Generator):
    """A positive click well inside the object, or a negative one outside it (both off the
    boundary by a few pixels, as a user clicks), or None when there is no room."""
    from scipy import ndimage

    positive = bool(rng.random() < 0.5)
    region = truth if positive else ~truth
    room = ndimage.binary_erosion(region & ~ignore, iterations=8)
    candidates = np.flatnonzero(room)
    if candidates.size == 0:
        return None
    r, c = np.unravel_index(int(rng.choice(candidates)), truth.shape)
    return (int(r), int(c)), positive
