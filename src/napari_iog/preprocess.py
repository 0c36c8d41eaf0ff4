"""From the arrays users have to the RGB 0..255 floats the network was trained on.

Grayscale is replicated to RGB, RGBA loses its alpha, other channel counts need a channel
choice. uint8 is used as it is (as the published models saw it). Other dtypes are scaled
to 0..255 by napari's ``contrast_limits`` when given, else by robust percentiles of the
image. For in-memory images these come from a strided subsample of the whole image; for
lazy arrays (dask, zarr), whose reading would be costly, they come from the crop itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PERCENTILES = (0.5, 99.5)
_SAMPLE_TARGET = 1_000_000  # pixels sampled for the percentiles of an in-memory image
MAX_CHANNELS = 16           # a trailing axis this short is taken as channels, not as columns


@dataclass(frozen=True)
class ImageLayout:
    """How an array maps to (rows, cols) and to R, G, B."""

    height: int
    width: int
    channels: tuple[int, ...] | None  # indices into the last axis feeding R, G, B; None: 2D gray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)


def image_layout(image, channels: Sequence[int] | None = None) -> ImageLayout:
    """Check ``image``'s shape and decide its channel use; a ``ValueError`` says what is wrong."""
    shape = tuple(getattr(image, "shape", ()))
    if len(shape) not in (2, 3):
        hint = " (a 3D stack or time series: pass one 2D plane, e.g. image[z])" if len(shape) > 3 or (
            len(shape) == 3 and shape[-1] > MAX_CHANNELS) else ""
        raise ValueError(f"image must be 2D (rows, cols) or (rows, cols, channels), got shape {shape}{hint}")
    if len(shape) == 3 and shape[-1] > MAX_CHANNELS:
        raise ValueError(f"image of shape {shape} looks like a 3D stack: pass one 2D plane, e.g. image[z]")
    if shape[0] < 2 or shape[1] < 2:
        raise ValueError(f"image of shape {shape} is too small (or empty) to segment")
    dtype = np.dtype(getattr(image, "dtype", np.float64))
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_) or np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"image dtype {dtype} is not a real-valued numeric type")
    n = shape[2] if len(shape) == 3 else 0
    if channels is not None:
        if len(shape) == 2:
            raise ValueError("a channel choice was given for a 2D grayscale image")
        channels = tuple(int(c) for c in channels)
        if not 1 <= len(channels) <= 3 or any(not 0 <= c < n for c in channels):
            raise ValueError(f"channels {channels} must be 1 to 3 indices in 0..{n - 1} (R, G, B)")
        return ImageLayout(shape[0], shape[1], channels)
    if n == 0:
        return ImageLayout(shape[0], shape[1], None)
    if n == 1:
        return ImageLayout(shape[0], shape[1], (0,))
    if n in (3, 4):  # RGB, RGBA: alpha dropped
        return ImageLayout(shape[0], shape[1], (0, 1, 2))
    if n == 2:  # two channels: shown as R and G, B left dark
        return ImageLayout(shape[0], shape[1], (0, 1))
    raise ValueError(f"image has {n} channels: choose which feed R, G and B with channels=(i, j, k)")


def intensity_range(image, layout: ImageLayout, contrast_limits: Sequence[float] | None = None
                    ) -> tuple[float, float] | None:
    """The (low, high) that map to 0..255; None for uint8 data taken as it is."""
    if contrast_limits is not None:
        low, high = (float(v) for v in contrast_limits)
        if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
            raise ValueError(f"contrast_limits {contrast_limits} must be two finite numbers, low < high")
        return low, high
    if np.dtype(image.dtype) == np.uint8:
        return None
    if np.dtype(image.dtype) == np.bool_:
        return 0.0, 1.0
    if not isinstance(image, np.ndarray):
        return None  # lazy: decided per crop in to_rgb255
    step = max(1, int(np.sqrt(layout.height * layout.width / _SAMPLE_TARGET)))
    sample = image[::step, ::step]
    return _robust_range(_select_channels(sample, layout))


def _robust_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values
    if finite.size == 0:
        raise ValueError("the image has no finite pixel values")
    low, high = (float(v) for v in np.percentile(finite, PERCENTILES))
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        high = low + 1.0  # a flat image: any scale gives the same picture
    return low, high


def scale_to_255(data: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low..high`` -> float32 ``0..255``, clipped (napari's contrast limits as shown)."""
    out = (data.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(out, 0, 255, out=out)


def _select_channels(window: np.ndarray, layout: ImageLayout) -> np.ndarray:
    if layout.channels is None:
        return window
    return window[..., list(layout.channels)]


def to_rgb255(window: np.ndarray, layout: ImageLayout, value_range: tuple[float, float] | None,
              lazy: bool = False) -> np.ndarray:
    """A window of the image as float32 (H, W, 3) RGB in 0..255.

    ``value_range`` None means uint8 as it is, or (``lazy``) robust percentiles of this window.
    Non-finite pixels raise a ``ValueError``: a NaN would silently poison the whole mask.
    """
    data = _select_channels(window, layout)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise ValueError("the image has NaN or infinite pixels where the object is; "
                         "fill or mask them before segmenting")
    if value_range is None and lazy and data.dtype not in (np.uint8, np.bool_):
        value_range = _robust_range(data)
    if value_range is None:
        rgb = data.astype(np.float32)
    else:
        rgb = scale_to_255(data, *value_range)
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    elif rgb.shape[-1] == 2:
        rgb = np.concatenate([rgb, np.zeros_like(rgb[..., :1])], axis=-1)
    return np.ascontiguousarray(rgb)


class ChannelStack:
    """Several single-channel arrays of one shape (napari layers made with ``channel_axis``)
    seen as one lazy (..., rows, cols, channels) image that feeds R, G, B.

    Each channel is scaled to 0..255 by its own contrast limits (as napari shows it) when it is
    read, so the network sees what the user sees; indexing reads only the requested part of
    each array. Pass ``contrast_limits=(0, 255)`` to the predictor with it (the values are
    already scaled).
    """

    def __init__(self, arrays: Sequence, contrast_limits: Sequence[Sequence[float]]):
        if not 1 <= len(arrays) <= 3:
            raise ValueError(f"1 to 3 channels feed R, G, B; got {len(arrays)}")
        shapes = {tuple(a.shape) for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"the channels differ in shape: {sorted(shapes)}")
        self.arrays = list(arrays)
        self.contrast_limits = [tuple(float(v) for v in cl) for cl in contrast_limits]
        if len(self.contrast_limits) != len(self.arrays) or any(hi <= lo for lo, hi in self.contrast_limits):
            raise ValueError("one (low, high) contrast limit with low < high is needed per channel")
        self.shape = (*shapes.pop(), len(self.arrays))
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if len(key) > self.ndim - 1:
            raise IndexError("ChannelStack is indexed over its spatial axes only")
        if all(isinstance(k, (int, np.integer)) for k in key) and len(key) <= self.ndim - 3:
            return ChannelStack([a[key] for a in self.arrays], self.contrast_limits)  # a plane, still lazy
        channels = []
        for array, (low, high) in zip(self.arrays, self.contrast_limits):
            channels.append(scale_to_255(np.asarray(array[key]), low, high))
        return np.stack(channels, axis=-1)
