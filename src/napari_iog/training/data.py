"""Training data: (image, instance labels) pairs, and the samples the network learns from.

A :class:`Pair` is one 2D image with its instance labels (0 = background). Pairs come from
arrays or napari layers (:func:`pairs_from_arrays`, stacks give their labelled planes), from
folders (:func:`pairs_from_folders`), or from the real datasets beside the project
(:func:`sstem_pairs`, :func:`cvppp_pairs`, :func:`bsds_pairs`).

:class:`InstanceDataset` turns every object into the input the network sees at test time,
with the predictor's own code (:func:`napari_iog.geometry.frame_input`): the box is the
object's tight box (optionally jittered like a real user's), the crop is the box grown by
``RELAX``, the outside guidance is the box's corners +-10 px in the 512 frame and the inside
guidance is the most interior pixel (optionally jittered). Augmentation as published: random
flip, rotation +-20 deg, scale 0.75..1.25, drawn anew each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from .. import geometry as G
from ..evaluation import Instance, folder_pairs
from ..io import read_image, read_label_image
from ..preprocess import image_layout, intensity_range, to_rgb255
from .config import DEFAULT_MIN_AREA  # objects smaller than this (pixels) are skipped

ROTATION_DEGREES = 20.0
SCALE_RANGE = (0.75, 1.25)
#: Box jitter: each edge moves by up to this share of the object's size.
BOX_JITTER = 0.05
#: Inside-click jitter: any pixel at least this share of the maximum depth inside the object.
INSIDE_JITTER_DEPTH = 0.5


@dataclass
class Pair:
    """One 2D image and its instance labels, as the network will be taught on them.

    ``rgb`` is the image already mapped to RGB 0..255 (uint8), the way the annotator feeds the
    network; ``source`` names the dataset (it goes into the model card with its licence).
    ``ignore`` (optional, bool) marks pixels whose class is unknown, such as a trimap's border
    band: the loss leaves them out.
    """

    name: str
    rgb: np.ndarray
    labels: np.ndarray
    source: str = ""
    ignore: np.ndarray | None = None

    def __post_init__(self):
        if self.rgb.shape[:2] != self.labels.shape:
            raise ValueError(f"{self.name}: image {self.rgb.shape[:2]} and labels {self.labels.shape} "
                             "differ in size")
        if self.ignore is not None and self.ignore.shape != self.labels.shape:
            raise ValueError(f"{self.name}: ignore mask {self.ignore.shape} and labels {self.labels.shape} "
                             "differ in size")


def as_rgb8(image: np.ndarray, contrast_limits: Sequence[float] | None = None,
            channels: Sequence[int] | None = None) -> np.ndarray:
    """An image as uint8 RGB (H, W, 3), mapped exactly as the predictor maps it."""
    image = np.asarray(image)
    layout = image_layout(image, channels)
    rgb = to_rgb255(image, layout, intensity_range(image, layout, contrast_limits))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def pairs_from_arrays(image: np.ndarray, labels: np.ndarray, name: str = "image", source: str = "",
                      contrast_limits: Sequence[float] | None = None, rgb: bool | None = None) -> list[Pair]:
    """Pairs from an image and a labels array (napari layers' data): 2D, or stacks with leading
    axes (Z, T ...) where only planes with at least one label count. ``rgb`` says whether the
    image's last axis is colour (default: guessed as napari does, 3 or 4 values)."""
    image, labels = np.asarray(image), np.asarray(labels)
    if rgb is None:
        rgb = image.ndim == labels.ndim + 1 and image.shape[-1] in (3, 4)
    spatial = image.shape[:-1] if rgb else image.shape
    if tuple(spatial) != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} do not match")
    if labels.ndim < 2:
        raise ValueError(f"labels must be at least 2D, got shape {labels.shape}")
    pairs = []
    for index in np.ndindex(*labels.shape[:-2]):
        plane = labels[index]
        if not plane.any():
            continue
        plane_name = f"{name}[{','.join(map(str, index))}]" if index else name
        pairs.append(Pair(plane_name, as_rgb8(image[index], contrast_limits), _as_ids(plane), source))
    return pairs


