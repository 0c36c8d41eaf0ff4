"""Geometry of the IOG protocol: clicks -> box -> relaxed crop -> 512 frame -> heatmaps, and back.

Every coordinate convention lives here. Points are ``(row, col)`` in the image's pixel
(data) coordinates, pixel ``i`` covering ``[i - 0.5, i + 0.5)`` as in napari. Boxes are
inclusive pixel ranges. The constants are the published test protocol's
(``shared/spec/IOG-SPEC.md``).

The resizes are written in torch rather than OpenCV/scikit-image: torch's bilinear and
bicubic (``align_corners=False``, no antialiasing, cubic coefficient -0.75, clamped borders)
are OpenCV's INTER_LINEAR and INTER_CUBIC, and they run on the GPU when the model does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

FRAME = 512          # the network's input size
RELAX = 30           # crop = box grown by this many pixels on every side (image resolution)
OUTSIDE_PAD = 10     # outside guidance: box corners moved outwards by this much (512 frame)
SIGMA = 10.0         # heatmap width (full width at half maximum, 512 frame)
DEXTR_RELAX = 50

class ClickError(ValueError):
    """A click or box that cannot be used (outside the image, zero area ...)."""


class BoxTooSmall(ClickError):
    """Corners that span fewer than 2 x 2 pixels (``height``, ``width``), said of clicks; a box
    read from a file rewords it (``batch``)."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        super().__init__(f"the corner clicks span a box only {height} x {width} pixels (rows x cols): a box needs "
                         "at least 2 x 2; click two opposite corners around the object")


@dataclass(frozen=True)
class Box:
    """An inclusive pixel box: rows ``r0..r1``, columns ``c0..c1``."""

    r0: int
    c0: int
    r1: int
    c1: int

    @property
    def height(self) -> int:
        return self.r1 - self.r0 + 1

    @property
    def width(self) -> int:
        return self.c1 - self.c0 + 1

    def grow(self, pixels: int) -> Box:
        return Box(self.r0 - pixels, self.c0 - pixels, self.r1 + pixels, self.c1 + pixels)

    def clip(self, shape: Sequence[int]) -> Box:
        return Box(max(self.r0, 0), max(self.c0, 0), min(self.r1, shape[0] - 1), min(self.c1, shape[1] - 1))

    def contains(self, point: Sequence[int]) -> bool:
        return self.r0 <= point[0] <= self.r1 and self.c0 <= point[1] <= self.c1

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.r0, self.c0, self.r1, self.c1)

    def slices(self) -> tuple[slice, slice]:
        return slice(self.r0, self.r1 + 1), slice(self.c0, self.c1 + 1)

    def slices_within(self, outer: Box) -> tuple[slice, slice]:
        """Where this box lies in an array that covers ``outer`` (e.g. a window in its crop)."""
        return (slice(self.r0 - outer.r0, self.r1 - outer.r0 + 1),
                slice(self.c0 - outer.c0, self.c1 - outer.c0 + 1))


def pixel(point: Sequence[float], shape: Sequence[int], what: str = "click") -> tuple[int, int]:
    """The pixel a (row, col) point falls in; a :class:`ClickError` if it is off the image."""
    try:
        r, c = (float(v) for v in point)
    except (TypeError, ValueError) as err:
        raise ClickError(f"{what} must be a (row, col) pair of numbers, got {point!r}") from err
    if not (math.isfinite(r) and math.isfinite(c)):
        raise ClickError(f"{what} {point!r} is not a finite coordinate")
    ri, ci = int(math.floor(r + 0.5)), int(math.floor(c + 0.5))
    if not (0 <= ri < shape[0] and 0 <= ci < shape[1]):
        raise ClickError(
            f"{what} at (row {r:g}, col {c:g}) is outside the image of {shape[0]} x {shape[1]} pixels")
    return ri, ci


def box_from_corners(corners: Sequence[Sequence[float]], shape: Sequence[int]) -> Box:
    """The box spanned by two opposite corner clicks (either diagonal, any order)."""
    if len(corners) != 2:
        raise ClickError(f"a box needs exactly two corner clicks, got {len(corners)}")
    (ra, ca), (rb, cb) = (pixel(p, shape, "corner click") for p in corners)
    box = Box(min(ra, rb), min(ca, cb), max(ra, rb), max(ca, cb))
    if box.height < 2 or box.width < 2:
        raise BoxTooSmall(box.height, box.width)
    return box


def box_from_points(points: Sequence[Sequence[float]], shape: Sequence[int], what: str = "click") -> Box:
    """The tight box of several points (DEXTR's extreme points)."""
    pixels = [pixel(p, shape, what) for p in points]
    rows, cols = [p[0] for p in pixels], [p[1] for p in pixels]
    box = Box(min(rows), min(cols), max(rows), max(cols))
    if box.height < 2 or box.width < 2:
        raise ClickError(f"the {what}s span a box only {box.height} x {box.width} pixels (rows x cols): "
                         "they need to span at least 2 x 2")
    return box


