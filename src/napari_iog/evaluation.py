"""Evaluation by simulated users, the protocol the interactive segmentation field reports.

* Clicks 1-3 (IOG): the two opposite corners of the object's tight bounding box, then one
  inside click at the most interior pixel (distance transform maximum). DEXTR models get the
  four extreme points instead (clicks 1-4).
* Click k > 3: at the most interior pixel of the larger error region, the largest connected
  region of false negatives (a positive click) or of false positives (a negative click),
  up to ``max_clicks`` (20).
* IoU excludes "ignore" pixels where a dataset has them (GrabCut's 128 band).
* mIoU@k over objects for each k; NoC@85 / NoC@90: the clicks needed to reach IoU 0.85 / 0.90,
  ``max_clicks`` when never reached. A method's IoU before it has enough clicks (k < 3 for
  IOG) counts as 0.

Methods are anything with ``first_click`` (the number of clicks it needs) and
``segment(image, clicks) -> bool mask``: :class:`IOGMethod` wraps an ``IOGPredictor``;
:class:`BoxBaseline` and :class:`GrabCutBaseline` (OpenCV, optional) give every table a floor.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from . import geometry as G
from .io import IMAGE_SUFFIXES, read_image, read_label_image

DEFAULT_MAX_CLICKS = 20


@dataclass
class Instance:
    """One object to segment: the image, its mask, and pixels to ignore (or None)."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    ignore: np.ndarray | None = None


# --- datasets -----------------------------------------------------------------------------------

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


def load_dataset(spec: str | Path, data_root: str | Path | None = None) -> list[Instance]:
    """``"grabcut"``/``"berkeley"`` (from ``data_root``, default ``../shared/data`` of the
    working directory), or a folder in the GrabCut or Berkeley layout, or a folder with
    ``images/`` and ``labels/``."""
    spec = str(spec)
    root = Path(data_root) if data_root else Path("..") / "shared" / "data"
    path = root / spec if spec in ("grabcut", "berkeley") else Path(spec)
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


# --- simulated clicks -----------------------------------------------------------------------------

def initial_clicks(mask: np.ndarray) -> dict[str, list]:
    """IOG's first three clicks: the tight box's corners and the most interior pixel."""
    box = G.mask_box(mask)
    return {"corners": [(box.r0, box.c0), (box.r1, box.c1)], "inside": [G.most_interior_point(mask)]}