def _as_ids(labels: np.ndarray) -> np.ndarray:
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError("labels must hold whole numbers (instance ids)")
    if labels.min() < 0:
        raise ValueError("labels must not be negative")
    return labels.astype(np.int64 if labels.max() > np.iinfo(np.int32).max else np.int32)


def pairs_from_folders(images: str | Path, labels: str | Path, source: str = "") -> list[Pair]:
    """Pairs from a folder of images and one of instance-label files (tif/png) matched by name.
    Label files may be stacks; their unlabelled planes are left out."""
    pairs = []
    for name, image, label_image in folder_pairs(images, labels):
        pairs.extend(pairs_from_arrays(image, label_image, name, source or str(images)))
    return pairs


# --- the real datasets beside the project ------------------------------------------------------

SSTEM_SOURCE = ("ssTEM Drosophila VNC (Gerhard et al., figshare 10.6084/m9.figshare.856713), "
                "CC BY-NC-SA 3.0")
CVPPP_SOURCE = ("CVPPP A1 Arabidopsis (Minervini et al. 2016; Scharr et al. 2016), "
                "plant-phenotyping.org research-use terms")
BSDS_SOURCE = "BSDS500 test split (Arbelaez et al. 2011), non-commercial research/education use"
#: sstem_vnc label values inside a cell profile: intracellular, mitochondria, synapse.
SSTEM_CELL_VALUES = (191, 223, 255)
SSTEM_MIN_AREA = 200


def sstem_pairs(root: str | Path, slices: Iterable[int] | None = None) -> list[Pair]:
    """ssTEM stack1: instances are the connected components of the cell-interior classes
    (at least 200 px, as the dataset's SOURCE.txt derives them)."""
    root = Path(root) / "stack1"
    raws = sorted((root / "raw").glob("*.tif"))
    labels = sorted((root / "labels").glob("*.png"))
    if not raws or len(raws) != len(labels):
        raise FileNotFoundError(f"{root}: expected raw/*.tif and labels/*.png of equal number")
    chosen = range(len(raws)) if slices is None else list(slices)
    pairs = []
    for i in chosen:
        classes = read_label_image(labels[i])
        components, _ = ndimage.label(np.isin(classes, SSTEM_CELL_VALUES))
        sizes = np.bincount(components.ravel())
        components[sizes[components] < SSTEM_MIN_AREA] = 0
        pairs.append(Pair(f"sstem{i:02d}", as_rgb8(read_image(raws[i])), components.astype(np.int32),
                          SSTEM_SOURCE))
    return pairs


def cvppp_pairs(root: str | Path, plants: Iterable[int] | None = None) -> list[Pair]:
    """CVPPP A1: ``plantNNN_rgb.png`` with its leaf-id palette ``plantNNN_label.png``."""
    root = Path(root)
    found = {int(p.name[5:8]): p for p in sorted(root.glob("plant[0-9][0-9][0-9]_label.png"))}
    if not found:
        raise FileNotFoundError(f"{root}: no plantNNN_label.png files")
    chosen = sorted(found) if plants is None else [n for n in plants if n in found]
    return [Pair(f"plant{n:03d}", as_rgb8(read_image(root / f"plant{n:03d}_rgb.png")),
                 read_label_image(found[n]).astype(np.int32), CVPPP_SOURCE) for n in chosen]


