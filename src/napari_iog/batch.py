"""Segment many objects from boxes given in a file (CSV or COCO JSON), without clicking.

    prompts = read_box_file("boxes.csv")          # or a COCO .json with "bbox" entries
    labels, report = segment_boxes(IOGPredictor(...), image, prompts)

Each box becomes the two corner clicks; the inside click is the given point, or the box's
centre when the file has none. Objects are written with the preserve rule of the annotator:
a later object never takes pixels of an earlier one. napari-free.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import geometry as G
from .labels import LabelsWriter, plane_of
from .prompt import Prompt

_X0 = ("x0", "xmin", "x_min", "left")
_Y0 = ("y0", "ymin", "y_min", "top")
_X1 = ("x1", "xmax", "x_max", "right")
_Y1 = ("y1", "ymax", "y_max", "bottom")
_X = ("x", "inside_x", "point_x")
_Y = ("y", "inside_y", "point_y")
_PLANE = ("plane", "z", "t", "frame", "slice")
_LABEL = ("label", "label_id", "id")


@dataclass
class BoxPrompt:
    """One object to segment: its box corners and inside click as (row, col) pixels."""

    corners: tuple[tuple[float, float], tuple[float, float]]
    inside: tuple[float, float] | None = None     # None: the box's centre
    plane: tuple[int, ...] = ()
    label_id: int | None = None                   # None: the next free id
    source: str = ""                              # where in the file it came from, for errors

    def prompt(self, image_shape: Sequence[int]) -> Prompt:
        """The validated prompt on an image (plane) of ``image_shape``; a ClickError if unusable."""
        (r0, c0), (r1, c1) = self.corners
        inside = self.inside if self.inside is not None else ((r0 + r1) / 2, (c0 + c1) / 2)
        try:
            return Prompt.check(image_shape, [self.corners[0], self.corners[1]], [inside])
        except G.BoxTooSmall as err:        # said of the box in the file, not of clicks
            raise G.ClickError(f"the box covers only {err.height} x {err.width} pixels (rows x cols): a box needs "
                               "at least 2 x 2; widen it in the file") from None


class BoxFileError(ValueError):
    pass


def _column(header: Sequence[str], names: Sequence[str]) -> str | None:
    lower = {h.strip().lower(): h for h in header}
    return next((lower[n] for n in names if n in lower), None)


def read_box_csv(path: str | os.PathLike) -> list[BoxPrompt]:
    """Boxes from a CSV with a header: ``x0,y0,x1,y1`` (or ``xmin,ymin,xmax,ymax``; pixel
    columns and rows, inclusive), optionally ``x,y`` (the inside click), ``plane`` (or ``z``,
    ``t``) and ``label`` (the id to write)."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        cols = {key: _column(header, names) for key, names in
                (("x0", _X0), ("y0", _Y0), ("x1", _X1), ("y1", _Y1), ("x", _X), ("y", _Y),
                 ("plane", _PLANE), ("label", _LABEL))}
        missing = [k for k in ("x0", "y0", "x1", "y1") if cols[k] is None]
        if missing:
            raise BoxFileError(f"{path.name}: the header needs box columns x0,y0,x1,y1 (or xmin,ymin,xmax,ymax); "
                               f"found {', '.join(header) or 'none'}")
        prompts = []
        for n, row in enumerate(reader, start=2):
            where = f"{path.name} line {n}"
            for key in ("x0", "y0", "x1", "y1"):
                value = (row.get(cols[key]) or "").strip()
                if not value:
                    raise BoxFileError(f"{where}: the box column {cols[key]} is empty: every box needs x0,y0,x1,y1")
            try:
                x0, y0, x1, y1 = (float(row[cols[k]]) for k in ("x0", "y0", "x1", "y1"))
                inside = None
                if cols["x"] and cols["y"] and row[cols["x"]] not in ("", None):
                    inside = (float(row[cols["y"]]), float(row[cols["x"]]))
                plane = ()
                if cols["plane"] and row[cols["plane"]] not in ("", None):
                    plane = tuple(int(v) for v in str(row[cols["plane"]]).replace(";", " ").split())
                label = int(row[cols["label"]]) if cols["label"] and row[cols["label"]] not in ("", None) else None
            except (TypeError, ValueError) as err:
                raise BoxFileError(f"{where}: {err}") from err
            prompts.append(BoxPrompt(((y0, x0), (y1, x1)), inside, plane, label, where))
    return prompts


