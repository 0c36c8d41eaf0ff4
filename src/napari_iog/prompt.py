"""The validated prompt: what the user clicked, checked once against the image, then passed down.

A :class:`Prompt` is IOG's (two box corners, inside clicks, positive and negative corrections);
an :class:`ExtremePrompt` is DEXTR's four extreme points. Both are made by ``check`` at the
edge (the session, the batch reader, the predictor's keyword API) and carry pixels, the box
and the crop, so nothing below them validates again. A click that cannot be used raises a
:class:`~napari_iog.geometry.ClickError` that names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import geometry as G

Pixel = tuple[int, int]
PROMPT_KEYS = ("corners", "inside", "positive", "negative")


def points_of(value, what: str) -> list[Sequence[float]]:
    """One (row, col) or a list of them -> a list."""
    if value is None:
        return []
    arr = np.asarray(value, dtype=object)
    if arr.ndim == 1 and len(arr) == 2 and not isinstance(arr[0], (list, tuple, np.ndarray)):
        return [tuple(value)]
    try:
        return [tuple(p) for p in value]
    except TypeError as err:
        raise G.ClickError(f"{what} must be a (row, col) pair or a list of them, got {value!r}") from err


@dataclass(frozen=True)
class Prompt:
    """IOG clicks on an image of ``image_shape`` (rows, cols), as pixels."""

    image_shape: tuple[int, int]
    box: G.Box
    inside: tuple[Pixel, ...]
    positive: tuple[Pixel, ...] = ()
    negative: tuple[Pixel, ...] = ()

    @property
    def crop(self) -> G.Box:
        """The relaxed crop the network sees: the box grown by ``RELAX`` px, may leave the image."""
        return self.box.grow(G.RELAX)

    @property
    def corners(self) -> tuple[Pixel, Pixel]:
        return (self.box.r0, self.box.c0), (self.box.r1, self.box.c1)

    @classmethod
    def check(cls, image_shape: Sequence[int], corners, inside, positive=(), negative=()) -> Prompt:
        """Validate clicks against an image of ``image_shape``: the box must have area, the
        inside clicks lie in the box, corrections in the crop."""
        shape = (int(image_shape[0]), int(image_shape[1]))
        box = G.box_from_corners(points_of(corners, "corners"), shape)
        crop = box.grow(G.RELAX)
        inside_px = tuple(G.pixel(p, shape, "inside click") for p in points_of(inside, "inside"))
        if not inside_px:
            raise G.ClickError("at least one inside click is needed")
        for p in inside_px:
            if not box.contains(p):
                raise G.ClickError(f"the inside click at (row {p[0]}, col {p[1]}) is outside the box "
                                   f"rows {box.r0}..{box.r1}, cols {box.c0}..{box.c1}")
        corrections = {}
        for role, value in (("positive", positive), ("negative", negative)):
            pts = tuple(G.pixel(p, shape, f"{role} click") for p in points_of(value, role))
            for p in pts:
                if not crop.contains(p):
                    raise G.ClickError(
                        f"the {role} click at (row {p[0]}, col {p[1]}) is outside the region the network "
                        f"sees (the box grown by {G.RELAX} px); draw a larger box instead")
            corrections[role] = pts
        return cls(shape, box, inside_px, corrections["positive"], corrections["negative"])

    @classmethod
    def from_mapping(cls, image_shape: Sequence[int], prompt: Mapping[str, Any]) -> Prompt:
        """``{"corners": ..., "inside": ..., "positive": ..., "negative": ...}`` -> a Prompt."""
        unknown = set(prompt) - set(PROMPT_KEYS)
        if unknown:
            raise ValueError(f"unknown prompt entries {sorted(unknown)}: use {', '.join(PROMPT_KEYS)}")
        if "corners" not in prompt or "inside" not in prompt:
            raise G.ClickError("a prompt needs two corner clicks and at least one inside click")
        return cls.check(image_shape, **prompt)

    def on(self, image_shape: Sequence[int]) -> Prompt:
        """This prompt, refused with a clear error if it was checked against another image size."""
        return _same_size(self, image_shape)

    def clicks(self) -> dict[str, list[Pixel]]:
        """The clicks as used, by role (the box's corners sorted)."""
        return {"corners": list(self.corners), "inside": list(self.inside),
                "positive": list(self.positive), "negative": list(self.negative)}


@dataclass(frozen=True)
class ExtremePrompt:
    """DEXTR's four extreme points (left, right, top, bottom in any order), as pixels."""

    image_shape: tuple[int, int]
    points: tuple[Pixel, Pixel, Pixel, Pixel]
    box: G.Box

    @property
    def crop(self) -> G.Box:
        return self.box.grow(G.DEXTR_RELAX)

    @classmethod
    def check(cls, image_shape: Sequence[int], points) -> ExtremePrompt:
        shape = (int(image_shape[0]), int(image_shape[1]))
        pts = points_of(points, "extreme points")
        if len(pts) != 4:
            raise G.ClickError(f"DEXTR needs exactly four extreme points, got {len(pts)}")
        pixels = tuple(G.pixel(p, shape, "extreme point") for p in pts)
        return cls(shape, pixels, G.box_from_points(np.array(pixels, np.float64), shape, "extreme point"))

    def on(self, image_shape: Sequence[int]) -> ExtremePrompt:
        return _same_size(self, image_shape)

    def clicks(self) -> dict[str, list[Pixel]]:
        return {"extreme": list(self.points)}


def _same_size(prompt, image_shape: Sequence[int]):
    if tuple(int(n) for n in image_shape[:2]) != prompt.image_shape:
        (h, w), (rows, cols) = prompt.image_shape, image_shape[:2]
        raise G.ClickError(f"the clicks were checked on an image of {h} x {w} pixels, this image has {rows} x {cols}")
    return prompt