def bsds_pairs(root: str | Path, annotator: int = 0, limit: int | None = None) -> list[Pair]:
    """BSDS500 test split: every region of one human annotator's map is an object."""
    from scipy.io import loadmat

    root = Path(root)
    pairs = []
    for mat in sorted((root / "groundTruth").glob("*.mat"))[:limit]:
        truth = loadmat(mat)["groundTruth"]
        k = min(annotator, truth.shape[1] - 1)
        regions = truth[0, k]["Segmentation"][0, 0].astype(np.int32)
        pairs.append(Pair(mat.stem, as_rgb8(read_image(root / "images" / f"{mat.stem}.jpg")), regions,
                          BSDS_SOURCE))
    return pairs


# --- splitting and validation ----------------------------------------------------------------------

def split_pairs(pairs: Sequence[Pair], val_fraction: float, seed: int = 0) -> tuple[list[Pair], list[Pair], str]:
    """Hold out whole images for validation. With a single image its objects are split instead
    (the only split there is); returns ``(train, val, how)``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    pairs = list(pairs)
    if val_fraction == 0 or not pairs:
        return pairs, [], "none"
    rng = np.random.default_rng(seed)
    if len(pairs) == 1:
        pair = pairs[0]
        ids = np.unique(pair.labels)
        ids = ids[ids != 0]
        n_val = int(round(val_fraction * len(ids)))
        if n_val == 0 or n_val == len(ids):
            return pairs, [], "none"
        val_ids = rng.choice(ids, n_val, replace=False)
        held = np.isin(pair.labels, val_ids)
        return ([replace(pair, labels=np.where(held, 0, pair.labels))],
                [replace(pair, name=f"{pair.name} (held-out objects)", labels=np.where(held, pair.labels, 0))],
                "objects")
    n_val = min(len(pairs) - 1, max(1, int(round(val_fraction * len(pairs)))))
    order = rng.permutation(len(pairs))
    val = sorted(order[:n_val])
    return ([p for i, p in enumerate(pairs) if i not in set(val)], [pairs[i] for i in val], "images")


def validation_instances(pairs: Sequence[Pair], min_area: int = DEFAULT_MIN_AREA, limit: int | None = 200,
                         seed: int = 0) -> list[Instance]:
    """The held-out objects as evaluation instances (a fixed random subset of ``limit``)."""
    found = []
    for pair_index, pair in enumerate(pairs):
        areas = np.bincount(pair.labels.ravel())
        found.extend((pair_index, int(i)) for i in np.flatnonzero(areas >= min_area) if i != 0)
    if limit is not None and len(found) > limit:
        chosen = np.random.default_rng(seed).choice(len(found), limit, replace=False)
        found = [found[i] for i in sorted(chosen)]
    return [Instance(f"{pairs[p].name}#{i}", pairs[p].rgb, pairs[p].labels == i) for p, i in found]


# --- samples ------------------------------------------------------------------------------------------

@dataclass
class DatasetStats:
    """What became of the labels: objects used and those left out, and why."""

    images: int = 0
    empty_images: int = 0
    objects: int = 0
    skipped_small: int = 0
    touching_border: int = 0
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "empty_images": self.empty_images, "objects": self.objects,
                "skipped_small": self.skipped_small, "touching_border": self.touching_border,
                "sources": list(self.sources)}


class InstanceDataset(torch.utils.data.Dataset):
    """Every object of ``pairs`` as a training sample (see the module's docstring).

    A sample is a dict: ``x`` [5, 512, 512] (RGB 0..255, inside, outside maps), ``target``
    [1, 512, 512] (0/1, and -1 where the pair's ``ignore`` mask says the class is unknown) and,
    for refinement models, ``clicks`` [2, 512, 512]. Objects smaller than ``min_area`` are skipped
    and counted; objects touching the image border are kept (users annotate them too: the crop is
    zero-padded there as at test time) and counted.
    The random draws depend on ``(seed, epoch, index)`` only, so a resumed run sees the same data.
    """

    def __init__(self, pairs: Sequence[Pair], min_area: int = DEFAULT_MIN_AREA, augment: bool = True,
                 jitter: bool = True, refine: bool = False, seed: int = 0):
        self.pairs = list(pairs)
        self.augment, self.jitter, self.refine, self.seed = augment, jitter, refine, seed
        self.epoch = 0
        self.objects: list[tuple[int, int, G.Box]] = []
        self.stats = DatasetStats(images=len(self.pairs),
                                  sources=sorted({p.source for p in self.pairs if p.source}))
        for pair_index, pair in enumerate(self.pairs):
            labels = pair.labels
            if not labels.any():
                self.stats.empty_images += 1
                continue
            areas = np.bincount(labels.ravel())
            for i, where in enumerate(ndimage.find_objects(labels), start=1):
                if where is None:
                    continue
                if areas[i] < min_area:
                    self.stats.skipped_small += 1
                    continue
                box = G.Box(where[0].start, where[1].start, where[0].stop - 1, where[1].stop - 1)
                if box.height < 2 or box.width < 2:
                    self.stats.skipped_small += 1
                    continue
                if box.r0 == 0 or box.c0 == 0 or box.r1 == labels.shape[0] - 1 or box.c1 == labels.shape[1] - 1:
                    self.stats.touching_border += 1
                self.objects.append((pair_index, i, box))
        self.stats.objects = len(self.objects)

    def __len__(self) -> int:
        return len(self.objects)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        pair_index, label_id, box = self.objects[index]
        pair = self.pairs[pair_index]
        rgb, mask, ignore = None, None, None
        if self.augment:
            rgb, mask, ignore = _augmented_region(pair, label_id, box, rng)
        if rgb is None:   # no augmentation, or the object vanished under it
            # The region the crop can reach, even with a jittered box.
            margin = G.RELAX + math.ceil(BOX_JITTER * max(box.height, box.width)) + 1
            region = box.grow(margin)
            mask = G.crop_padded(pair.labels, region) == label_id
            rgb = G.crop_padded(pair.rgb, region)
            ignore = None if pair.ignore is None else G.crop_padded(pair.ignore, region)
            box = G.Box(margin, margin, margin + box.height - 1, margin + box.width - 1)
        else:
            box = G.mask_box(mask)
        return self._sample(rgb, mask, box, rng, ignore)

    def _sample(self, rgb: np.ndarray, mask: np.ndarray, box: G.Box, rng: np.random.Generator,
                ignore: np.ndarray | None = None):
        """``rgb``/``mask`` (and ``ignore``) cover a region holding the object whose tight box
        is ``box``."""
        inside = G.most_interior_point(mask)
        if self.jitter:
            box = _jitter_box(box, rng, mask.shape)
            inside = _jitter_inside(mask, rng) or inside
        crop = box.grow(G.RELAX)
        rgb_crop = G.crop_padded(rgb, crop)
        mask_crop = G.crop_padded(mask.astype(np.float32), crop)
        x, clicks = G.frame_input(rgb_crop, crop, box, [inside], refine=self.refine)
        target = G.resize_bilinear(torch.from_numpy(mask_crop)[None, None], (G.FRAME, G.FRAME))[0]
        target = (target >= 0.5).float()
        if ignore is not None:
            ignore_crop = G.crop_padded(ignore.astype(np.float32), crop)
            unknown = G.resize_bilinear(torch.from_numpy(ignore_crop)[None, None], (G.FRAME, G.FRAME))[0]
            target[unknown >= 0.5] = -1.0
        # the crop's longer side in image pixels: where the first clicks' input would shrink it,
        # a network with a correction_input_size runs (so trains) its corrections larger
        sample = {"x": x, "target": target, "crop_side": torch.tensor(max(crop.height, crop.width))}
        if self.refine:
            sample["clicks"] = clicks
        else:   # the points the guidance maps were drawn from, for simulated corrections
            sample["inside"] = torch.from_numpy(G.to_frame([inside], crop).astype(np.float32))
            sample["outside"] = torch.from_numpy(G.outside_points(box, crop).astype(np.float32))
        return sample


def _jitter_box(box: G.Box, rng: np.random.Generator, shape: Sequence[int]) -> G.Box:
    """A box as a user might draw it: each edge off by up to 5% of the object's size."""
    dr, dc = max(1, round(BOX_JITTER * box.height)), max(1, round(BOX_JITTER * box.width))
    r0, r1 = box.r0 + rng.integers(-dr, dr + 1), box.r1 + rng.integers(-dr, dr + 1)
    c0, c1 = box.c0 + rng.integers(-dc, dc + 1), box.c1 + rng.integers(-dc, dc + 1)
    if r1 - r0 < 1 or c1 - c0 < 1:
        return box
    return G.Box(int(r0), int(c0), int(r1), int(c1))


def _jitter_inside(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """An inside click anywhere in the object's core (depth at least half the maximum)."""
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    rows, cols = np.nonzero(depth >= INSIDE_JITTER_DEPTH * depth.max())
    if rows.size == 0:
        return None
    k = rng.integers(rows.size)
    return int(rows[k]), int(cols[k])


def _augmented_region(pair: Pair, label_id: int, box: G.Box, rng: np.random.Generator):
    """The object under a random flip, rotation and scale about its box's centre: an RGB region,
    the object's mask and the pair's ignore mask there (or None), large enough for the box grown
    by ``RELAX``; Nones when the object vanishes (a thin object scaled down)."""
    angle = math.radians(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
    scale = rng.uniform(*SCALE_RANGE)
    flip = bool(rng.integers(2))
    centre = np.array([(box.r0 + box.r1) / 2.0, (box.c0 + box.c1) / 2.0])
    cos, sin = abs(math.cos(angle)), abs(math.sin(angle))
    half_h = scale * (cos * box.height + sin * box.width) / 2.0 + G.RELAX + 2
    half_w = scale * (sin * box.height + cos * box.width) / 2.0 + G.RELAX + 2
    out_shape = (int(math.ceil(2 * half_h)) + 1, int(math.ceil(2 * half_w)) + 1)
    out_centre = np.array([(out_shape[0] - 1) / 2.0, (out_shape[1] - 1) / 2.0])
    # output pixel o -> source pixel s = centre + M (o - out_centre), M = R(-angle) F / scale
    c, s = math.cos(angle), math.sin(angle)
    matrix = np.array([[c, -s], [s, c]]) / scale
    if flip:
        matrix = matrix @ np.diag([1.0, -1.0])
    # Read only the source window the output can reach; outside the image is zero, as at test time.
    corners = np.array([[0, 0], [0, out_shape[1] - 1], [out_shape[0] - 1, 0], [out_shape[0] - 1, out_shape[1] - 1]])
    reach = centre + (corners - out_centre) @ matrix.T
    lo = np.maximum(np.floor(reach.min(0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(reach.max(0)).astype(int) + 2, pair.labels.shape)
    if np.any(hi <= lo):
        return None, None, None
    offset = centre - lo - matrix @ out_centre
    source_mask = (pair.labels[lo[0]:hi[0], lo[1]:hi[1]] == label_id).astype(np.uint8)
    if pair.ignore is not None:
        source_mask[pair.ignore[lo[0]:hi[0], lo[1]:hi[1]]] = 2
    classes = ndimage.affine_transform(source_mask, matrix, offset, out_shape, order=0, mode="constant")
    mask = classes == 1
    if G.mask_box(mask) is None or mask.sum() < 4:
        return None, None, None
    source_rgb = pair.rgb[lo[0]:hi[0], lo[1]:hi[1]].astype(np.float32)
    rgb = np.stack([ndimage.affine_transform(source_rgb[..., k], matrix, offset, out_shape, order=1,
                                             mode="constant") for k in range(3)], axis=-1)
    return rgb, mask, (classes == 2 if pair.ignore is not None else None)
