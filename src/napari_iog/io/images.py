"""Images from files: whole (photos, label PNGs) or lazily (zarr folders, memory-mapped .npy)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def check_file(path: str | os.PathLike, what: str = "image") -> Path:
    """``path`` exists and is not empty; a TIFF holds one series (its pages of one size)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {what} file")
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path.name} is empty (0 bytes): this {what} file was not saved whole; save it again")
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            shapes = [tuple(series.shape) for series in tif.series]
        if len(shapes) > 1:
            listed = ", ".join(" x ".join(map(str, shape)) for shape in shapes[:4])
            raise ValueError(f"{path.name} holds {len(shapes)} images of different sizes ({listed}): save each "
                             f"as its own file, or a stack whose planes share one size")
    return path


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A photo or microscopy image as an array; an alpha channel is dropped (RGBA -> RGB)."""
    from skimage import io

    path = check_file(path)
    image = io.imread(path)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    return image


def open_array(path: str | os.PathLike, what: str):
    """An image or labels file; a .zarr folder (or any zarr store folder) opens lazily."""
    path = Path(path)
    if path.is_dir():
        try:
            import zarr
        except ImportError as err:
            raise ValueError(f"{path} is a folder: reading zarr needs the zarr package") from err
        array = zarr.open(str(path), mode="r")
        if not hasattr(array, "shape"):
            raise ValueError(f"{path} is a zarr group, not an array: name the array inside it")
        return array
    check_file(path, what)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    if path.suffix.lower() == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)
