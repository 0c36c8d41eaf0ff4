"""The corrections as a network with ``correction_maps`` reads them (RITM's inputs, after the five).

Channel 5 is the **first mask**: the network's probability for the object's first clicks (box
and inside click), 0..255 in the frame. Channels 6 and 7 are the positive and negative
corrections as disks of :data:`DISK_RADIUS` frame pixels (255 inside). With no correction the
three are zero: a first click is the plain IOG input. The corrections are still drawn into the
guidance maps as well (``geometry.guidance_with_corrections``), so a network widened from a
plain one (zero weights on these channels) starts by answering exactly as before.

The first mask, not the mask before the last click: it depends on the clicks only (not on the
order they came in), so the predictor stays a function of its prompt, a server needs nothing
but the prompt, and the annotator's undo gives back the same mask. The predictor and training
both make these maps here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import numpy as np
import torch

from . import geometry as G
from .geometry import FRAME
from .models.mobilenet import CORRECTION_CHANNELS

#: radius of a correction's disk in the 512 frame (5 px at the default's 320 px inner size;
#: RITM draws radius 5 at its 320-400 px input)
DISK_RADIUS = 8.0


def takes_correction_maps(model) -> bool:
    """Whether ``model`` (a network) reads the correction maps."""
    return bool(getattr(getattr(model, "config", None), "correction_maps", False))


def disks(points: np.ndarray, size: int = FRAME, radius: float = DISK_RADIUS) -> np.ndarray:
    """0/255 disks around ``points`` (frame (row, col)), float32 ``[size, size]``."""
    out = np.zeros((size, size), np.float32)
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if not len(points):
        return out
    rows = np.arange(size, dtype=np.float64)[:, None, None]
    cols = np.arange(size, dtype=np.float64)[None, :, None]
    near = ((rows - points[:, 0]) ** 2 + (cols - points[:, 1]) ** 2 <= radius * radius).any(-1)
    out[near] = 255.0
    return out


def correction_maps(first_probability: torch.Tensor | None, positive: np.ndarray, negative: np.ndarray,
                    size: int = FRAME) -> torch.Tensor:
    """The three maps ``[3, size, size]``: the first mask (0..1 -> 0..255) and the disks of the
    positive and negative corrections (frame coordinates); zeros without a correction."""
    positive = np.asarray(positive, np.float64).reshape(-1, 2)
    negative = np.asarray(negative, np.float64).reshape(-1, 2)
    out = torch.zeros(CORRECTION_CHANNELS, size, size)
    if not len(positive) and not len(negative):
        return out
    if first_probability is not None:
        out[0] = 255.0 * first_probability.float().reshape(size, size).cpu()
    out[1] = torch.from_numpy(disks(positive, size))
    out[2] = torch.from_numpy(disks(negative, size))
    return out


def correction_sizes(network, crops) -> dict[str, torch.Tensor]:
    """For a network whose corrections run larger (``correction_input_size``), the keyword that
    says per crop whether its correction should (``{"larger_corrections": ...}``; else ``{}``):
    where the first clicks' size would shrink the crop. A smaller crop is enlarged to the frame
    already: a larger pass sees no more of it, only another scale, and on small objects (nuclei,
    cell profiles, leaves) that cost clicks (docs/benchmarks.md, tenth round)."""
    return correction_sizes_by_side(network, [max(crop.height, crop.width) for crop in crops])


def correction_sizes_by_side(network, crop_sides) -> dict[str, torch.Tensor]:
    """:func:`correction_sizes` from each crop's longer side in image pixels (training's
    ``batch["crop_side"]``, so a network learns its corrections at the size they will run at)."""
    network = getattr(network, "module", network)      # DistributedDataParallel
    config = getattr(network, "config", None)
    if getattr(config, "correction_input_size", None) is None:
        return {}
    return {"larger_corrections": torch.as_tensor(crop_sides).reshape(-1) > config.input_size}


def no_correction_maps(batch: int, size: int = FRAME, like: torch.Tensor | None = None) -> torch.Tensor:
    """``[batch, 3, size, size]`` zeros: the maps of first clicks."""
    if like is None:
        return torch.zeros(batch, CORRECTION_CHANNELS, size, size)
    return like.new_zeros(batch, CORRECTION_CHANNELS, size, size)


class FirstMasks:
    """The first masks of the newest objects (frame probability), by object: a correction
    needs its object's first mask, which the first click made moments before."""

    def __init__(self, size: int = 16):
        self._masks: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._size = size

    def get(self, key: Hashable) -> torch.Tensor | None:
        mask = self._masks.get(key)
        if mask is not None:
            self._masks.move_to_end(key)
        return mask

    def put(self, key: Hashable, probability: torch.Tensor) -> None:
        self._masks[key] = probability.detach().float().cpu()
        self._masks.move_to_end(key)
        while len(self._masks) > self._size:
            self._masks.popitem(last=False)

    def clear(self) -> None:
        self._masks.clear()


def complete_inputs(inputs, first_masks: FirstMasks, forward, batch_size: int) -> None:
    """Give each of the predictor's ``inputs`` (``NetworkInput``: ``x`` of five channels, its
    ``prompt``, its object's ``cache_key``) its three correction maps, in place. A correction
    whose object has no first mask yet gets one first, from the first clicks alone, in batches
    through ``forward`` (``[B, 8, H, W]`` -> logits)."""
    corrected = [item for item in inputs if item.prompt.positive or item.prompt.negative]
    missing = {item.cache_key: item for item in corrected if first_masks.get(item.cache_key) is None}
    todo = list(missing.values())
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        first = []
        for item in chunk:
            prompt = item.prompt
            maps = G.first_click_maps(prompt.crop, prompt.box, prompt.inside)
            first.append(torch.cat([item.x[:3], torch.from_numpy(maps), no_correction_maps(1)[0]]))
        for item, logit in zip(chunk, forward(torch.stack(first))):
            first_masks.put(item.cache_key, torch.sigmoid(logit.float()))
    for item in inputs:
        prompt = item.prompt
        first = first_masks.get(item.cache_key) if (prompt.positive or prompt.negative) else None
        item.x = torch.cat([item.x, correction_maps(first, G.frame_points(prompt.positive, prompt.crop),
                                                    G.frame_points(prompt.negative, prompt.crop))])


def remember_first_masks(inputs, logits, first_masks: FirstMasks) -> None:
    """Keep the first mask of each object whose first clicks ``inputs`` were (frame probability)."""
    for item, logit in zip(inputs, logits):
        if not (item.prompt.positive or item.prompt.negative):
            first_masks.put(item.cache_key, torch.sigmoid(logit.float()))
