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
from ..correction_maps import (
    correction_maps,
    correction_sizes_by_side,
    no_correction_maps,
    takes_correction_maps,
)
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
    with the outside corners, both maps scaled together), and for a network that takes them,
    into the correction maps too (:mod:`napari_iog.correction_maps`: the first mask, made from
    the first clicks before any correction, and the disks). Needs ``batch["inside"]`` [B, 1, 2]
    and ``batch["outside"]`` [B, 4, 2] (frame coordinates, from
    :class:`~napari_iog.training.data.InstanceDataset`). Returns the new input ``x``;
    1..``max_rounds`` rounds, after a random extra click in :data:`RANDOM_CLICK_PROB` of the samples."""
    x = batch["x"][:, :5].clone()
    target, ignore = _truth(batch)
    inside, outside = batch["inside"].cpu().numpy(), batch["outside"].cpu().numpy()
    clicks: list[dict[bool, list]] = [{True: [], False: []} for _ in range(len(target))]   # positive? -> points
    modes = _modes(model)
    model.eval()
    first = None
    if takes_correction_maps(model):
        with torch.no_grad():
            first = torch.sigmoid(model(append_correction_maps(x, None, clicks)).float())[:, 0]

    def current_input() -> torch.Tensor:
        return x if first is None else append_correction_maps(x, first, clicks)

    changed = set()
    for i in range(len(target)):
        extra = _random_click(target[i], ignore[i], rng) if rng.random() < RANDOM_CLICK_PROB else None
        if extra is not None:
            clicks[i][extra[1]].append(extra[0])
            changed.add(i)
    _redraw(x, inside, outside, clicks, changed)
    sizes = batch_sizes(model, batch)
    with torch.no_grad():
        for _ in range(_rounds(rng, max_rounds)):
            predicted = (model(current_input(), **sizes) > 0)[:, 0].cpu().numpy()
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
    return current_input()


def append_correction_maps(x: torch.Tensor, first: torch.Tensor | None, clicks: list | None) -> torch.Tensor:
    """``x`` (five channels) with the correction maps of ``clicks`` (``{True: positives, False:
    negatives}`` per sample, frame coordinates) and ``first`` (the first masks, 0..1); with
    ``first`` None, the empty maps of first clicks."""
    if first is None:
        return torch.cat([x, no_correction_maps(len(x), x.shape[-1], like=x)], 1)
    maps = [correction_maps(first[i], np.asarray(clicks[i][True], np.float64), np.asarray(clicks[i][False], np.float64),
                            x.shape[-1]) for i in range(len(x))]
    return torch.cat([x, torch.stack(maps).to(x.device, x.dtype)], 1)


def network_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A batch's five-channel ``x`` as ``model`` reads it: with empty correction maps (first
    clicks) for a network that takes them, else unchanged."""
    model = getattr(model, "module", model)      # DistributedDataParallel
    if takes_correction_maps(model) and x.shape[1] == 5:
        return append_correction_maps(x, None, None)
    return x


def batch_sizes(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keyword that runs each sample's correction at the size the predictor would run it
    (``correction_maps.correction_sizes``; ``{}`` for a network without a
    ``correction_input_size``, or a batch without crop sides)."""
    if "crop_side" not in batch:
        return {}
    return correction_sizes_by_side(model, batch["crop_side"])


def simulate_corrections(model: nn.Module, batch: dict[str, torch.Tensor], rng: np.random.Generator,
                         max_rounds: int = 3) -> None:
    """Put simulated corrections into ``batch``: the click maps of a refinement network
    (:func:`add_corrections`), the guidance maps of a plain one (:func:`add_guidance_corrections`)."""
    if isinstance(model, IOGRefineNetwork):
        batch["clicks"] = add_corrections(model, batch, rng, max_rounds)
    else:
        batch["x"] = add_guidance_corrections(model, batch, rng, max_rounds)


def correction_map_weights(model: nn.Module) -> nn.Parameter:
    """Leave only what reads the correction maps to learn (the first conv's weights on them,
    the correction head): every other parameter stops its gradients, and the first conv's
    gradients on the five plain channels are zeroed, so that first clicks (whose correction
    maps are zero) answer as before."""
    first = model.backbone.features[0][0].weight
    plain = model.config.in_channels
    head = set() if model.correction_head is None else {id(p) for p in model.correction_head.parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(parameter is first or id(parameter) in head)

    def only_correction_maps(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:, :plain] = 0
        return grad

    first.register_hook(only_correction_maps)
    return first


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