def outline_box(points: np.ndarray, shape: Sequence[int]) -> Box:
    """The pixels a drawn outline (e.g. a napari rectangle's vertices, (row, col)) encloses,
    clipped to the image: vertices on pixel edges (r - 0.5) or on pixel centres (r) give the
    same box."""
    points = np.asarray(points, dtype=float)
    r0, r1 = int(np.floor(points[:, 0].min() + 0.5)), int(np.ceil(points[:, 0].max() - 0.5))
    c0, c1 = int(np.floor(points[:, 1].min() + 0.5)), int(np.ceil(points[:, 1].max() - 0.5))
    return Box(max(r0, 0), max(c0, 0), min(r1, shape[0] - 1), min(c1, shape[1] - 1))


def mask_box(mask: np.ndarray) -> Box | None:
    """The tight box of a boolean mask; None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return Box(int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1]))


def most_interior_point(mask: np.ndarray) -> tuple[int, int] | None:
    """The pixel of ``mask`` farthest from its boundary (the image border counts as boundary),
    the inside click of training and of the simulated user; None for an empty mask."""
    if not mask.any():
        return None
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(r), int(c)


def to_frame(points: Iterable[Sequence[float]], crop: Box, size: int = FRAME) -> np.ndarray:
    """Image (row, col) -> the crop's ``size x size`` frame, rounded to the nearest pixel.

    A resize from n to ``size`` pixels with half-pixel centres (OpenCV, torch) puts source
    pixel ``i`` at ``(i + 0.5) * size / n - 0.5``.
    """
    pts = np.asarray(list(points), dtype=np.float64).reshape(-1, 2)
    rows = (pts[:, 0] - crop.r0 + 0.5) * size / crop.height - 0.5
    cols = (pts[:, 1] - crop.c0 + 0.5) * size / crop.width - 0.5
    return np.clip(np.rint(np.stack([rows, cols], 1)), 0, size - 1)


def to_frame_truncating(points: Iterable[Sequence[float]], crop: Box, size: int = FRAME) -> np.ndarray:
    """Image (row, col) -> frame as DEXTR's published demo maps its extreme points: scaled by
    ``size / n`` from the crop's origin and truncated, without the half-pixel shift."""
    pts = np.asarray(list(points), dtype=np.float64).reshape(-1, 2)
    return np.floor(size * (pts - [crop.r0, crop.c0]) / [crop.height, crop.width])


def box_in_frame(box: Box, crop: Box, size: int = FRAME) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of ``box`` in the crop's frame, as the published protocol
    finds them: the extreme pixels of the box's mask after the bilinear resize.

    The box covers ``[r0 - 0.5, r1 + 0.5]``; a resized step crosses 0.5 at that edge, so the
    first frame pixel above it is ``floor(edge) + 1`` and the last below the far edge is
    ``ceil(edge) - 1``.
    """
    sr, sc = size / crop.height, size / crop.width
    top = math.floor((box.r0 - crop.r0) * sr - 0.5) + 1
    left = math.floor((box.c0 - crop.c0) * sc - 0.5) + 1
    bottom = math.ceil((box.r1 - crop.r0 + 1) * sr - 0.5) - 1
    right = math.ceil((box.c1 - crop.c0 + 1) * sc - 0.5) - 1
    clamp = lambda v: min(max(v, 0), size - 1)
    return clamp(top), clamp(left), clamp(bottom), clamp(right)


def outside_points(box: Box, crop: Box, size: int = FRAME, pad: int = OUTSIDE_PAD) -> np.ndarray:
    """The four corners of ``box`` in the frame, each moved ``pad`` pixels outwards, clamped."""
    top, left, bottom, right = box_in_frame(box, crop, size)
    top, left = max(top - pad, 0), max(left - pad, 0)
    bottom, right = min(bottom + pad, size - 1), min(right + pad, size - 1)
    return np.array([(top, left), (top, right), (bottom, left), (bottom, right)], dtype=np.float64)


def gaussian_map(points: np.ndarray, size: int = FRAME, sigma: float = SIGMA) -> np.ndarray:
    """Max over points of exp(-4 ln2 d^2 / sigma^2) on a ``size x size`` grid (float32)."""
    out = np.zeros((size, size), dtype=np.float32)
    grid = np.arange(size, dtype=np.float64)
    k = 4.0 * math.log(2.0) / sigma**2
    for r, c in np.asarray(points, dtype=np.float64).reshape(-1, 2):
        # separable: exp(-k (dr^2 + dc^2)) = exp(-k dr^2) * exp(-k dc^2)
        rows, cols = np.exp(-k * (grid - r) ** 2), np.exp(-k * (grid - c) ** 2)
        # Where either factor is below 2**-150 the product rounds to 0 in float32 and cannot
        # raise the max: only the window around the point is computed (the same values, ~17x less
        # work at sigma 10, and a click's maps are drawn at every click and training sample).
        r0, r1 = _nonzero_span(rows)
        c0, c1 = _nonzero_span(cols)
        if r1 > r0 and c1 > c0:
            window = out[r0:r1, c0:c1]
            np.maximum(window, np.outer(rows[r0:r1], cols[c0:c1]).astype(np.float32), out=window)
    return out


def _nonzero_span(factor: np.ndarray) -> tuple[int, int]:
    """The range of a Gaussian's 1-D factor that can survive in a float32 product."""
    kept = np.flatnonzero(factor >= 2.0 ** -150)
    return (int(kept[0]), int(kept[-1]) + 1) if len(kept) else (0, 0)


