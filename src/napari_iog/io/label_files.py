"""Instance-label images to and from files: label TIFFs, palette or colour-coded PNGs, .npy.

A labels array is (rows, cols) or a stack (..., rows, cols) of whole numbers, 0 the background.
Arrays not held in memory (zarr, dask) are written tile by tile, never copied whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write
from .images import check_file, read_image

TILE = 512


class LabelsFileError(ValueError):
    """A labels file that cannot be read as instance labels; says what is wrong."""


def iter_planes(labels) -> Iterator[tuple[tuple[int, ...], Any]]:
    for plane in np.ndindex(*labels.shape[:-2]):
        yield plane, labels[plane] if plane else labels


#: more distinct colours than this (or than 10 % of the pixels, and than 256): a photo, not
#: colour-coded labels
PHOTO_COLOURS = 20000


def read_label_image(path: str | Path) -> np.ndarray:
    """An instance-label file as an integer array (0 = background).

    Palette PNGs (CVPPP's) give their indices, not their colours; colour-coded RGB files give
    one id per colour (black = background); tif stacks come back as they are.
    """
    path = Path(path)
    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as handle:
            if handle.mode in ("P", "L", "I", "I;16"):
                return np.asarray(handle)
    label_image = read_image(path)
    if label_image.ndim == 3 and label_image.shape[2] in (3, 4) and path.suffix.lower() not in (".tif", ".tiff"):
        flat = label_image[..., :3].reshape(-1, 3)
        _, ids = np.unique(flat, axis=0, return_inverse=True)
        ids = ids.reshape(-1) + 1
        n_colours = int(ids.max()) if ids.size else 0
        # One colour per object in a colour-coded label image; a photo has a colour almost per
        # pixel (the RGBA astronaut: 113,381 of them).
        if n_colours > 256 and n_colours > min(PHOTO_COLOURS, 0.1 * len(flat)):
            raise LabelsFileError(f"{path.name} looks like a photo ({n_colours:,} different colours), not a label "
                             "image: give the file of object ids (0 background, 1, 2, ...) or a colour-coded "
                             "label image with one colour per object")
        ids[~flat.any(axis=1)] = 0
        label_image = ids.reshape(label_image.shape[:2])
    return label_image


def write_labels_tif(path: str | os.PathLike, labels) -> Path:
    """A label-image TIFF (one page per plane, zlib-compressed); arrays not in memory are written
    tile by tile (tiled TIFF), so no full-size copy is made."""
    import tifffile

    path = Path(path)
    if not np.issubdtype(np.dtype(labels.dtype), np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if isinstance(labels, np.ndarray):
        return atomic_write(path, lambda f: tifffile.imwrite(f, labels, compression="zlib"))
    height, width = labels.shape[-2:]

    def tiles():
        for _, plane_labels in iter_planes(labels):
            for r in range(0, height, TILE):
                for c in range(0, width, TILE):
                    tile = np.zeros((TILE, TILE), labels.dtype)
                    block = np.asarray(plane_labels[r:r + TILE, c:c + TILE])
                    tile[:block.shape[0], :block.shape[1]] = block
                    yield tile

    return atomic_write(path, lambda f: tifffile.imwrite(
        f, tiles(), shape=tuple(labels.shape), dtype=labels.dtype, tile=(TILE, TILE), compression="zlib"))


def read_labels(path: str | os.PathLike, dtype=None) -> np.ndarray:
    """Instance labels from a TIFF, PNG (palette indices), .npy or COCO .json file."""
    path = check_file(path, "labels")
    suffix = path.suffix.lower()
    if suffix == ".json":
        from .coco import read_coco  # coco builds on this module

        return read_coco(path, dtype or np.uint32)
    if suffix == ".npy":
        labels = np.load(path, allow_pickle=False)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        labels = tifffile.imread(path)
    elif suffix == ".png":
        labels = read_label_image(path)
    else:
        raise LabelsFileError(f"{path.name}: labels are read from .tif, .png, .npy or COCO .json files")
    check_label_image(labels, path.name)
    return labels.astype(dtype) if dtype is not None else labels


def check_label_image(labels: np.ndarray, name: str) -> None:
    """Refuse what is not an instance-label image, saying what it looks like instead."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise LabelsFileError(f"{name} holds {labels.dtype} values, not integer labels: a label image has one "
                              "whole number per pixel (0 background, 1, 2, ... objects)")
    if labels.ndim == 3 and labels.shape[-1] in (3, 4) and labels.dtype == np.uint8:
        raise LabelsFileError(f"{name} is a colour image ({labels.shape[0]} x {labels.shape[1]} pixels with "
                              f"{'RGBA' if labels.shape[-1] == 4 else 'RGB'} channels), not a label image: give the "
                              "file of object ids (0 background, 1, 2, ...), e.g. one saved from a napari labels layer")
    if labels.size and labels.min() < 0:
        raise LabelsFileError(f"{name} has negative values (down to {labels.min()}): object ids are 0 (background) "
                              "or positive")
