"""Instance labels to and from COCO JSON (RLE or polygons).

napari-free, numpy in and out. A labels array is (rows, cols) or a stack (..., rows, cols);
each plane of a stack is one COCO image. Every annotation keeps the label id it had in the
array (``"label_id"``, an extra field COCO readers ignore), so that export then import gives
the same labels back. RLE is COCO's compressed format (what ``pycocotools.mask.encode``
writes), exact; polygons are outlines, approximate.

Arrays not held in memory (zarr, dask) are read plane by plane and object by object: an
object is encoded from its bounding box, never from a full-size mask.
"""

from __future__ import annotations

import datetime as _dt
import json
import operator
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .. import __version__
from .atomic import atomic_write
from .label_files import TILE, LabelsFileError, iter_planes

ENCODINGS = ("rle", "polygon")
#: polygon coordinates beyond this are damage, not geometry (and would overflow the rasteriser)
MAX_COORDINATE = 1e7


# --- COCO run-length encoding -------------------------------------------------------------------

def rle_counts(region: np.ndarray, offset: tuple[int, int] = (0, 0), size: tuple[int, int] | None = None
               ) -> list[int]:
    """COCO run lengths (column-major, starting with a run of zeros) of the mask ``region``
    placed at ``offset`` (row, col) in an image of ``size`` (rows, cols)."""
    region = np.asarray(region, bool)
    height, width = size if size is not None else region.shape
    rows, cols = np.nonzero(region.T)[::-1]     # column-major order of the "on" pixels
    index = (cols + offset[1]).astype(np.int64) * height + rows + offset[0]
    total = int(height) * int(width)
    if index.size == 0:
        return [total]
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    starts = index[np.r_[0, breaks]]
    ends = index[np.r_[breaks - 1, index.size - 1]] + 1
    counts = np.empty(2 * starts.size + 1, np.int64)
    counts[0] = starts[0]
    counts[1:-1:2] = ends - starts
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = total - ends[-1]
    out = counts.tolist()
    return out if out[-1] else out[:-1]


def counts_to_string(counts: Sequence[int]) -> str:
    """COCO's compressed RLE string (pycocotools' ``rleToString``)."""
    chars = []
    for i, x in enumerate(counts):
        x = int(x) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def string_to_counts(text: str) -> list[int]:
    """The inverse of :func:`counts_to_string` (pycocotools' ``rleFrString``)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            if p >= len(text):
                raise LabelsFileError("a COCO RLE string ends in the middle of a number")
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_rle(mask: np.ndarray, offset: tuple[int, int] = (0, 0), size: tuple[int, int] | None = None
               ) -> dict[str, Any]:
    """``{"size": [rows, cols], "counts": str}``, as pycocotools writes it."""
    size = tuple(size if size is not None else np.shape(mask))
    return {"size": [int(size[0]), int(size[1])], "counts": counts_to_string(rle_counts(mask, offset, size))}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """A COCO RLE (compressed string or list of counts) -> bool (rows, cols)."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise LabelsFileError(f"not a COCO RLE (needs 'size' and 'counts'): {err}") from err
    if isinstance(counts, (bytes, str)):
        counts = string_to_counts(counts.decode() if isinstance(counts, bytes) else counts)
    try:
        whole = [operator.index(c) for c in counts]      # whole numbers only: 600.5 is damage
    except TypeError as err:
        raise LabelsFileError(f"COCO RLE counts must be whole numbers: {err}") from err
    if any(not 0 <= c <= height * width for c in whole):
        raise LabelsFileError(f"COCO RLE counts must lie in 0..{height * width} for a {height} x {width} mask")
    counts = np.asarray(whole, np.int64)
    if counts.sum() != height * width:
        raise LabelsFileError(f"COCO RLE counts add up to {int(counts.sum())}, not {height} x {width}")
    values = np.zeros(counts.size, bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape(width, height).T


# --- polygons -----------------------------------------------------------------------------------

def mask_polygons(region: np.ndarray, offset: tuple[int, int] = (0, 0), tolerance: float = 0.5
                  ) -> list[list[float]]:
    """Outlines of a mask as COCO polygons ``[x0, y0, x1, y1, ...]`` (pixel-edge coordinates:
    the pixel (r, c) covers x in c..c+1, y in r..r+1), one per connected part; holes are
    not represented (COCO polygons have none)."""
    from skimage.measure import approximate_polygon, find_contours

    polygons = []
    parts, n = ndimage.label(region)
    for i in range(1, n + 1):
        part = ndimage.binary_fill_holes(parts == i)
        # contours at level 0.5 of the upsampled mask follow the pixel edges
        padded = np.pad(np.kron(part, np.ones((2, 2), np.uint8)), 1)
        for contour in find_contours(padded.astype(float), 0.5):
            contour = approximate_polygon(contour, tolerance)
            ys = (contour[:, 0] - 0.5) / 2 + offset[0]
            xs = (contour[:, 1] - 0.5) / 2 + offset[1]
            if len(contour) >= 3:
                polygons.append([round(float(v), 2) for xy in zip(xs, ys) for v in xy])
    return polygons


def polygons_mask(polygons: Sequence[Sequence[float]], size: tuple[int, int]) -> np.ndarray:
    """COCO polygons -> bool mask of ``size``: a pixel is in when its centre is."""
    from skimage.draw import polygon as fill_polygon

    mask = np.zeros(size, bool)
    for poly in polygons:
        try:
            xy = np.asarray(poly, float).reshape(-1, 2)
        except (TypeError, ValueError) as err:
            raise LabelsFileError(f"a polygon is not a list of x, y numbers: {err}") from err
        if not np.isfinite(xy).all() or (np.abs(xy) > MAX_COORDINATE).any():
            raise LabelsFileError(f"a polygon has a point that is not a coordinate (NaN, infinite, or beyond "
                                  f"{MAX_COORDINATE:.0e} pixels): the file is damaged")
        rr, cc = fill_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape=size)
        mask[rr, cc] = True
    return mask