def guidance_maps(inside: np.ndarray, outside: np.ndarray, size: int = FRAME,
                  sigma: float = SIGMA) -> np.ndarray:
    """The two guidance channels ``[2, size, size]``: inside, outside; scaled together to 0..255
    (min-max over both channels, as the published ``ToImage`` transform does)."""
    return scale_to_255(np.stack([gaussian_map(inside, size, sigma), gaussian_map(outside, size, sigma)]))


def guidance_with_corrections(inside, outside, positive=(), negative=()) -> np.ndarray:
    """A plain IOG network's two maps with its corrections (frame coordinates): positive clicks
    join the inside click(s), negative ones the outside points, both maps scaled together.
    The predictor and training's simulated corrections both draw them here."""
    def points(value) -> np.ndarray:
        return np.asarray(value, np.float64).reshape(-1, 2)

    return guidance_maps(np.concatenate([points(inside), points(positive)]),
                         np.concatenate([points(outside), points(negative)]))


def scale_to_255(maps: np.ndarray) -> np.ndarray:
    """Min-max scaling of heatmaps to 0..255 (all channels together), as published."""
    low, high = float(maps.min()), float(maps.max())
    return (255.0 * (maps - low) / (high - low + 1e-10)).astype(np.float32)


def add_clicks(maps: np.ndarray, positive: np.ndarray, negative: np.ndarray,
               sigma: float = SIGMA, quantise: bool = False) -> np.ndarray:
    """Draw correction clicks into 0..255 maps: positive into channel 0, negative into
    channel 1, each as an elementwise max with its Gaussian. ``quantise`` truncates to whole
    levels as the published refinement loop does (it stores the maps as uint8)."""
    out = maps.copy()
    size = maps.shape[-1]
    if len(positive):
        np.maximum(out[0], 255.0 * gaussian_map(positive, size, sigma), out=out[0])
    if len(negative):
        np.maximum(out[1], 255.0 * gaussian_map(negative, size, sigma), out=out[1])
    return np.floor(out) if quantise else out


def read_crop(image, crop: Box, shape: Sequence[int]) -> tuple[np.ndarray, Box]:
    """Read only the part of ``image`` (numpy, dask, zarr ...) that ``crop`` covers.

    Returns the window (as numpy) and the window's box; the rest of the crop is outside the
    image and is zero-padded by :func:`pad_to_crop`.
    """
    window = crop.clip(shape)
    return np.asarray(image[window.slices()]), window


def pad_to_crop(window_data: np.ndarray, window: Box, crop: Box) -> np.ndarray:
    """Place ``window_data`` (H, W, C) into a zero crop of ``crop``'s size."""
    out = np.zeros((crop.height, crop.width) + window_data.shape[2:], dtype=window_data.dtype)
    out[window.slices_within(crop)] = window_data
    return out


