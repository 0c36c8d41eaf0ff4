"""The labels writer: every change napari-iog makes to a user's labels goes through here.

* the preserve rule: unless ``overwrite`` is on, an object only takes background pixels (and
  the ids named in ``also_over``, e.g. its own id when propagation extends it);
* fresh ids: one more than any id used so far, never reused after an undo or a deletion;
* exact undo: each :class:`LabelsEdit` keeps the windows it changed as they were;
* pyramids: lower-resolution levels of a multiscale labels layer are kept in step;
* planes: ``labels`` is a plane (rows, cols) or a stack (..., rows, cols); an object lives
  on one plane, named by its leading indices.

``labels`` may be a numpy array or a zarr array (written in place, window by window).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import geometry as G
from .preprocess import ChannelStack


@dataclass
class _Write:
    plane: tuple[int, ...]
    window: G.Box
    previous: np.ndarray        # the labels in ``window`` of ``plane`` before the write


@dataclass
class LabelsEdit:
    """One undoable change: a commit, a batch of objects, or a whole propagation."""

    next_id_before: int
    propagated: bool = False
    label_id: int = 0           # the last id written
    writes: list[_Write] = field(default_factory=list)

    @property
    def plane(self) -> tuple[int, ...]:
        return self.writes[0].plane

    @property
    def window(self) -> G.Box:
        return self.writes[0].window


class LabelsWriter:
    """Writes objects into ``labels`` (and its ``pyramid``) under the preserve rule, with fresh
    ids and exact undo. ``next_id``: the first fresh id (default: one more than the largest)."""

    def __init__(self, labels, pyramid: Sequence[Any] = (), overwrite: bool = False, next_id: int | None = None):
        if labels.ndim < 2:
            raise ValueError(f"labels must have at least two dimensions, got shape {labels.shape}")
        if not np.issubdtype(np.dtype(labels.dtype), np.integer):
            raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
        for level in pyramid:
            if len(level.shape) != len(labels.shape) or level.shape[:-2] != labels.shape[:-2]:
                raise ValueError(f"pyramid level of shape {level.shape} does not match labels {labels.shape}")
        self.labels = labels
        self.pyramid = tuple(pyramid)
        self.overwrite = overwrite
        self._next_id = next_id if next_id is not None else largest_label(labels) + 1
        self._edits: list[LabelsEdit] = []
        # for redo: each undone edit, what its writes wrote, and what the undo left in their windows
        self._undone: list[tuple[LabelsEdit, list[np.ndarray], list[np.ndarray]]] = []

    @property
    def plane_shape(self) -> tuple[int, int]:
        return tuple(self.labels.shape[-2:])

    @property
    def next_id(self) -> int:
        return max(self._next_id, 1)

    def check_plane(self, plane) -> tuple[int, ...]:
        plane = tuple(int(i) for i in plane)
        leading = self.labels.shape[:-2]
        if len(plane) != len(leading) or any(not 0 <= i < n for i, n in zip(plane, leading)):
            raise G.ClickError(f"plane {plane} is not a plane of labels of shape {self.labels.shape}")
        return plane

    def read(self, plane: tuple[int, ...], window: G.Box) -> np.ndarray:
        return np.array(self.labels[(*plane, *window.slices())])

    @contextmanager
    def edit(self, propagated: bool = False) -> Iterator[LabelsEdit]:
        """Collect writes into one undoable edit; it is kept (for undo) if anything was written,
        also when the block ends with an error or a cancel."""
        edit = LabelsEdit(self._next_id, propagated)
        try:
            yield edit
        finally:
            if edit.writes:
                self._edits.append(edit)
                self._undone.clear()        # a new edit: what was undone before cannot come back

    def paint(self, edit: LabelsEdit, plane, window: G.Box, mask: np.ndarray, label_id: int | None = None,
              also_over: Sequence[int] = ()) -> tuple[int, np.ndarray] | None:
        """Write ``mask`` (of ``window`` in ``plane``) as ``label_id`` (None: a fresh id) under
        the preserve rule; ``(id, mask written)``, or None when no pixel was left to write."""
        label_id = self.next_id if label_id is None else int(label_id)
        if label_id > np.iinfo(self.labels.dtype).max:
            raise ValueError(f"label id {label_id} does not fit the labels' dtype {self.labels.dtype}")
        painted = paint(self.labels, plane, window, mask, label_id, self.overwrite, also_over)
        if painted is None:
            return None
        before, after, written = painted
        edit.writes.append(_Write(tuple(plane), window, before))
        edit.label_id = label_id
        self._sync_pyramid(plane, window, after)
        self._next_id = max(self._next_id, label_id + 1)
        return label_id, written

    @property
    def last_edit(self) -> LabelsEdit | None:
        return self._edits[-1] if self._edits else None

    def undo(self) -> LabelsEdit | None:
        """Restore the labels as they were before the last edit (None when there is none)."""
        if not self._edits:
            return None
        last = self._edits.pop()
        written = []
        for write in reversed(last.writes):
            written.append(self.read(write.plane, write.window))
            self.labels[(*write.plane, *write.window.slices())] = write.previous
            self._sync_pyramid(write.plane, write.window, write.previous)
        restored = [self.read(write.plane, write.window) for write in last.writes]
        self._undone.append((last, written[::-1], restored))
        self._next_id = last.next_id_before
        return last

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    def redo(self) -> LabelsEdit | None:
        """Write again what the last :meth:`undo` took back (None when there is nothing to redo).
        Refused, changing nothing, where the labels were edited since the undo: redo never
        overwrites a pixel it did not restore itself."""
        if not self._undone:
            return None
        edit, written, restored = self._undone[-1]
        for write, left in zip(edit.writes, restored):
            if not np.array_equal(self.read(write.plane, write.window), left):
                raise ValueError("the labels were changed where the undone object was: nothing to redo")
        self._undone.pop()
        next_id_after = max(self._next_id, edit.label_id + 1)
        for write, region in zip(edit.writes, written):
            self.labels[(*write.plane, *write.window.slices())] = region
            self._sync_pyramid(write.plane, write.window, region)
        self._edits.append(edit)
        self._next_id = next_id_after
        return edit

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
    try:
        labels[index] = after
    except BaseException:
        # a chunked store (zarr) may have written some chunks before failing: put them back
        try:
            labels[index] = before
        except Exception:
            pass
        raise
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
