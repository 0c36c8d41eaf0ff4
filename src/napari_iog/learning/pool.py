"""The objects a user committed, kept for learning: each one's image region (RGB as the network
reads it), the mask that was written, and the clicks that made it.

The pool splits itself in two: objects a model may learn from, and the newest corrected objects
no model has learned from yet (:meth:`ObjectPool.held_out`), on which a learned model must do
better than the model in use before it replaces it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import geometry as G
from ..training.data import Pair

#: context kept around an object beyond the network's crop, as a share of its size: room for
#: the training augmentation's rotation and scaling
CONTEXT = 0.25


@dataclass
class LearnedObject:
    """One committed object: ``rgb`` (H, W, 3) uint8 around it, ``mask`` (H, W) bool in the
    same region, ``clicks`` (corners, inside, positive, negative) in region coordinates."""

    key: Hashable
    rgb: np.ndarray
    mask: np.ndarray
    clicks: dict[str, list] = field(default_factory=dict)
    trained: bool = False           # a model (in use or being trained) has learned from it

    @property
    def corrected(self) -> bool:
        """Did the user correct the first prediction (a click after the first three)?"""
        return bool(self.clicks.get("positive") or self.clicks.get("negative"))

    def pair(self) -> Pair:
        return Pair(f"object {self.key}", self.rgb, self.mask.astype(np.int32))


def object_region(window: G.Box, mask: np.ndarray) -> G.Box | None:
    """The region to keep for an object whose ``mask`` lies in ``window`` (image coordinates)."""
    box = G.mask_box(mask)
    if box is None:
        return None
    box = G.Box(box.r0 + window.r0, box.c0 + window.c0, box.r1 + window.r0, box.c1 + window.c0)
    return box.grow(G.RELAX + int(CONTEXT * max(box.height, box.width)) + 2)


def learned_object(key: Hashable, read_rgb, plane_shape: Sequence[int], window: G.Box, mask: np.ndarray,
                   clicks: dict[str, Any] | None = None) -> LearnedObject | None:
    """A committed object as the pool keeps it. ``read_rgb(region)``: the image's RGB 0..255 in
    ``region`` (zero outside the image), as the predictor reads it; ``mask``: the object's
    pixels within ``window``; ``clicks`` in image coordinates. None for an empty mask."""
    region = object_region(window, mask)
    if region is None:
        return None
    full = np.zeros((region.height, region.width), bool)
    visible = window.clip(plane_shape)
    overlap = G.Box(max(visible.r0, region.r0), max(visible.c0, region.c0),
                    min(visible.r1, region.r1), min(visible.c1, region.c1))
    full[overlap.slices_within(region)] = mask[overlap.slices_within(window)]
    rgb = np.clip(np.rint(np.asarray(read_rgb(region), np.float32)), 0, 255).astype(np.uint8)
    shifted = {role: [(float(r) - region.r0, float(c) - region.c0) for r, c in points]
               for role, points in (clicks or {}).items()}
    return LearnedObject(key, rgb, full, shifted)


class ObjectPool:
    """Committed objects in commit order, by key (an undone commit leaves with its key)."""

    def __init__(self, max_held_out: int = 10, min_held_out: int = 2):
        self._objects: OrderedDict[Hashable, LearnedObject] = OrderedDict()
        self.max_held_out, self.min_held_out = max_held_out, min_held_out

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, key) -> bool:
        return key in self._objects

    def add(self, obj: LearnedObject) -> None:
        """A new object, or a new version of one (its labels fixed by hand): the newest, and
        still counted as learned from if the old one was."""
        old = self._objects.pop(obj.key, None)
        obj.trained = obj.trained or (old is not None and old.trained)
        self._objects[obj.key] = obj

    def remove(self, key: Hashable) -> bool:
        return self._objects.pop(key, None) is not None

    def objects(self) -> list[LearnedObject]:
        return list(self._objects.values())

    def held_out(self) -> list[LearnedObject]:
        """The newest corrected objects no model has learned from: a quarter of the corrected
        ones, at least ``min_held_out`` (when there are that many), at most ``max_held_out``.

        Only corrected objects are held out: an object the user committed as first predicted is
        the model in use's own output, on which no other model can score higher; where the user
        corrected it, a model that learned may get right at once what the user had to fix."""
        corrected = [o for o in self._objects.values() if o.corrected]
        fresh = [o for o in corrected if not o.trained]
        wanted = min(self.max_held_out, max(self.min_held_out, len(corrected) // 4))
        return fresh[-wanted:] if fresh else []

    def learnable(self) -> list[LearnedObject]:
        """Everything but the held-out objects."""
        held = {id(o) for o in self.held_out()}
        return [o for o in self._objects.values() if id(o) not in held]