def crop_padded(array: np.ndarray, crop: Box) -> np.ndarray:
    """``crop`` of an in-memory (H, W, ...) array, zero where the crop leaves the array."""
    return pad_to_crop(*read_crop(array, crop, array.shape[:2]), crop)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """OpenCV INTER_LINEAR on a ``[B, C, H, W]`` float tensor."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)


def resize_bicubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """OpenCV INTER_CUBIC on a ``[B, C, H, W]`` float tensor."""
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=False)


def frame_input(rgb_crop: np.ndarray, crop: Box, box: Box, inside: Sequence[Sequence[float]],
                positive: Sequence[Sequence[float]] = (), negative: Sequence[Sequence[float]] = (),
                refine: bool = False, outside: np.ndarray | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the network is fed for one object, shared by the predictor and by training.

    ``rgb_crop`` is the crop (H, W, 3) in 0..255; points are image (row, col). Returns the
    5-channel input ``[5, FRAME, FRAME]`` and, for refinement models, the click maps
    ``[2, FRAME, FRAME]`` (else None). ``outside`` (frame coordinates) replaces the box's
    padded corners, for training's jittered outside clicks.

    Refinement models: the backbone sees the three clicks and corrections go to the click
    encoder only. Plain IOG: corrections are drawn into the inside/outside maps and the whole
    network re-runs (an approximation: it was trained with three clicks only).
    """
    x_img = resize_bilinear(torch.from_numpy(np.ascontiguousarray(rgb_crop, dtype=np.float32))
                            .permute(2, 0, 1)[None], (FRAME, FRAME))[0]
    inside_f = to_frame(inside, crop)
    outside_f = outside_points(box, crop) if outside is None else np.asarray(outside, np.float64)
    positive_f, negative_f = frame_points(positive, crop), frame_points(negative, crop)
    if refine:
        base = guidance_maps(inside_f, outside_f)
        clicks = add_clicks(base, positive_f, negative_f, quantise=True) if (
            len(positive_f) or len(negative_f)) else base
        return (torch.cat([x_img, torch.from_numpy(base)]),
                torch.from_numpy(np.ascontiguousarray(clicks, dtype=np.float32)))
    maps = guidance_with_corrections(inside_f, outside_f, positive_f, negative_f)
    return torch.cat([x_img, torch.from_numpy(maps)]), None


def frame_points(points: Sequence[Sequence[float]], crop: Box) -> np.ndarray:
    """Image (row, col) points in ``crop``'s frame, ``[N, 2]`` (``[0, 2]`` for none)."""
    return to_frame(points, crop) if len(points) else np.zeros((0, 2))


def first_click_maps(crop: Box, box: Box, inside: Sequence[Sequence[float]]) -> np.ndarray:
    """A plain IOG network's two guidance maps for an object's first clicks alone (the box and
    inside clicks, image coordinates), as :func:`frame_input` draws them."""
    return guidance_maps(to_frame(inside, crop), outside_points(box, crop))


def paste(crop_values: np.ndarray, crop: Box, shape: Sequence[int], dtype=np.float32) -> np.ndarray:
    """A full-size zero canvas with the in-image part of ``crop_values`` pasted at ``crop``."""
    out = np.zeros(tuple(shape[:2]), dtype=dtype)
    window = crop.clip(shape)
    out[window.slices()] = crop_values[window.slices_within(crop)]
    return out


#: Radius in image pixels of the disk a correction click decides, whatever the network says.
CLICK_RADIUS = 2


def clean_mask(crop_mask: np.ndarray, crop: Box, box: Box, inside: Sequence[Sequence[int]],
               positive: Sequence[Sequence[int]] = (), negative: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """What the user told the network, applied to its mask (all points in image pixels).

    The object lies in the clicked ``box``: pixels outside it go, except that a positive click
    outside the box widens it to take that click in. Of what is left, the pieces (8-connected)
    under an inside or positive click stay; if no click lies on the mask, the largest piece is
    the object. Everything else (stray lines at the crop edge, specks on similar colours)
    goes. Last, a correction click is respected where it was made: a disk of
    :data:`CLICK_RADIUS` around a positive click is in the object, around a negative click it
    is not (the negative wins where they meet). Returns a new bool array of ``crop_mask``'s shape.
    """
    rows = [box.r0, box.r1, *(p[0] for p in positive)]
    cols = [box.c0, box.c1, *(p[1] for p in positive)]
    allowed = Box(min(rows), min(cols), max(rows), max(cols))   # inside the crop, as the clicks are
    kept = np.zeros(crop_mask.shape, bool)
    region = allowed.slices_within(crop)
    kept[region] = crop_mask[region]
    parts, count = ndimage.label(kept, structure=np.ones((3, 3), bool))
    if count > 1:
        seeds = {int(parts[r - crop.r0, c - crop.c0]) for r, c in (*inside, *positive)
                 if crop.contains((r, c))} - {0}
        if not seeds:
            seeds = {int(np.argmax(np.bincount(parts.ravel())[1:])) + 1}
        kept = np.isin(parts, sorted(seeds))
    for points, value in ((positive, True), (negative, False)):
        for r, c in points:
            _paint_disk(kept, r - crop.r0, c - crop.c0, CLICK_RADIUS, value)
    return kept


def _paint_disk(mask: np.ndarray, r: int, c: int, radius: int, value: bool) -> None:
    r0, r1 = max(r - radius, 0), min(r + radius + 1, mask.shape[0])
    c0, c1 = max(c - radius, 0), min(c + radius + 1, mask.shape[1])
    if r0 >= r1 or c0 >= c1:
        return
    yy, xx = np.ogrid[r0:r1, c0:c1]
    mask[r0:r1, c0:c1][(yy - r) ** 2 + (xx - c) ** 2 <= radius ** 2] = value

