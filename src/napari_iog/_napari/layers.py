"""The user's layers: finding them by name or selection, the image data the network reads, and
labels layers made to fit an image (sparse zarr for huge or multiscale images)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from ..preprocess import ChannelStack

#: Above this many pixels a new labels layer is a sparse zarr array (only the chunks that hold
#: objects take memory) instead of a dense numpy array: 8192 x 8192 as uint32 would be 256 MiB.
DENSE_LABELS_MAX_PIXELS = 8192 * 8192
LABELS_CHUNK = 1024
PREVIEW_LAYER_NAME = "IOG current object"
BOX_LAYER_NAME = "IOG box"
#: the first fresh id of a labels layer, when known (saves scanning a huge layer for its largest id)
NEXT_ID_KEY = "napari-iog next id"
#: marks the annotator's own layers (clicks, box, outline), whatever name napari gave them
HELPER_KEY = "napari-iog helper"


def by_name(viewer, layer):
    """A layer given by name -> the layer (None and layers pass through)."""
    if isinstance(layer, str):
        if layer not in viewer.layers:
            raise ValueError(f"no layer named {layer!r} in the viewer")
        return viewer.layers[layer]
    return layer


def find_image_layer(viewer, layer) -> Image:
    """``layer`` (or its name), else the selected image layer, else the only one."""
    layers = viewer.layers
    layer = by_name(viewer, layer)
    if layer is None:
        selected = [lay for lay in layers.selection if isinstance(lay, Image)]
        images = [lay for lay in layers if isinstance(lay, Image)]
        if len(selected) == 1:
            layer = selected[0]
        elif len(images) == 1:
            layer = images[0]
        elif not images:
            raise ValueError("no image layer: open an image first")
        else:
            raise ValueError("several image layers: say which one to annotate (image_layer=...)")
    if not isinstance(layer, Image):
        raise ValueError(f"layer {layer.name!r} is a {type(layer).__name__} layer, not an image layer")
    return layer


def full_resolution(layer: Image):
    return layer.data[0] if layer.multiscale else layer.data


def transform_of(layer) -> dict[str, Any]:
    """The keyword arguments that place a new layer exactly over ``layer``."""
    return dict(scale=layer.scale, translate=layer.translate, rotate=layer.rotate, shear=layer.shear)


class SourceLayers:
    """The image the network reads: one image layer, or 1 to 3 single-channel layers feeding
    R, G, B (each scaled by its own contrast limits)."""

    def __init__(self, viewer, image_layer=None, channel_layers: Sequence[Image | str] | None = None):
        self.channel_layers = [find_image_layer(viewer, layer) for layer in channel_layers or ()]
        if image_layer is None and self.channel_layers:
            image_layer = self.channel_layers[0]
        self.image_layer = find_image_layer(viewer, image_layer)
        self._check_channels()
        if self.image_layer.ndim < 2:
            raise ValueError(f"image layer {self.image_layer.name!r} has fewer than two dimensions")

    @property
    def layers(self) -> list[Image]:
        return self.channel_layers or [self.image_layer]

    def data(self):
        if self.channel_layers:
            return ChannelStack([full_resolution(layer) for layer in self.channel_layers],
                                [layer.contrast_limits for layer in self.channel_layers])
        return full_resolution(self.image_layer)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.data().shape[:self.image_layer.ndim])

    def contrast_options(self, image) -> dict[str, Any]:
        """Predict options that scale 16-bit and float images as the user sees them; channel
        stacks take each layer's limits (set on ``image``) and give 0..255 already."""
        if self.channel_layers:
            image.contrast_limits = [tuple(float(v) for v in layer.contrast_limits) for layer in self.channel_layers]
            return {"contrast_limits": (0.0, 255.0)}
        return {"contrast_limits": tuple(float(v) for v in self.image_layer.contrast_limits)}

    def _check_channels(self) -> None:
        if not self.channel_layers:
            return
        if not 1 <= len(self.channel_layers) <= 3:
            raise ValueError(f"1 to 3 channel layers feed R, G, B; got {len(self.channel_layers)}")
        shape = full_resolution(self.image_layer).shape
        for layer in self.channel_layers:
            if layer.rgb:
                raise ValueError(f"channel layer {layer.name!r} is RGB: channel layers have one channel each")
            if full_resolution(layer).shape != shape:
                raise ValueError(f"channel layer {layer.name!r} has shape {full_resolution(layer).shape}, "
                                 f"the image {self.image_layer.name!r} {shape}")


def find_or_make_labels(viewer, layer, image_layer: Image, spatial_shape: tuple[int, ...]) -> Labels:
    """``layer`` (or its name) checked to fit the image and be writable, or a new labels layer
    named ``"<image> labels"`` placed over the image."""
    layer = by_name(viewer, layer)
    if layer is None:
        layer = Labels(new_labels_data(image_layer, spatial_shape), name=f"{image_layer.name} labels",
                       **transform_of(image_layer))
        layer.metadata[NEXT_ID_KEY] = 1    # empty: no need to scan it for the largest id
        viewer.add_layer(layer)
    if not isinstance(layer, Labels):
        raise ValueError(f"layer {layer.name!r} is a {type(layer).__name__} layer, not a labels layer")
    levels = labels_levels(layer)
    if tuple(levels[0].shape) != spatial_shape:
        raise ValueError(f"labels layer {layer.name!r} has shape {levels[0].shape}, the image "
                         f"{image_layer.name!r} has {spatial_shape}")
    for level in levels:
        if not writable(level):
            raise ValueError(f"labels layer {layer.name!r} is read-only ({type(level).__name__}); annotate into "
                             "a new labels layer, or one held in memory or in a zarr array")
    return layer


def labels_levels(layer: Labels) -> list:
    return list(layer.data) if layer.multiscale else [layer.data]


def new_labels_data(image_layer: Image, spatial_shape: tuple[int, ...]):
    """Empty labels for ``image_layer``: a numpy array for ordinary images; for multiscale
    images a pyramid of sparse in-memory zarr arrays with the image's level shapes; for other
    very large images one sparse zarr array."""
    huge = int(np.prod(spatial_shape, dtype=np.int64)) > DENSE_LABELS_MAX_PIXELS
    if not (image_layer.multiscale or huge):
        return np.zeros(spatial_shape, np.uint32)
    import zarr

    ndim = len(spatial_shape)
    shapes = ([tuple(level.shape[:ndim]) for level in image_layer.data] if image_layer.multiscale
              else [spatial_shape])
    chunks = (1,) * (ndim - 2) + (LABELS_CHUNK, LABELS_CHUNK)
    levels = [zarr.zeros(shape=shape, chunks=tuple(min(c, n) for c, n in zip(chunks, shape)), dtype="uint32")
              for shape in shapes]
    return levels if image_layer.multiscale else levels[0]


def writable(array) -> bool:
    if isinstance(array, np.ndarray):
        return array.flags.writeable
    if hasattr(array, "dask"):
        return False
    return callable(getattr(array, "__setitem__", None)) and not getattr(array, "read_only", False)


def user_layer_names(viewer, kind) -> list[str]:
    """The layers of type ``kind`` that are the user's: none of any annotator's helper layers
    (which napari may have renamed 'IOG box [1]' and so on)."""
    return [layer.name for layer in viewer.layers if isinstance(layer, kind) and not layer.metadata.get(HELPER_KEY)]


def image_layer_names(viewer) -> list[str]:
    return user_layer_names(viewer, Image)


def labels_layer_names(viewer) -> list[str]:
    """Labels layers a user annotates in (not an annotator's outline layer)."""
    return user_layer_names(viewer, Labels)