def extreme_points(mask: np.ndarray) -> list[tuple[int, int]]:
    """DEXTR's four clicks: left-, right-most, top and bottom pixels (the middle one of each
    extreme column/row)."""
    rows, cols = np.nonzero(mask)

    def middle(values):
        values = np.sort(values)
        return int(values[len(values) // 2])

    left, right, top, bottom = cols.min(), cols.max(), rows.min(), rows.max()
    return [(middle(rows[cols == left]), int(left)), (middle(rows[cols == right]), int(right)),
            (int(top), middle(cols[rows == top])), (int(bottom), middle(cols[rows == bottom]))]


def iou(prediction: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None) -> float:
    valid = np.ones(truth.shape, bool) if ignore is None else ~ignore
    union = np.count_nonzero((prediction | truth) & valid)
    return 1.0 if union == 0 else np.count_nonzero(prediction & truth & valid) / union


def next_click(prediction: np.ndarray, truth: np.ndarray,
               ignore: np.ndarray | None = None) -> tuple[tuple[int, int], bool] | None:
    """The next simulated click: ``(point, positive)``, or None when there is no error."""
    valid = np.ones(truth.shape, bool) if ignore is None else ~ignore
    best = None
    for errors, positive in ((truth & ~prediction & valid, True), (prediction & ~truth & valid, False)):
        regions, n = ndimage.label(errors)
        if n == 0:
            continue
        sizes = np.bincount(regions.ravel())[1:]
        largest = int(np.argmax(sizes))
        if best is None or sizes[largest] > best[0]:
            best = (int(sizes[largest]), regions == largest + 1, positive)
    if best is None:
        return None
    return G.most_interior_point(best[1]), best[2]


# --- methods ----------------------------------------------------------------------------------------

class IOGMethod:
    """An IOGPredictor under the simulated user (DEXTR models: the four extreme points).

    ``postprocess``: False (the default) scores the network's raw output as the published
    protocol does, so figures compare with the papers'; True scores the cleaned mask a user gets."""

    def __init__(self, predictor, name: str | None = None, postprocess: bool = False):
        self.predictor = predictor
        self.postprocess = postprocess
        self.name = name or predictor.arch
        self.dextr = predictor.is_dextr
        self.first_click = 4 if self.dextr else 3

    def segment(self, image, clicks: dict[str, list]) -> np.ndarray:
        if self.dextr:
            return self.predictor.predict_extreme(image, clicks["extreme"]).mask
        return self.predictor.predict(image, corners=clicks["corners"], inside=clicks["inside"],
                                      positive=clicks["positive"], negative=clicks["negative"],
                                      postprocess=self.postprocess).mask

    def takes_corrections(self) -> bool:
        return not self.dextr


class BoxBaseline:
    """The clicked box itself as the mask: the floor every method must beat."""

    name = "box"
    first_click = 2

    def segment(self, image, clicks) -> np.ndarray:
        mask = np.zeros(image.shape[:2], bool)
        mask[G.box_from_corners(clicks["corners"], mask.shape).slices()] = True
        return mask

    def takes_corrections(self) -> bool:
        return False


class GrabCutBaseline:
    """OpenCV's GrabCut initialised from the box, with the clicks as hard seeds (discs of
    ``seed_radius``): inside and positive clicks foreground, negative clicks background.
    Needs ``opencv-python-headless`` (the ``benchmark`` extra)."""

    name = "opencv-grabcut"
    first_click = 3

    def __init__(self, iterations: int = 5, seed_radius: int = 5):
        import cv2  # noqa: F401  (fails early when OpenCV is missing)

        self.iterations, self.seed_radius = iterations, seed_radius

    def segment(self, image, clicks) -> np.ndarray:
        import cv2

        rgb = np.asarray(image)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        bgr = np.ascontiguousarray(rgb[..., ::-1].astype(np.uint8))
        mask = np.full(bgr.shape[:2], cv2.GC_BGD, np.uint8)
        mask[G.box_from_corners(clicks["corners"], mask.shape).slices()] = cv2.GC_PR_FGD
        for key, value in (("inside", cv2.GC_FGD), ("positive", cv2.GC_FGD), ("negative", cv2.GC_BGD)):
            for r, c in clicks.get(key, []):
                cv2.circle(mask, (int(c), int(r)), self.seed_radius, int(value), -1)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(bgr, mask, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
        return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)

    def takes_corrections(self) -> bool:
        return True


# --- the loop ------------------------------------------------------------------------------------------

def evaluate_instance(method, instance: Instance, max_clicks: int = DEFAULT_MAX_CLICKS) -> dict[str, Any]:
    """Simulate one user on one object; returns per-click IoUs (index k-1 for click k) and NoC."""
    mask, ignore = instance.mask.astype(bool), instance.ignore
    if getattr(method, "dextr", False):
        clicks: dict[str, list] = {"extreme": extreme_points(mask)}
    else:
        clicks = {**initial_clicks(mask), "positive": [], "negative": []}
    ious = [0.0] * (method.first_click - 1)
    start = time.perf_counter()
    prediction = method.segment(instance.image, clicks)
    ious.append(iou(prediction, mask, ignore))
    while len(ious) < max_clicks:
        click = next_click(prediction, mask, ignore) if method.takes_corrections() else None
        if click is None:   # no error left, or a method without corrections: the result stays
            ious.append(ious[-1])
            continue
        point, positive = click
        clicks["positive" if positive else "negative"].append(point)
        prediction = method.segment(instance.image, clicks)
        ious.append(iou(prediction, mask, ignore))
    return {"name": instance.name, "ious": ious, "noc85": noc(ious, 0.85, max_clicks),
            "noc90": noc(ious, 0.90, max_clicks), "seconds": time.perf_counter() - start}


def noc(ious: Sequence[float], threshold: float, max_clicks: int = DEFAULT_MAX_CLICKS) -> int:
    """Clicks until IoU reaches ``threshold`` (``max_clicks`` when never)."""
    return next((k + 1 for k, value in enumerate(ious[:max_clicks]) if value >= threshold), max_clicks)


def summarize(per_instance: Sequence[dict[str, Any]], first_click: int = 3) -> dict[str, Any]:
    ious = np.array([r["ious"] for r in per_instance], dtype=np.float64)
    if ious.size == 0:
        raise ValueError("no objects were evaluated")
    curve = ious.mean(axis=0)
    return {"objects": len(per_instance), "first_click": first_click,
            "miou_at": {k + 1: float(v) for k, v in enumerate(curve)},
            "miou@3": float(curve[2]) if len(curve) >= 3 else None,
            "miou_first": float(curve[first_click - 1]) if len(curve) >= first_click else None,
            "noc85": float(np.mean([r["noc85"] for r in per_instance])),
            "noc90": float(np.mean([r["noc90"] for r in per_instance])),
            "seconds_per_object": float(np.mean([r["seconds"] for r in per_instance]))}


def evaluate(method, instances: Iterable[Instance], max_clicks: int = DEFAULT_MAX_CLICKS,
             progress: Callable[[int, int, dict], None] | None = None) -> dict[str, Any]:
    """Run the simulated user over a dataset; returns ``{"method", "summary", "instances"}``."""
    instances = list(instances)
    results = []
    for i, instance in enumerate(instances):
        results.append(evaluate_instance(method, instance, max_clicks))
        if progress:
            progress(i + 1, len(instances), results[-1])
    return {"method": method.name, "max_clicks": max_clicks, "summary": summarize(results, method.first_click),
            "instances": results}


def write_results(result: dict[str, Any], out_dir: str | Path, tag: str) -> dict[str, Path]:
    """``<tag>.json`` (everything) and ``<tag>.csv`` (one row per object)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / f"{tag}.json", out / f"{tag}.csv"
    json_path.write_text(json.dumps(result, indent=1))
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        k = result["max_clicks"]
        writer.writerow(["name", "noc85", "noc90", "seconds"] + [f"iou@{i}" for i in range(1, k + 1)])
        for r in result["instances"]:
            writer.writerow([r["name"], r["noc85"], r["noc90"], f"{r['seconds']:.3f}"]
                            + [f"{v:.4f}" for v in r["ious"]])
    return {"json": json_path, "csv": csv_path}


def plot_curves(summaries: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """mIoU against clicks for several methods, as a PNG (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, summary in summaries.items():
        first = summary.get("first_click", 1)
        ks = [k for k in map(int, summary["miou_at"]) if k >= first]
        ax.plot(ks, [summary["miou_at"][k] if k in summary["miou_at"] else summary["miou_at"][str(k)]
                     for k in ks], marker="o", markersize=3, label=label)
    ax.set_xlabel("clicks")
    ax.set_ylabel("mIoU")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