# --- labels <-> COCO ----------------------------------------------------------------------------

def _objects(plane_labels) -> Iterator[tuple[int, tuple[slice, slice], np.ndarray]]:
    """(id, bounding slices, mask in them) of each object of one plane, read tile by tile when
    the plane is not in memory."""
    if isinstance(plane_labels, np.ndarray):
        array = plane_labels
        boxes = ndimage.find_objects(array)
        for i, box in enumerate(boxes):
            if box is not None:
                yield i + 1, box, array[box] == i + 1
        return
    height, width = plane_labels.shape
    found: dict[int, list[int]] = {}
    for r in range(0, height, TILE):
        for c in range(0, width, TILE):
            tile = np.asarray(plane_labels[r:r + TILE, c:c + TILE])
            for i, box in enumerate(ndimage.find_objects(tile)):
                if box is None:
                    continue
                b = [box[0].start + r, box[1].start + c, box[0].stop + r, box[1].stop + c]
                old = found.get(i + 1)
                found[i + 1] = b if old is None else [min(old[0], b[0]), min(old[1], b[1]),
                                                      max(old[2], b[2]), max(old[3], b[3])]
    for label_id in sorted(found):
        r0, c0, r1, c1 = found[label_id]
        box = (slice(r0, r1), slice(c0, c1))
        yield label_id, box, np.asarray(plane_labels[box]) == label_id


