"""The inputs an int8 network is calibrated on (:mod:`napari_iog.models.int8`).

The objects are the Otsu blobs of pictures every scikit-image install has (people, cells, coins,
stars, tissue), clicked as the simulated user clicks: the ranges they give are the network's,
not a domain's. A correction graph sees each object also with a positive and a negative
correction on its first mask, as the predictor feeds it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from scipy import ndimage

from . import geometry as G
from .correction_maps import correction_maps, no_correction_maps

#: scikit-image pictures that ship with it (no download)
CALIBRATION_PICTURES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
                        "camera", "coins", "cell", "retina")
#: blobs taken from each picture, bright and dark
BLOBS_PER_PICTURE = 3


def calibration_objects() -> Iterator[tuple[np.ndarray, G.Box, G.Box, tuple[int, int]]]:
    """``(rgb uint8, crop, box, inside)`` for each calibration object: the largest bright and
    dark blobs (Otsu's threshold, opened) of each picture, with their tight box and most interior
    pixel, as the simulated user clicks them."""
    from skimage import color, data, filters

    for name in CALIBRATION_PICTURES:
        picture = getattr(data, name)()
        gray = picture if picture.ndim == 2 else color.rgb2gray(picture)
        rgb = np.dstack([picture] * 3) if picture.ndim == 2 else picture
        bright = gray > filters.threshold_otsu(gray)
        for foreground in (bright, ~bright):
            parts, _ = ndimage.label(ndimage.binary_opening(foreground, iterations=2))
            sizes = np.bincount(parts.ravel())[1:]
            chosen = [i + 1 for i in np.argsort(-sizes) if 150 < sizes[i] < 0.4 * foreground.size]
            for part in chosen[:BLOBS_PER_PICTURE]:
                blob = parts == part
                box = G.mask_box(blob)
                yield rgb, box.grow(G.RELAX), box, G.most_interior_point(blob)


def calibration_inputs(channels: int, first_mask: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       corrections: bool = True) -> list[np.ndarray]:
    """The network inputs ``[1, channels, 512, 512]`` (float32) of the calibration objects: their
    first clicks and, with ``corrections``, the same with a positive click halfway to the box's
    corner and a negative one just inside that corner. A network of eight channels reads its
    corrections' maps too, which need ``first_mask`` (first-click input -> frame probability)."""
    inputs = []
    for rgb, crop, box, inside in calibration_objects():
        window_data, window = G.read_crop(rgb, crop, rgb.shape[:2])
        rgb_crop = G.pad_to_crop(window_data, window, crop)
        x, _ = G.frame_input(rgb_crop, crop, box, [inside])
        first = x if channels == 5 else torch.cat([x, no_correction_maps(1)[0]])
        inputs.append(first[None].numpy())
        if not corrections:
            continue
        corner = np.array([box.r0, box.c0], np.float64)
        positive, negative = [tuple((corner + np.asarray(inside)) / 2)], [tuple(corner + 2)]
        corrected, _ = G.frame_input(rgb_crop, crop, box, [inside], positive, negative)
        if channels != 5:
            maps = correction_maps(first_mask(first[None]), G.frame_points(positive, crop),
                                   G.frame_points(negative, crop))
            corrected = torch.cat([corrected, maps])
        inputs.append(corrected[None].numpy())
    return inputs
