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

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from . import guidance as G
from .predictor import IOGPredictor, Prediction
from .preprocess import ChannelStack

ROLES = ("corner", "inside", "positive", "negative", "extreme")


@dataclass
class _Write:
    plane: tuple[int, ...]
    window: G.Box
    previous: np.ndarray        # the labels in ``window`` of ``plane`` before the write


@dataclass
class _Commit:
    label_id: int
    writes: list[_Write]        # one for a commit, one per plane for a propagation
    next_id_before: int
    propagated: bool = False

    @property
    def plane(self) -> tuple[int, ...]:
        return self.writes[0].plane

    @property
    def window(self) -> G.Box:
        return self.writes[0].window


@dataclass
class PropagationStep:
    plane: tuple[int, ...]
    iou_with_previous: float
    area: int                   # pixels written (after the preserve rule)


@dataclass
class Propagation:
    """What :meth:`AnnotationSession.propagate` did: the planes it wrote, in order of distance
    from the start plane per direction, and why each direction stopped."""

    label_id: int
    start: tuple[int, ...]
    steps: list[PropagationStep] = field(default_factory=list)
    stopped: dict[int, str] = field(default_factory=dict)   # direction (+1/-1) -> reason
    cancelled: bool = False
    planes_at_most: int = 0     # the planes there are in the chosen directions (for progress)

    @property
    def planes(self) -> list[tuple[int, ...]]:
        return [s.plane for s in self.steps]


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
        if self.labels.ndim < 2:
            raise ValueError(f"labels must have at least two dimensions, got shape {self.labels.shape}")
        if not np.issubdtype(np.dtype(self.labels.dtype), np.integer):
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
        for level in self.pyramid:
            if len(level.shape) != len(self.labels.shape) or level.shape[:-2] != self.labels.shape[:-2]:
                raise ValueError(f"pyramid level of shape {level.shape} does not match labels {self.labels.shape}")
        self._next_id = self.next_id_start if self.next_id_start is not None else largest_label(self.labels) + 1

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
        image = plane_of(self.image, plane)
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
        window = self.current.window
        mask = self.current.window_mask()
        if not mask.any():
            raise ValueError("the predicted object is empty: add a positive click inside it")
        label_id = self._fresh_id()
        commit = _Commit(label_id, [], self._next_id)
        if self._paint(commit, self.plane, window, mask, label_id) is None:
            raise ValueError("all of the object is already labelled: turn on overwrite to replace it")
        self._commits.append(commit)
        self._next_id = label_id + 1
        self.clear()
        return label_id

    def commit_masks(self, objects: Sequence[tuple[tuple[int, ...], G.Box, np.ndarray]]) -> list[int | None]:
        """Write many objects at once (e.g. segmented from drawn boxes), each ``(plane, window,
        mask in window)``, with fresh ids and the preserve rule (an object keeps off existing
        labels and off the earlier objects of the batch). Returns each object's id, None for
        one with nothing left to write. One :meth:`undo` takes back the whole batch."""
        commit = _Commit(0, [], self._next_id)
        ids: list[int | None] = []
        try:
            for plane, window, mask in objects:
                label_id = self._fresh_id()
                if self._paint(commit, self._check_plane(plane), window, mask, label_id) is None:
                    ids.append(None)
                    continue
                commit.label_id = label_id
                self._next_id = label_id + 1
                ids.append(label_id)
        finally:
            if commit.writes:
                self._commits.append(commit)
        return ids

    # --- labels storage (numpy, zarr; with a pyramid for multiscale layers) --------------------

    def _read(self, plane: tuple[int, ...], window: G.Box) -> np.ndarray:
        return np.array(self.labels[(*plane, *window.slices())])

    def _fresh_id(self) -> int:
        label_id = self.next_id
        if label_id > np.iinfo(self.labels.dtype).max:
            raise ValueError(f"label id {label_id} does not fit the labels' dtype {self.labels.dtype}")
        return label_id

    def _paint(self, commit: _Commit, plane, window: G.Box, mask: np.ndarray, label_id: int,
               also_over: Sequence[int] = ()) -> np.ndarray | None:
        """:func:`paint` with this session's overwrite setting, remembered in ``commit`` for undo
        and carried into the pyramid; the mask written, or None when nothing was."""
        painted = paint(self.labels, plane, window, mask, label_id, self.overwrite, also_over)
        if painted is None:
            return None
        before, after, written = painted
        commit.writes.append(_Write(plane, window, before))
        self._sync_pyramid(plane, window, after)
        return written

    def _store(self, plane, window: G.Box, region: np.ndarray) -> None:
        self.labels[(*plane, *window.slices())] = region
        self._sync_pyramid(plane, window, region)

    def _sync_pyramid(self, plane, window: G.Box, region: np.ndarray) -> None:
        for level in self.pyramid:
            # nearest-neighbour levels: level[i, j] = labels[floor(i * fy), floor(j * fx)]
            (h, w), (lh, lw) = self.labels.shape[-2:], level.shape[-2:]
            rows = _level_indices(window.r0, window.r1, h / lh, lh)
            cols = _level_indices(window.c0, window.c1, w / lw, lw)
            if rows.size == 0 or cols.size == 0:
                continue
            src_r = np.floor(rows * (h / lh)).astype(int) - window.r0
            src_c = np.floor(cols * (w / lw)).astype(int) - window.c0
            level[(*plane, slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))] = \
                region[np.ix_(src_r, src_c)]

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
            for write in reversed(last.writes):
                self._store(write.plane, write.window, write.previous)
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

    # --- 3D: propagation through a stack ------------------------------------------------------

    def propagate(self, label_id: int | None = None, plane: Sequence[int] | None = None, axis: int = 0,
                  directions: Sequence[int] = (1, -1), min_iou: float = 0.3, max_area_ratio: float = 2.5,
                  margin: float = 0.1, max_planes: int | None = None,
                  on_progress: Callable[[PropagationStep], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> Propagation:
        """Carry an object from its plane through the stack along leading axis ``axis``.

        The object's mask on a plane gives the clicks for the next one: its box grown by
        ``margin`` (a fraction of its size, at least 3 px) as the two corners and its most
        interior point as the inside click. The prediction's part connected to that point is
        written with the same id (never over other objects unless ``overwrite``). A direction
        stops at the stack's end, when the object vanishes, when its IoU with the previous
        plane falls below ``min_iou`` or its area changes by more than ``max_area_ratio`` (that
        plane is then not written), or after ``max_planes``. Default object: the last commit.
        ``should_stop`` is polled before each plane; a cancelled run keeps what it wrote. One
        :meth:`undo` takes back the whole propagation.
        """
        result, steps = self.propagation(label_id, plane, axis, directions, min_iou, max_area_ratio,
                                         margin, max_planes)
        while not (should_stop is not None and should_stop()):
            step = next(steps, None)
            if step is None:
                return result
            if on_progress is not None:
                on_progress(step)
        steps.close()
        return result

    def propagation(self, label_id: int | None = None, plane: Sequence[int] | None = None, axis: int = 0,
                    directions: Sequence[int] = (1, -1), min_iou: float = 0.3, max_area_ratio: float = 2.5,
                    margin: float = 0.1, max_planes: int | None = None
                    ) -> tuple[Propagation, Iterator[PropagationStep]]:
        """:meth:`propagate` one plane at a time, for a worker thread: checks the arguments now
        and returns the :class:`Propagation` (filled in as it goes) and an iterator that writes
        one plane per step. Closing the iterator cancels, keeping what was written."""
        if self.clicks:
            raise ValueError("commit or clear the object in progress before propagating")
        leading = self.labels.shape[:-2]
        if not leading:
            raise ValueError("propagation needs a stack (planes, rows, cols); this image is a single plane")
        if not 0 <= axis < len(leading):
            raise ValueError(f"axis {axis} is not a leading axis of labels of shape {self.labels.shape}")
        if not 0 < min_iou < 1 or max_area_ratio <= 1:
            raise ValueError("min_iou must be in (0, 1) and max_area_ratio above 1")
        if any(d not in (1, -1) for d in directions):
            raise ValueError(f"directions are +1 and -1, not {tuple(directions)!r}")
        window = G.Box(0, 0, self.plane_shape[0] - 1, self.plane_shape[1] - 1)
        if label_id is None or plane is None:
            last = self.last_commit
            if last is None:
                raise ValueError("no object to propagate: commit one first (or name its id and plane)")
            if self._commits[-1].propagated:
                raise ValueError(f"object {last[0]} was just propagated: undo that to propagate it again, "
                                 "or commit a new object")
            if label_id is None and plane is None:
                window = last[2]        # read only where the last commit wrote (huge planes)
            label_id = last[0] if label_id is None else label_id
            plane = last[1] if plane is None else plane
        start = self._check_plane(plane)
        label_id = int(label_id)
        source = self._read(start, window) == label_id
        if not source.any():
            raise ValueError(f"object {label_id} is not on plane {start}")
        result = Propagation(label_id, start, planes_at_most=sum(
            (leading[axis] - 1 - start[axis]) if d == 1 else start[axis] for d in set(directions)))
        return result, self._propagation_steps(result, window, source, axis, directions, min_iou,
                                               max_area_ratio, margin, max_planes)

    def _propagation_steps(self, result: Propagation, window: G.Box, source: np.ndarray, axis: int,
                           directions, min_iou, max_area_ratio, margin, max_planes):
        leading, start, label_id = self.labels.shape[:-2], result.start, result.label_id
        commit = _Commit(label_id, [], self._next_id, propagated=True)
        direction = directions[0] if directions else 1
        try:
            for direction in directions:
                previous, index = (window, source), list(start)
                while True:
                    index[axis] += direction
                    if not 0 <= index[axis] < leading[axis]:
                        result.stopped[direction] = "end of the stack"
                        break
                    if max_planes is not None and abs(index[axis] - start[axis]) > max_planes:
                        result.stopped[direction] = f"{max_planes} planes done"
                        break
                    step_plane = tuple(index)
                    found, reason = self._follow(step_plane, *previous, min_iou, max_area_ratio, margin)
                    if found is None:
                        result.stopped[direction] = reason
                        break
                    step_window, mask, iou = found
                    mask = self._paint(commit, step_plane, step_window, mask, label_id, also_over=(label_id,))
                    if mask is None:
                        result.stopped[direction] = "the object is covered by other labels"
                        break
                    step = PropagationStep(step_plane, iou, int(mask.sum()))
                    result.steps.append(step)
                    previous = (step_window, mask)
                    yield step
        except GeneratorExit:
            result.cancelled = True
            result.stopped[direction] = "cancelled"
        finally:
            if commit.writes:
                self._commits.append(commit)

    def _follow(self, plane, window: G.Box, previous: np.ndarray, min_iou: float, max_area_ratio: float,
                margin: float):
        """The object on ``plane`` from its mask ``previous`` (of ``window``) on the neighbouring
        plane: ``((window, mask in window, IoU with previous), None)`` or ``(None, why not)``."""
        tight = G.mask_box(previous)
        box = G.Box(tight.r0 + window.r0, tight.c0 + window.c0, tight.r1 + window.r0, tight.c1 + window.c0)
        grow = max(3, int(round(margin * max(box.height, box.width))))
        box = box.grow(grow).clip(self.plane_shape)
        r, c = G.most_interior_point(previous)
        inside = (r + window.r0, c + window.c0)
        prompt = dict(corners=[(box.r0, box.c0), (box.r1, box.c1)], inside=[inside])
        prediction = self.predictor.predict(plane_of(self.image, plane), **prompt, **self.predict_options)
        found = prediction.window
        components, _ = ndimage.label(prediction.window_mask())
        at = components[inside[0] - found.r0, inside[1] - found.c0]
        if at == 0:
            return None, "the object left its inside point"
        mask = components == at
        # IoU of the two masks in a window holding both
        both = G.Box(min(window.r0, found.r0), min(window.c0, found.c0),
                     max(window.r1, found.r1), max(window.c1, found.c1))
        a = np.zeros((both.height, both.width), bool)
        b = np.zeros_like(a)
        a[window.slices_within(both)] = previous
        b[found.slices_within(both)] = mask
        iou = int((a & b).sum()) / int((a | b).sum())
        area, area_before = int(mask.sum()), int(previous.sum())
        if iou < min_iou:
            return None, f"IoU with the previous plane {iou:.2f} < {min_iou}"
        if not 1 / max_area_ratio <= area / area_before <= max_area_ratio:
            return None, f"area changed {area / area_before:.2f}x"
        return (found, mask, iou), None


def paint(labels, plane: tuple[int, ...], window: G.Box, mask: np.ndarray, label_id: int,
          overwrite: bool = False, also_over: Sequence[int] = ()
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Write ``mask`` (of ``window`` in ``plane``) into ``labels`` as ``label_id`` under the
    preserve rule: unless ``overwrite``, only background (0) and the ids ``also_over`` change.
    Returns the window before and after and the mask written, or None when no pixel is left
    to write (then nothing is written)."""
    index = (*plane, *window.slices())
    before = np.array(labels[index])
    if not overwrite:
        mask = mask & np.isin(before, (0, *also_over))
    if not mask.any():
        return None
    after = before.copy()
    after[mask] = label_id
    labels[index] = after
    return before, after, mask


def _level_indices(first: int, last: int, factor: float, size: int) -> np.ndarray:
    """Indices ``i`` of a level with ``floor(i * factor)`` in ``first..last``."""
    lo = int(np.ceil(first / factor - 1e-9))
    hi = int(np.ceil((last + 1) / factor - 1e-9)) - 1
    return np.arange(max(lo, 0), min(hi, size - 1) + 1)


def plane_of(image, plane: tuple[int, ...]):
    """``image[plane]`` without reading it: lazy arrays that read on indexing (zarr, h5py)
    are wrapped in dask first, so that a click reads only its crop of the plane."""
    if not plane:
        return image
    if isinstance(image, (np.ndarray, ChannelStack)) or hasattr(image, "dask"):
        return image[plane]
    import dask.array as da

    chunks = getattr(image, "chunks", None)
    return da.from_array(image, chunks=chunks if chunks is not None else "auto")[plane]


def largest_label(labels) -> int:
    """``labels.max()`` (0 when empty), chunk by chunk for arrays not held in memory."""
    if labels.size == 0:
        return 0
    if isinstance(labels, np.ndarray):
        return int(labels.max())
    import dask.array as da

    array = labels if hasattr(labels, "dask") else da.from_array(labels, chunks=getattr(labels, "chunks", "auto"))
    return int(array.max().compute())