def labels_to_coco(labels, image_name: str = "image", encoding: str = "rle", category: str = "object",
                   image_files: Sequence[str] | None = None) -> dict[str, Any]:
    """A COCO dataset dict of the objects in ``labels`` (numpy, zarr or dask), one image per
    plane, one annotation per object per plane, with its box ``[x, y, width, height]`` and area."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, not {encoding!r}")
    if len(labels.shape) < 2 or not np.issubdtype(np.dtype(labels.dtype), np.integer):
        raise ValueError(f"labels must be an integer array of at least 2 dimensions, got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    height, width = (int(n) for n in labels.shape[-2:])
    planes = list(np.ndindex(*labels.shape[:-2]))
    if image_files is not None and len(image_files) != len(planes):
        raise ValueError(f"{len(image_files)} image file names for {len(planes)} planes")
    images, annotations = [], []
    for image_id, (plane, plane_labels) in enumerate(iter_planes(labels), start=1):
        if image_files is not None:
            file_name = str(image_files[image_id - 1])
        else:
            file_name = f"{image_name}{''.join(f'_{i:04d}' for i in plane)}.tif"
        entry = {"id": image_id, "file_name": file_name, "height": height, "width": width}
        if plane:
            entry["plane"] = list(plane)
        images.append(entry)
        for label_id, box, mask in _objects(plane_labels):
            offset = (box[0].start, box[1].start)
            rows, cols = np.nonzero(mask)
            r0, r1 = int(rows.min()) + offset[0], int(rows.max()) + offset[0]
            c0, c1 = int(cols.min()) + offset[1], int(cols.max()) + offset[1]
            if encoding == "rle":
                segmentation = encode_rle(mask, offset, (height, width))
            else:
                segmentation = mask_polygons(mask, offset)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "label_id": int(label_id),
                "segmentation": segmentation, "area": int(rows.size),
                "bbox": [c0, r0, c1 - c0 + 1, r1 - r0 + 1], "iscrowd": 0})
    return {
        "info": {"description": f"instance labels exported by napari-iog {__version__}",
                 "date_created": _dt.date.today().isoformat()},
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": category, "supercategory": category}],
    }


def coco_to_labels(coco: dict[str, Any], dtype=np.uint32) -> np.ndarray:
    """The labels array of a COCO dict: one image gives (rows, cols); several images of one
    size give a stack in their ``plane`` order (else their order in the file). Objects keep
    their ``label_id`` when the file has them, else they are numbered 1, 2, ... per image
    in file order; where objects overlap, the later one wins."""
    try:
        images = list(coco["images"])
        annotations = list(coco.get("annotations", []))
    except (KeyError, TypeError) as err:
        raise LabelsFileError("not a COCO dataset: it needs an 'images' list") from err
    if not images:
        raise LabelsFileError("the COCO file has no images")
    try:
        sizes = {(int(im["height"]), int(im["width"])) for im in images}
    except (KeyError, TypeError, ValueError) as err:
        raise LabelsFileError(f"every COCO image needs a 'height' and a 'width' (and an 'id'); an image lacks "
                              f"{err}") from err
    if len(sizes) != 1:
        raise LabelsFileError(f"the COCO images differ in size ({sorted(sizes)}): import them one by one")
    height, width = sizes.pop()
    planes = [tuple(im["plane"]) if "plane" in im else (n,) for n, im in enumerate(images)]
    if len(images) == 1:
        shape, where = (height, width), {images[0]["id"]: ()}
    else:
        lead = tuple(int(v) + 1 for v in np.max(np.asarray(planes), axis=0))
        shape, where = (*lead, height, width), {im["id"]: p for im, p in zip(images, planes)}
    try:
        labels = np.zeros(shape, dtype)
    except (MemoryError, ValueError) as err:
        raise LabelsFileError(f"the COCO file describes labels of {' x '.join(map(str, shape))} pixels: too large "
                              "to hold in memory (or not a size)") from err
    numbered: dict[Any, int] = {}
    for ann in annotations:
        if ann.get("image_id") not in where:
            raise LabelsFileError(f"annotation {ann.get('id')} names image {ann.get('image_id')}, not in the file")
        seg = ann.get("segmentation")
        try:
            if isinstance(seg, dict):
                if list(seg.get("size", ())) != [height, width]:     # before decoding: the size is allocated
                    raise LabelsFileError(f"its RLE is {seg.get('size')}, its image {height} x {width}")
                mask = decode_rle(seg)
            elif isinstance(seg, list):
                mask = polygons_mask(seg, (height, width))
            else:
                raise LabelsFileError("it has no segmentation")
        except (LabelsFileError, TypeError, ValueError) as err:
            raise LabelsFileError(f"annotation {ann.get('id')}: {err}") from err
        if mask.shape != (height, width):
            raise LabelsFileError(f"annotation {ann.get('id')} is {mask.shape}, its image {(height, width)}")
        image_id = ann["image_id"]
        numbered[image_id] = numbered.get(image_id, 0) + 1
        label_id = int(ann.get("label_id", numbered[image_id]))
        if label_id > np.iinfo(dtype).max:
            raise LabelsFileError(f"label id {label_id} does not fit {np.dtype(dtype)}")
        plane = where[image_id]
        (labels[plane] if plane else labels)[mask] = label_id
    return labels


# --- files --------------------------------------------------------------------------------------

def write_coco(path: str | os.PathLike, labels, **options) -> Path:
    """Write :func:`labels_to_coco` as JSON (atomically: a crash leaves no half file)."""
    path = Path(path)
    data = labels_to_coco(labels, **options)
    return atomic_write(path, lambda f: json.dump(data, f), mode="w")


def read_coco(path: str | os.PathLike, dtype=np.uint32) -> np.ndarray:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise LabelsFileError(f"{path} is not a JSON file: {err}") from err
    return coco_to_labels(data, dtype)
