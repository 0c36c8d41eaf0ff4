"""The annotation session, free of napari: clicks by role, the current object, commit, undo.

The napari widget and ``Annotator`` are thin layers over :class:`AnnotationSession`; it works
on plain arrays so that its rules are tested without a viewer:

* clicks 1-2 are the box corners, click 3 (and more, with ``role="inside"``) the inside click,
  later ones corrections (positive unless said negative);
* :meth:`commit` writes the current object into the labels with a fresh id (one more than
  any id used so far, so ids are not reused after a deletion) and, unless ``overwrite`` is
  on, never changes a pixel that already has a label;
* :meth:`undo` takes back the last click, or, with no object in progress, the last commit,
  restoring the labels exactly.

``labels`` is written in place: pass ``labels[z]`` (a view) to annotate slice z of a stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import guidance as G
from .predictor import IOGPredictor, Prediction

ROLES = ("corner", "inside", "positive", "negative")


@dataclass
class _Commit:
    label_id: int
    window: G.Box
    previous: np.ndarray        # the labels in ``window`` before the commit
    next_id_before: int


@dataclass
class AnnotationSession:
    predictor: IOGPredictor
    image: Any                  # a 2D plane (numpy, dask, zarr ...), as IOGPredictor takes it
    labels: np.ndarray          # 2D integer array, written in place
    overwrite: bool = False
    predict_options: dict[str, Any] = field(default_factory=dict)  # channels, contrast_limits, threshold

    def __post_init__(self):
        if self.labels.ndim != 2:
            raise ValueError(f"labels must be a 2D plane, got shape {self.labels.shape}")
        if not np.issubdtype(self.labels.dtype, np.integer):
            raise ValueError(f"labels must have an integer dtype, got {self.labels.dtype}")
        if tuple(self.labels.shape) != tuple(self.image.shape[:2]):
            raise ValueError(f"labels {self.labels.shape} and image {self.image.shape[:2]} differ in size")
        self.clicks: list[tuple[str, tuple[float, float]]] = []
        self.current: Prediction | None = None
        self._commits: list[_Commit] = []
        self._next_id = int(self.labels.max()) + 1 if self.labels.size else 1

    # --- clicks -----------------------------------------------------------------------------

    def points(self, role: str) -> list[tuple[float, float]]:
        return [p for r, p in self.clicks if r == role]

    def next_role(self, negative: bool = False) -> str:
        """The role the next click will get."""
        corners, inside = len(self.points("corner")), len(self.points("inside"))
        if corners < 2:
            return "corner"
        if inside == 0:
            return "inside"
        return "negative" if negative else "positive"

    def add_click(self, point, role: str | None = None, negative: bool = False) -> Prediction | None:
        """Add one click and predict when there are enough. A click that cannot be used raises
        a :class:`~napari_iog.guidance.ClickError` and leaves the session as it was."""
        role = role or self.next_role(negative)
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        expected = self.next_role(negative)
        if role == "corner" and expected != "corner":
            raise G.ClickError("the box already has two corners: undo or clear to redraw it")
        if role != "corner" and expected == "corner":
            raise G.ClickError("click two opposite corners of a box around the object first")
        if role in ("positive", "negative") and expected == "inside":
            raise G.ClickError("click inside the object before correcting it")
        point = tuple(float(v) for v in point)
        G.pixel(point, self.labels.shape, f"{role} click")
        self.clicks.append((role, point))
        try:
            self._predict()
        except Exception:
            self.clicks.pop()
            raise
        return self.current

    def _predict(self) -> None:
        corners, inside = self.points("corner"), self.points("inside")
        if len(corners) == 2:
            G.box_from_corners(corners, self.labels.shape)  # a zero-area box is refused at once
        if len(corners) < 2 or not inside:
            self.current = None
            return
        self.current = self.predictor.predict(
            self.image, corners=corners, inside=inside, positive=self.points("positive"),
            negative=self.points("negative"), **self.predict_options)

    # --- commit, undo, clear ------------------------------------------------------------------

    @property
    def next_id(self) -> int:
        return max(self._next_id, 1)

    def commit(self) -> int:
        """Write the current object into ``labels`` with a fresh id; returns the id."""
        if self.current is None:
            raise ValueError("no object to commit: click two corners and one inside point first")
        window = self.current.window
        region = self.labels[window.slices()]
        mask = self.current.window_mask()
        if not self.overwrite:
            mask = mask & (region == 0)
        if not mask.any():
            raise ValueError("the object has no pixels to write"
                             + ("" if self.overwrite else " (all of it is already labelled; turn on overwrite)"))
        label_id = self.next_id
        if label_id > np.iinfo(self.labels.dtype).max:
            raise ValueError(f"label id {label_id} does not fit the labels' dtype {self.labels.dtype}")
        self._commits.append(_Commit(label_id, window, region.copy(), self._next_id))
        region[mask] = label_id
        self._next_id = label_id + 1
        self.clicks.clear()
        self.current = None
        return label_id

    def clear(self) -> None:
        """Drop the object in progress (its clicks and its prediction)."""
        self.clicks.clear()
        self.current = None

    def undo(self) -> str | None:
        """Take back the last click, or with no click in progress the last commit.
        Returns what was undone ("click", "commit") or None when there was nothing."""
        if self.clicks:
            self.clicks.pop()
            try:
                self._predict()
            except Exception:
                self.current = None
            return "click"
        if self._commits:
            last = self._commits.pop()
            self.labels[last.window.slices()] = last.previous
            self._next_id = last.next_id_before
            return "commit"
        return None