def read_box_coco(path: str | os.PathLike) -> list[BoxPrompt]:
    """Boxes from the annotations of a COCO JSON: ``bbox`` ``[x, y, width, height]``; an
    ``inside`` (or ``point``) ``[x, y]`` when present; an image's ``plane`` for stacks. Boxes
    in COCO are continuous: the pixels covered are ``x .. x + width - 1``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        images = {im["id"]: im for im in data.get("images", [])}
        annotations = data["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise BoxFileError(f"{path.name} is not a COCO file with annotations: {err}") from err
    prompts = []
    for ann in annotations:
        where = f"{path.name} annotation {ann.get('id')}"
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError) as err:
            raise BoxFileError(f"{where}: no bbox [x, y, width, height]") from err
        point = ann.get("inside", ann.get("point"))
        inside = (float(point[1]), float(point[0])) if point is not None else None
        plane = tuple(images.get(ann.get("image_id"), {}).get("plane", ()))
        corners = ((y, x), (y + max(h, 1) - 1, x + max(w, 1) - 1))
        prompts.append(BoxPrompt(corners, inside, plane, ann.get("label_id"), where))
    return prompts


def read_box_file(path: str | os.PathLike) -> list[BoxPrompt]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        return read_box_coco(path)
    return read_box_csv(path)


@dataclass
class BatchReport:
    objects: int = 0
    written: int = 0
    empty: list[str] | None = None       # prompts whose object was empty or fully covered
    cancelled: bool = False


def spatial_shape(image, prompts: Sequence[BoxPrompt]) -> tuple[int, ...]:
    """The image's (..., rows, cols): as many leading axes as the prompts' planes have; at
    most one axis (channels) may follow rows and cols."""
    shape = tuple(image.shape)
    leading = len(prompts[0].plane) if prompts else 0
    # a trailing axis longer than 4 and than the first axis is columns, not channels: a stack
    stack = len(shape) == leading + 3 and shape[-1] > 4 and shape[-1] > shape[leading]
    if len(shape) - leading - 2 > 1 or len(shape) < leading + 2 or stack:
        raise BoxFileError(f"the image is a stack (shape {' x '.join(map(str, shape))}): say on which plane each "
                           "box lies (a 'plane' column in the CSV, or 'plane' in the COCO images)")
    return shape[:leading + 2]


def check_boxes(spatial: tuple[int, ...], prompts: Sequence[BoxPrompt]) -> list[Prompt]:
    """Every box against the image, before any network work: their validated prompts, or a
    :class:`BoxFileError` that names the first bad one."""
    checked = []
    for p in prompts:
        if len(p.plane) != len(spatial) - 2 or any(not 0 <= v < n for v, n in zip(p.plane, spatial)):
            raise BoxFileError(f"{p.source}: plane {p.plane} is not a plane of an image of shape {spatial}")
        try:
            checked.append(p.prompt(spatial[-2:]))
        except G.ClickError as err:
            raise BoxFileError(f"{p.source}: {err}") from err
    return checked


def predict_boxes(predictor, image, boxes: Sequence[BoxPrompt], prompts: Sequence[Prompt],
                  select: Sequence[int] | None = None, batch_size: int | None = None,
                  on_progress: Callable[[int, int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None, **predict_options
                  ) -> dict[int, tuple[G.Box, np.ndarray]]:
    """``{box index: (window, mask in window)}`` for the boxes ``select`` (all by default), from
    their prompts as :func:`check_boxes` made them, batched per plane. Stops early (returning
    what is done) when ``should_stop`` says so."""
    select = range(len(boxes)) if select is None else select
    by_plane: dict[tuple[int, ...], list[int]] = {}
    for i in select:
        by_plane.setdefault(boxes[i].plane, []).append(i)
    chunk = batch_size or (16 if getattr(predictor.device, "type", "cpu") == "cuda" else 4)
    results: dict[int, tuple[G.Box, np.ndarray]] = {}
    for plane, indices in by_plane.items():
        plane_image = plane_of(image, plane)
        for start in range(0, len(indices), chunk):
            if should_stop is not None and should_stop():
                return results
            batch = indices[start:start + chunk]
            predictions = predictor.predict_batch(plane_image, [prompts[i] for i in batch],
                                                  batch_size=chunk, **predict_options)
            for i, prediction in zip(batch, predictions):
                results[i] = (prediction.window, prediction.window_mask())
            if on_progress is not None:
                on_progress(len(results), len(select))
    return results


def write_boxes(labels, prompts: Sequence[BoxPrompt], results: dict[int, tuple[G.Box, np.ndarray]]) -> BatchReport:
    """Write the results in the prompts' order, each into pixels no earlier object took; a
    prompt without a ``label_id`` gets the next free id."""
    report = BatchReport(objects=len(prompts), empty=[], cancelled=len(results) < len(prompts))
    writer = LabelsWriter(labels)
    with writer.edit() as edit:
        for i in sorted(results):
            window, mask = results[i]
            if writer.paint(edit, prompts[i].plane, window, mask, prompts[i].label_id) is None:
                report.empty.append(prompts[i].source)
            else:
                report.written += 1
    return report


def segment_boxes(predictor, image, prompts: Sequence[BoxPrompt], labels=None, batch_size: int | None = None,
                  on_progress: Callable[[int, int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None, **predict_options) -> tuple[Any, BatchReport]:
    """Segment every prompt and write it into ``labels`` (uint32 zeros of the image's size when
    None). A bad prompt raises a :class:`BoxFileError` naming its line before anything runs."""
    spatial = spatial_shape(image, prompts)
    if labels is None:
        labels = np.zeros(spatial, np.uint32)
    elif tuple(labels.shape) != spatial:
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match the image's {spatial}")
    checked = check_boxes(spatial, prompts)
    results = predict_boxes(predictor, image, prompts, checked, None, batch_size, on_progress, should_stop,
                            **predict_options)
    return labels, write_boxes(labels, prompts, results)
