"""Objects to evaluate on: the GrabCut and Berkeley benchmarks, folders of images with label files,
and instance-label arrays, each object an :class:`Instance`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import IMAGE_SUFFIXES, read_image, read_label_image


@dataclass
class Instance:
    """One object to segment: the image, its mask, and pixels to ignore (or None)."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    ignore: np.ndarray | None = None


def grabcut_dataset(root: str | Path) -> Iterator[Instance]:
    """The GrabCut benchmark layout: ``data_GT/<name>.jpg|bmp`` and ``boundary_GT/<name>.bmp``
    (0 background, 255 object, 128 the ignored band)."""
    root = Path(root)
    images = {p.stem: p for p in (root / "data_GT").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    for mask_path in sorted((root / "boundary_GT").glob("*.bmp")):
        if mask_path.stem not in images:
            continue
        gt = read_image(mask_path)
        gt = gt[..., 0] if gt.ndim == 3 else gt
        yield Instance(mask_path.stem, read_image(images[mask_path.stem]), gt == 255, gt == 128)


def berkeley_dataset(root: str | Path) -> Iterator[Instance]:
    """The Berkeley benchmark layout: ``images/<id>.jpg`` and ``masks/<id>[a-z].png``
    (an object where the mask is above 128)."""
    root = Path(root)
    for mask_path in sorted((root / "masks").glob("*.png")):
        stem = mask_path.stem
        image_id = stem[:-1] if stem[-1].isalpha() else stem
        candidates = [root / "images" / f"{image_id}{s}" for s in IMAGE_SUFFIXES]
        image_path = next((p for p in candidates if p.is_file()), None)
        if image_path is None:
            continue
        gt = read_image(mask_path)
        gt = gt[..., 0] if gt.ndim == 3 else gt
        yield Instance(stem, read_image(image_path), gt > 128)


def labels_instances(image: np.ndarray, labels: np.ndarray, name: str = "image",
                     min_area: int = 16) -> Iterator[Instance]:
    """Every object of an instance-label image (0 = background) as an Instance; objects smaller
    than ``min_area`` pixels are skipped. ``labels`` may be a stack (..., rows, cols) with an
    image stack to match: only planes with labels count."""
    labels = np.asarray(labels)
    if labels.ndim > 2:
        for index in np.ndindex(*labels.shape[:-2]):
            plane = labels[index]
            if plane.any():
                yield from labels_instances(np.asarray(image[index]), plane,
                                            f"{name}[{','.join(map(str, index))}]", min_area)
        return
    for label_id in np.unique(labels):
        if label_id == 0:
            continue
        mask = labels == label_id
        if mask.sum() >= min_area:
            yield Instance(f"{name}#{int(label_id)}", np.asarray(image), mask)


def folder_pairs(images: str | Path, labels: str | Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, image, label image)`` for image and label files matched by name (``a.jpg`` with
    ``a.png`` or ``a.tif``); images without a label file are left out."""
    images, labels = Path(images), Path(labels)
    for folder, what in ((images, "images"), (labels, "labels")):
        if not folder.is_dir():
            raise FileNotFoundError(f"the {what} folder {folder} does not exist")
    labels_by_stem = {p.stem: p for p in labels.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    for image_path in sorted(images.iterdir()):
        if image_path.suffix.lower() not in IMAGE_SUFFIXES or image_path.stem not in labels_by_stem:
            continue
        yield image_path.stem, read_image(image_path), read_label_image(labels_by_stem[image_path.stem])


def folder_dataset(images: str | Path, labels: str | Path, min_area: int = 16) -> Iterator[Instance]:
    """Images and instance-label files matched by name (see :func:`folder_pairs`)."""
    for name, image, label_image in folder_pairs(images, labels):
        yield from labels_instances(image, label_image, name, min_area)


#: where the named datasets (grabcut/, berkeley/ ...) are when ``--data-root`` is not given
DATA_ENV = "NAPARI_IOG_DATA"
BENCHMARKS = ("grabcut", "berkeley")


def data_root(given: str | Path | None, name: str) -> Path:
    """The folder that holds the named dataset ``name``: ``given``, else ``$NAPARI_IOG_DATA``."""
    root = given or os.environ.get(DATA_ENV)
    if not root:
        raise FileNotFoundError(f"where is the {name} dataset? Give the folder that holds {name}/ with "
                                f"--data-root DIR (or set {DATA_ENV})")
    return Path(root).expanduser()


def load_dataset(spec: str | Path, data_root_dir: str | Path | None = None) -> list[Instance]:
    """``"grabcut"``/``"berkeley"`` (in ``data_root_dir``, default ``$NAPARI_IOG_DATA``), or a
    folder in the GrabCut or Berkeley layout, or a folder with ``images/`` and ``labels/``."""
    spec = str(spec)
    path = data_root(data_root_dir, spec) / spec if spec in BENCHMARKS else Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {spec!r} not found at {path}")
    if (path / "boundary_GT").is_dir():
        return list(grabcut_dataset(path))
    if (path / "masks").is_dir():
        return list(berkeley_dataset(path))
    if (path / "images").is_dir() and (path / "labels").is_dir():
        return list(folder_dataset(path / "images", path / "labels"))
    raise ValueError(f"{path}: not a known dataset layout (GrabCut: data_GT/ + boundary_GT/; Berkeley: "
                     "images/ + masks/; or images/ + labels/ with instance-label files)")
