"""The annotation session, free of napari: the object in progress, its clicks by role, commit, undo.

The napari side is a thin layer over :class:`AnnotationSession`; it works on plain arrays so
that its rules are tested without a viewer:

* clicks 1-2 are the box corners, click 3 (and more, with ``role="inside"``) the inside click,
  later ones corrections (positive unless said negative). With a DEXTR model the four clicks
  are the object's extreme points instead. The clicks are checked as a whole and turned into a
  :class:`~napari_iog.prompt.Prompt` once, here; the predictor gets that;
* :meth:`commit` writes the current object through the :class:`~napari_iog.labels.LabelsWriter`
  (fresh id, preserve rule); :meth:`undo` takes back the last click, or, with no object in
  progress, the last labels edit, exactly.

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

from . import geometry as G
from .labels import LabelsWriter, plane_of
from .predictor import IOGPredictor, Prediction
from .prompt import ExtremePrompt, Prompt
from .propagation import Propagation, PropagationSettings

ROLES = ("corner", "inside", "positive", "negative", "extreme")
Click = tuple[str, tuple[float, float]]


@dataclass
class AnnotationSession:
    predictor: IOGPredictor
    image: Any                  # (rows, cols[, channels]) or a stack of them (numpy, dask, zarr ...)
    labels: Any                 # integer, (rows, cols) or (..., rows, cols): numpy or zarr; written in place
    overwrite: bool = False
    predict_options: dict[str, Any] = field(default_factory=dict)  # channels, contrast_limits, threshold
    pyramid: Sequence[Any] = ()  # lower-resolution levels of ``labels`` (multiscale layers), kept in step
    next_id_start: int | None = None  # the first fresh id; default: one more than ``labels.max()``

    def __post_init__(self):
        self.writer = LabelsWriter(self.labels, self.pyramid, self.overwrite, self.next_id_start)
        if tuple(self.image.shape[:self.labels.ndim]) != tuple(self.labels.shape):
            raise ValueError(f"labels {self.labels.shape} and image {self.image.shape} differ in size")
        self.mode = "extreme" if self.predictor.is_dextr else "iog"
        self.clicks: list[Click] = []
        self.plane: tuple[int, ...] = ()
        self.current: Prediction | None = None
        self.version = 0            # changes with every change of the clicks
        self._current_version = 0   # the clicks ``current`` was computed for
        self._prompt: Prompt | ExtremePrompt | None = None
        self._undone: list[Click | None] = []     # for redo: an undone click, or None for a commit

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "overwrite" and "writer" in self.__dict__:
            self.writer.overwrite = bool(value)

    @property
    def plane_shape(self) -> tuple[int, int]:
        return self.writer.plane_shape

    @property
    def next_id(self) -> int:
        return self.writer.next_id

    # --- clicks -----------------------------------------------------------------------------

    def points(self, role: str) -> list[tuple[float, float]]:
        return [p for r, p in self.clicks if r == role]

    def next_role(self, negative: bool = False) -> str:
        """The role the next click will get."""
        if self.mode == "extreme":
            return "extreme"
        if len(self.points("corner")) < 2:
            return "corner"
        if not self.points("inside"):
            return "inside"
        return "negative" if negative else "positive"

    def add_click(self, point, role: str | None = None, negative: bool = False, plane=(),
                  predict: bool = True) -> Prediction | None:
        """Add one click on ``plane`` and, with ``predict``, predict when there are enough.
        A click that cannot be used raises a :class:`~napari_iog.geometry.ClickError` and
        leaves the session as it was."""
        role = role or self.next_role(negative)
        plane = self.writer.check_plane(plane)
        if self.clicks and plane != self.plane:
            raise G.ClickError(f"the object in progress is on plane {self.plane}: commit or clear it "
                               f"before clicking on plane {plane}")
        self.set_clicks([*self.clicks, (role, point)], plane, predict=predict)
        return self.current

    def set_clicks(self, clicks: Sequence[tuple[str, Sequence[float]]], plane=(), predict: bool = True) -> None:
        """Replace all clicks of the object in progress (e.g. after the user moved or deleted a
        point). Checked as a whole; on an error nothing changes."""
        self._set_clicks(clicks, plane, predict)
        self._undone.clear()

    def _set_clicks(self, clicks, plane, predict: bool) -> None:
        plane = self.writer.check_plane(plane)
        clicks = [(role, tuple(float(v) for v in point)) for role, point in clicks]
        prompt = self._checked_prompt(clicks)
        self.clicks, self.plane, self._prompt = clicks, plane, prompt
        self.version += 1
        if predict:
            self.update()

    def use_predictor(self, predictor: IOGPredictor) -> None:
        """Predict with ``predictor`` from now on. The object in progress keeps its clicks (and
        is predicted again) when the new model takes the same kind of clicks; else it is cleared."""
        mode = "extreme" if predictor.is_dextr else "iog"
        self.predictor = predictor
        if mode != self.mode:
            self.mode = mode
            self.clear()
        else:
            self.version += 1           # a result of the old model still on its way is dropped

    def _checked_prompt(self, clicks: list[Click]) -> Prompt | ExtremePrompt | None:
        """The prompt of ``clicks`` (None while there are too few), or a ClickError naming why not."""
        shape = self.plane_shape
        roles = [r for r, _ in clicks]
        for role, point in clicks:
            if role not in ROLES:
                raise ValueError(f"role must be one of {ROLES}, not {role!r}")
            G.pixel(point, shape, f"{role} click")
        by_role = {r: [p for role, p in clicks if role == r] for r in ROLES}
        if self.mode == "extreme":
            if any(r != "extreme" for r in roles):
                raise G.ClickError("this DEXTR model takes the object's four extreme points only")
            if len(clicks) > 4:
                raise G.ClickError("the four extreme points are set: commit, or undo one to move it")
            return ExtremePrompt.check(shape, by_role["extreme"]) if len(clicks) == 4 else None
        if "extreme" in roles:
            raise G.ClickError("extreme points are for DEXTR models; this model takes a box and an inside click")
        if roles.count("corner") > 2:
            raise G.ClickError("the box already has two corners: undo or clear to redraw it")
        if roles.count("corner") < 2 and len(roles) > roles.count("corner"):
            raise G.ClickError("click two opposite corners of a box around the object first")
        if roles.count("inside") == 0 and ("positive" in roles or "negative" in roles):
            raise G.ClickError("click inside the object before correcting it")
        if by_role["inside"]:
            return Prompt.check(shape, by_role["corner"], by_role["inside"], by_role["positive"], by_role["negative"])
        if len(by_role["corner"]) == 2:
            G.box_from_corners(by_role["corner"], shape)  # a zero-area box is refused at the second corner
        return None

    # --- prediction ---------------------------------------------------------------------------

    @property
    def prompt(self) -> Prompt | ExtremePrompt | None:
        """The validated prompt of the clicks (None while there are too few)."""
        return self._prompt

    @property
    def ready(self) -> bool:
        """Are there enough clicks for a prediction?"""
        return self._prompt is not None

    @property
    def up_to_date(self) -> bool:
        """Does :attr:`current` belong to the clicks as they are now?"""
        return self._current_version == self.version

    def request(self) -> tuple[int, Callable[[], Prediction | None]]:
        """The work for the current clicks: ``(version, task)``; ``task()`` may run in another
        thread (it reads the image and runs the network), then pass its result to :meth:`accept`."""
        version, prompt = self.version, self._prompt
        if prompt is None:
            return version, lambda: None
        image = plane_of(self.image, self.plane)
        options = dict(self.predict_options)
        if isinstance(prompt, ExtremePrompt):
            return version, lambda: self.predictor.predict_extreme(image, prompt=prompt, **options)
        return version, lambda: self.predictor.predict(image, prompt=prompt, **options)

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

    def commit(self) -> int:
        """Write the current object into its plane of ``labels`` with a fresh id; returns the id."""
        if self.current is None:
            needed = "four extreme points" if self.mode == "extreme" else "two corners and one inside point"
            raise ValueError(f"no object to commit: click {needed} first")
        if not self.up_to_date:
            raise ValueError("the prediction for the last click is not finished yet")
        mask = self.current.window_mask()
        if not mask.any():
            raise ValueError("the predicted object is empty: add a positive click inside it")
        with self.writer.edit() as edit:
            written = self.writer.paint(edit, self.plane, self.current.window, mask)
        if written is None:
            raise ValueError("all of the object is already labelled: turn on overwrite to replace it")
        self.clear()
        return written[0]

    def commit_masks(self, objects: Sequence[tuple[tuple[int, ...], G.Box, np.ndarray]]) -> list[int | None]:
        """Write many objects at once (e.g. segmented from drawn boxes), each ``(plane, window,
        mask in window)``, with fresh ids and the preserve rule (an object keeps off existing
        labels and off the earlier objects of the batch). Returns each object's id, None for
        one with nothing left to write. One :meth:`undo` takes back the whole batch."""
        ids: list[int | None] = []
        self._undone.clear()
        with self.writer.edit() as edit:
            for plane, window, mask in objects:
                written = self.writer.paint(edit, self.writer.check_plane(plane), window, mask)
                ids.append(None if written is None else written[0])
        return ids

    def clear(self) -> None:
        """Drop the object in progress (its clicks and its prediction); nothing is left to redo."""
        self._undone.clear()
        self.clicks.clear()
        self._prompt = None
        self.current = None
        self.version += 1
        self._current_version = self.version

    def undo(self, predict: bool = True) -> str | None:
        """Take back the last click, or with no click in progress the last commit.
        Returns what was undone ("click", "commit") or None when there was nothing."""
        if self.clicks:
            self._undone.append(self.clicks[-1])
            self._take_back_click(predict)
            return "click"
        if self.writer.undo() is None:
            return None
        self._undone.append(None)
        return "commit"

    def _take_back_click(self, predict: bool) -> None:
        clicks = self.clicks[:-1]
        self.clicks, self._prompt = clicks, self._checked_prompt(clicks)
        self.version += 1
        if not self.ready:
            self.accept(self.version, None)
        elif predict:
            self.update()

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    def redo(self, predict: bool = True) -> str | None:
        """Do again what the last :meth:`undo` took back: a click, or a commit (written exactly
        as it was; refused where the labels were changed since). None when there is nothing."""
        if not self._undone:
            return None
        click = self._undone[-1]
        if click is None:
            if self.clicks:
                raise ValueError("commit or clear the object in progress before redoing a commit")
            if self.writer.redo() is None:
                self._undone.clear()
                return None
            self._undone.pop()
            return "commit"
        self._set_clicks([*self.clicks, click], self.plane, predict)
        self._undone.pop()
        return "click"

    @property
    def last_commit(self) -> tuple[int, tuple[int, ...], G.Box] | None:
        """(id, plane, window) of the last commit that undo would take back."""
        last = self.writer.last_edit
        return None if last is None else (last.label_id, last.plane, last.window)

    # --- 3D: propagation through a stack ------------------------------------------------------

    def propagation(self, label_id: int | None = None, plane: Sequence[int] | None = None,
                    **settings) -> Propagation:
        """A :class:`~napari_iog.propagation.Propagation` of an object (default: the last commit)
        from its plane through the stack, checked now, writing one plane per iteration.
        ``settings``: those of :class:`~napari_iog.propagation.PropagationSettings`."""
        settings = PropagationSettings(**settings)
        if self.clicks:
            raise ValueError("commit or clear the object in progress before propagating")
        settings.check(self.labels.shape)
        window = None
        if label_id is None or plane is None:
            last = self.writer.last_edit
            if last is None:
                raise ValueError("no object to propagate: commit one first (or name its id and plane)")
            if last.propagated:
                raise ValueError(f"object {last.label_id} was just propagated: undo that to propagate it again, "
                                 "or commit a new object")
            if label_id is None and plane is None:
                window = last.window        # read only where the last commit wrote (huge planes)
            label_id = last.label_id if label_id is None else label_id
            plane = last.plane if plane is None else plane
        return Propagation.of_object(self.writer, self.predictor, self.image, self.predict_options, label_id,
                                     plane, window, settings)

    def propagate(self, label_id: int | None = None, plane: Sequence[int] | None = None, *,
                  on_progress: Callable | None = None, should_stop: Callable[[], bool] | None = None,
                  **settings) -> Propagation:
        """:meth:`propagation` run to the end here (``should_stop`` is polled before each plane;
        a cancelled run keeps what it wrote). One :meth:`undo` takes back the whole propagation."""
        return self.propagation(label_id, plane, **settings).run(on_progress, should_stop)
