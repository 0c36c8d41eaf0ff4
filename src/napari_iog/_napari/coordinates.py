"""The edge between napari and the session: world coordinates <-> the image's data (pixel)
coordinates, and the plane of a stack the viewer shows. Nothing past here sees world
coordinates or napari's axis order."""

from __future__ import annotations

import numpy as np
from napari.layers import Image

from .. import geometry as G


class Coordinates:
    def __init__(self, viewer, image_layer: Image, spatial_shape: tuple[int, ...]):
        self.viewer, self.image_layer, self.spatial_shape = viewer, image_layer, spatial_shape

    def current_plane(self) -> tuple[int, ...]:
        """The leading indices of the plane the viewer shows (() for a 2D image)."""
        ndim = self.image_layer.ndim
        if ndim == 2:
            return ()
        dims = self.viewer.dims
        if dims.ndisplay != 2 or list(dims.displayed[-2:]) != [dims.ndim - 2, dims.ndim - 1]:
            raise G.ClickError("IOG annotates 2D planes: show the image's last two axes (rows, cols) in 2D view")
        return self.plane_of(self.image_layer.world_to_data(np.asarray(dims.point)))

    def current_plane_or_none(self) -> tuple[int, ...] | None:
        try:
            return self.current_plane()
        except G.ClickError:
            return None

    def plane_of(self, data_coords) -> tuple[int, ...]:
        """The plane (leading indices) of a point in the image's data coordinates."""
        leading = self.spatial_shape[:-2]
        plane = tuple(int(np.round(v)) for v in np.asarray(data_coords)[:len(leading)])
        if any(not 0 <= i < n for i, n in zip(plane, leading)):
            raise G.ClickError(f"the click is outside the stack (plane {plane} of {leading})")
        return plane

    def to_image(self, layer, coords) -> np.ndarray:
        """A point in ``layer``'s data coordinates -> the image's data coordinates."""
        world = layer.data_to_world(np.asarray(coords, dtype=float))
        return np.asarray(self.image_layer.world_to_data(np.asarray(world)), dtype=float)

    def to_layer(self, layer, coords) -> np.ndarray:
        """A point in the image's data coordinates -> ``layer``'s data coordinates."""
        world = self.image_layer.data_to_world(np.asarray(coords, dtype=float))
        return np.asarray(layer.world_to_data(np.asarray(world)), dtype=float)

    def world_to_pixel(self, world) -> tuple[float, float] | None:
        """(row, col) of a world point in the image, None when it is off the image."""
        data = self.image_layer.world_to_data(np.asarray(world))
        row, col = float(data[-2]), float(data[-1])
        height, width = self.spatial_shape[-2:]
        if -0.5 <= row <= height - 0.5 and -0.5 <= col <= width - 0.5:
            return row, col
        return None

    def clicks_of(self, layer, points):
        """Points of ``layer`` as ``(plane, (row, col))`` in the image's pixels."""
        for coords in points:
            image_coords = self.to_image(layer, coords)
            plane = self.plane_of(image_coords[:-2]) if len(image_coords) > 2 else ()
            yield plane, tuple(image_coords[-2:])
