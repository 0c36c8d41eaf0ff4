"""The annotation session, free of napari: clicks by role, the current object, commit, undo.

The napari widget and ``Annotator`` are thin layers over :class:`AnnotationSession`; it works
on plain arrays so that its rules are tested without a viewer:

* clicks 1-2 are the box corners, click 3 (and more, with ``role="inside"``) the inside click,
  later ones corrections (positive unless said negative). With a DEXTR model the four clicks
  are the object's extreme points instead;
* :meth:`commit` writes the current object into the labels with a fresh id (one more than
  any id used so far, so ids are not reused after a deletion) and, unless ``overwrite`` is
  on, never changes a pixel that already has a label;
* :meth:`undo` takes back the last click, or, with no object in progress, the last commit,
  restoring the labels exactly.

``labels`` may be a plane (rows, cols) or a stack (..., rows, cols); an object lives on one
plane, named by the leading indices (``plane=(z,)``), and only that plane is written.
``labels`` is written in place.

Prediction can run elsewhere (a worker thread): a click changes :attr:`version`,
:meth:`request` hands out the work for the current clicks, and :meth:`accept` takes its
result only while the clicks are still those it was computed for, so a stale result is
dropped, never shown or written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import guidance as G
from .predictor import IOGPredictor, Prediction

ROLES = ("corner", "inside", "positive", "negative", "extreme")


@dataclass
class _Commit:
    label_id: int
    plane: tuple[int, ...]
    window: G.Box
    previous: np.ndarray        # the labels in ``window`` before the commit
    next_id_before: int


@dataclass
class AnnotationSession:
    predictor: IOGPredictor
    image: Any                  # (rows, cols[, channels]) or a stack of them (numpy, dask, zarr ...)
    labels: np.ndarray          # integer, (rows, cols) or (..., rows, cols); written in place
    overwrite: bool = False
    predict_options: dict[str, Any] = field(default_factory=dict)  # channels, contrast_limits, threshold

    def __post_init__(self):
        if self.labels.ndim < 2:
            raise ValueError(f"labels must have at least two dimensions, got shape {self.labels.shape}")
        if not np.issubdtype(self.labels.dtype, np.integer):
            raise ValueError(f"labels must have an integer dtype, got {self.labels.dtype}")
        if tuple(self.image.shape[:self.labels.ndim]) != tuple(self.labels.shape):
            raise ValueError(f"labels {self.labels.shape} and image {self.image.shape} differ in size")
        self.mode = "extreme" if self.predictor.is_dextr else "iog"
        self.clicks: list[tuple[str, tuple[float, float]]] = []
        self.plane: tuple[int, ...] = ()
        self.current: Prediction | None = None
        self.version = 0            # changes with every change of the clicks
        self._current_version = 0   # the clicks ``current`` was computed for
        self._commits: list[_Commit] = []
        self._next_id = int(self.labels.max()) + 1 if self.labels.size else 1

    @property
    def plane_shape(self) -> tuple[int, int]:
        return tuple(self.labels.shape[-2:])

    def _check_plane(self, plane) -> tuple[int, ...]:
        plane = tuple(int(i) for i in plane)
        leading = self.labels.shape[:-2]
        if len(plane) != len(leading) or any(not 0 <= i < n for i, n in zip(plane, leading)):
            raise G.ClickError(f"plane {plane} is not a plane of labels of shape {self.labels.shape}")
        return plane

    # --- clicks -----------------------------------------------------------------------------

    def points(self, role: str) -> list[tuple[float, float]]:
        return [p for r, p in self.clicks if r == role]

    def next_role(self, negative: bool = False) -> str:
        """The role the next click will get."""
        if self.mode == "extreme":
            return "extreme"
        corners, inside = len(self.points("corner")), len(self.points("inside"))
        if corners < 2:
            return "corner"
        if inside == 0:
            return "inside"
        return "negative" if negative else "positive"

    def add_click(self, point, role: str | None = None, negative: bool = False, plane=(),
                  predict: bool = True) -> Prediction | None:
        """Add one click on ``plane`` and, with ``predict``, predict when there are enough.
        A click that cannot be used raises a :class:`~napari_iog.guidance.ClickError` and
        leaves the session as it was."""
        role = role or self.next_role(negative)
        plane = self._check_plane(plane)
        if self.clicks and plane != self.plane:
            raise G.ClickError(f"the object in progress is on plane {self.plane}: commit or clear it "
                               f"before clicking on plane {plane}")
        self.set_clicks([*self.clicks, (role, point)], plane, predict=predict)
        return self.current

    def set_clicks(self, clicks: Sequence[tuple[str, Sequence[float]]], plane=(), predict: bool = True) -> None:
        """Replace all clicks of the object in progress (e.g. after the user moved or deleted a
        point). Checked as a whole; on an error nothing changes."""
        plane = self._check_plane(plane)
        clicks = [(role, tuple(float(v) for v in point)) for role, point in clicks]
        self._check_clicks(clicks)
        self.clicks, self.plane = clicks, plane
        self.version += 1
        if predict:
            self.update()

    def _check_clicks(self, clicks: list[tuple[str, tuple[float, float]]]) -> None:
        shape = self.plane_shape
        roles = [r for r, _ in clicks]
        for role, point in clicks:
            if role not in ROLES:
                raise ValueError(f"role must be one of {ROLES}, not {role!r}")
            G.pixel(point, shape, f"{role} click")
        if self.mode == "extreme":
            if any(r != "extreme" for r in roles):
                raise G.ClickError("this DEXTR model takes the object's four extreme points only")
            if len(clicks) > 4:
                raise G.ClickError("the four extreme points are set: commit, or undo one to move it")
            if len(clicks) == 4:
                self.predictor.check_extreme(shape, [p for _, p in clicks])
            return
        if "extreme" in roles:
            raise G.ClickError("extreme points are for DEXTR models; this model takes a box and an inside click")
        if roles.count("corner") > 2:
            raise G.ClickError("the box already has two corners: undo or clear to redraw it")
        if roles.count("corner") < 2 and len(roles) > roles.count("corner"):
            raise G.ClickError("click two opposite corners of a box around the object first")
        if roles.count("inside") == 0 and ("positive" in roles or "negative" in roles):
            raise G.ClickError("click inside the object before correcting it")
        corners = [p for r, p in clicks if r == "corner"]
        if len(corners) == 2:
            G.box_from_corners(corners, shape)  # a zero-area box is refused at once
        if "inside" in roles:
            self.predictor.check_prompt(shape, self._prompt(clicks))

    @staticmethod
    def _prompt(clicks) -> dict[str, list]:
        by_role = {r: [p for role, p in clicks if role == r] for r in ("corner", "inside", "positive", "negative")}
        return dict(corners=by_role["corner"], inside=by_role["inside"], positive=by_role["positive"],
                    negative=by_role["negative"])

    # --- prediction ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Are there enough clicks for a prediction?"""
        if self.mode == "extreme":
            return len(self.clicks) == 4
        return len(self.points("corner")) == 2 and bool(self.points("inside"))

    @property
    def up_to_date(self) -> bool:
        """Does :attr:`current` belong to the clicks as they are now?"""
        return self._current_version == self.version

    def request(self) -> tuple[int, Callable[[], Prediction | None]]:
        """The work for the current clicks: ``(version, task)``; ``task()`` may run in another
        thread (it reads the image and runs the network), then pass its result to :meth:`accept`."""
        version, clicks, plane = self.version, list(self.clicks), self.plane
        if not self.ready:
            return version, lambda: None
        image = self.image[plane] if plane else self.image
        options = dict(self.predict_options)
        if self.mode == "extreme":
            points = [p for _, p in clicks]
            return version, lambda: self.predictor.predict_extreme(image, points, **options)
        prompt = self._prompt(clicks)
        return version, lambda: self.predictor.predict(image, **prompt, **options)

    def accept(self, version: int, prediction: Prediction | None) -> bool:
        """Take a result computed for ``version``; a stale one is dropped (returns False)."""
        if version != self.version:
            return False
        self.current, self._current_version = prediction, version
        return True

    def update(self) -> Prediction | None:
        """Predict for the current clicks here and now."""
        version, task = self.request()
        self.accept(version, task())
        return self.current

    # --- commit, undo, clear ------------------------------------------------------------------

    @property
    def next_id(self) -> int:
        return max(self._next_id, 1)

    def commit(self) -> int:
        """Write the current object into its plane of ``labels`` with a fresh id; returns the id."""
        if self.current is None:
            needed = "four extreme points" if self.mode == "extreme" else "two corners and one inside point"
            raise ValueError(f"no object to commit: click {needed} first")
        if not self.up_to_date:
            raise ValueError("the prediction for the last click is not finished yet")
        plane_labels = self.labels[self.plane] if self.plane else self.labels
        window = self.current.window
        region = plane_labels[window.slices()]
        mask = self.current.window_mask()
        if not mask.any():
            raise ValueError("the predicted object is empty: add a positive click inside it")
        if not self.overwrite:
            mask = mask & (region == 0)
        if not mask.any():
            raise ValueError("all of the object is already labelled: turn on overwrite to replace it")
        label_id = self.next_id
        if label_id > np.iinfo(self.labels.dtype).max:
            raise ValueError(f"label id {label_id} does not fit the labels' dtype {self.labels.dtype}")
        self._commits.append(_Commit(label_id, self.plane, window, region.copy(), self._next_id))
        region[mask] = label_id
        self._next_id = label_id + 1
        self.clear()
        return label_id

    def clear(self) -> None:
        """Drop the object in progress (its clicks and its prediction)."""
        self.clicks.clear()
        self.current = None
        self.version += 1
        self._current_version = self.version

    def undo(self, predict: bool = True) -> str | None:
        """Take back the last click, or with no click in progress the last commit.
        Returns what was undone ("click", "commit") or None when there was nothing."""
        if self.clicks:
            self.clicks.pop()
            self.version += 1
            if not self.ready:
                self.accept(self.version, None)
            elif predict:
                self.update()
            return "click"
        if self._commits:
            last = self._commits.pop()
            plane_labels = self.labels[last.plane] if last.plane else self.labels
            plane_labels[last.window.slices()] = last.previous
            self._next_id = last.next_id_before
            return "commit"
        return None

    @property
    def last_commit(self) -> tuple[int, tuple[int, ...], G.Box] | None:
        """(id, plane, window) of the last commit that undo would take back."""
        if not self._commits:
            return None
        c = self._commits[-1]
        return c.label_id, c.plane, c.window
