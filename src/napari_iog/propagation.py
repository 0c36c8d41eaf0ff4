"""3D propagation: carry a committed object from its plane through a stack, plane by plane.

The object's mask on a plane gives the clicks for the next one: its box grown by ``margin``
(a fraction of its size, at least 3 px) as the two corners and its most interior point as the
inside click. The prediction's part connected to that point is written with the same id
(never over other objects unless ``overwrite``). A direction stops at the stack's end, when
the object vanishes, when its IoU with the previous plane falls below ``min_iou`` or its area
changes by more than ``max_area_ratio`` (that plane is then not written), or after
``max_planes``. The whole propagation is one undoable labels edit.

A :class:`Propagation` checks everything when it is made and writes one plane each time it
is iterated, so a worker thread can show progress and stop it (``close()``) between planes;
what was written stays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from . import geometry as G
from .labels import LabelsWriter, plane_of
from .prompt import Prompt


@dataclass(frozen=True)
class PropagationSettings:
    axis: int = 0                   # which leading axis of the stack
    directions: Sequence[int] = (1, -1)
    min_iou: float = 0.3
    max_area_ratio: float = 2.5
    margin: float = 0.1
    max_planes: int | None = None

    def check(self, labels_shape: Sequence[int]) -> None:
        leading = labels_shape[:-2]
        if not leading:
            raise ValueError("propagation needs a stack (planes, rows, cols); this image is a single plane")
        if not 0 <= self.axis < len(leading):
            raise ValueError(f"axis {self.axis} is not a leading axis of labels of shape {tuple(labels_shape)}")
        if not 0 < self.min_iou < 1 or self.max_area_ratio <= 1:
            raise ValueError("min_iou must be in (0, 1) and max_area_ratio above 1")
        if any(d not in (1, -1) for d in self.directions):
            raise ValueError(f"directions are +1 and -1, not {tuple(self.directions)!r}")


@dataclass
class PropagationStep:
    plane: tuple[int, ...]
    iou_with_previous: float
    area: int                   # pixels written (after the preserve rule)


@dataclass
class _Source:
    """Where the object is on the start plane: a window of the plane and its mask there."""

    window: G.Box
    mask: np.ndarray


class Propagation:
    """One object carried through a stack. Iterate it to write one plane per step; ``close()``
    cancels between planes; :meth:`run` goes to the end. What it did: :attr:`steps` (in order
    of distance from the start plane, per direction) and :attr:`stopped` (why each direction
    stopped)."""

    def __init__(self, writer: LabelsWriter, predictor, image, predict_options: dict[str, Any], label_id: int,
                 start: tuple[int, ...], source: _Source, settings: PropagationSettings):
        self.writer, self.predictor, self.image = writer, predictor, image
        self.predict_options = dict(predict_options)
        self.label_id, self.start, self.settings = int(label_id), start, settings
        self.steps: list[PropagationStep] = []
        self.stopped: dict[int, str] = {}       # direction (+1/-1) -> reason
        self.cancelled = False
        leading = writer.labels.shape[:-2]
        axis = settings.axis
        #: the planes there are in the chosen directions (for progress)
        self.planes_at_most = sum((leading[axis] - 1 - start[axis]) if d == 1 else start[axis]
                                  for d in set(settings.directions))
        self._steps = self._write_planes(source)

    @classmethod
    def of_object(cls, writer: LabelsWriter, predictor, image, predict_options, label_id: int, plane,
                  window: G.Box | None = None, settings: PropagationSettings = PropagationSettings()
                  ) -> Propagation:
        """Check the settings and find the object ``label_id`` on ``plane`` (read in ``window``,
        default the whole plane); a ValueError says what is wrong before anything is written."""
        settings.check(writer.labels.shape)
        start = writer.check_plane(plane)
        window = window or G.Box(0, 0, writer.plane_shape[0] - 1, writer.plane_shape[1] - 1)
        mask = writer.read(start, window) == int(label_id)
        if not mask.any():
            raise ValueError(f"object {int(label_id)} is not on plane {start}")
        return cls(writer, predictor, image, predict_options, label_id, start, _Source(window, mask), settings)

    @property
    def planes(self) -> list[tuple[int, ...]]:
        return [s.plane for s in self.steps]

    def __iter__(self) -> Iterator[PropagationStep]:
        return self._steps

    def close(self) -> None:
        """Cancel: stop before the next plane, keeping what was written."""
        self._steps.close()

    def run(self, on_progress: Callable[[PropagationStep], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Propagation:
        """Write every plane; ``should_stop`` is polled before each one."""
        while not (should_stop is not None and should_stop()):
            step = next(self._steps, None)
            if step is None:
                return self
            if on_progress is not None:
                on_progress(step)
        self.close()
        return self

    def _write_planes(self, source: _Source) -> Iterator[PropagationStep]:
        settings, leading, start = self.settings, self.writer.labels.shape[:-2], self.start
        axis = settings.axis
        direction = settings.directions[0] if settings.directions else 1
        with self.writer.edit(propagated=True) as edit:
            try:
                for direction in settings.directions:
                    previous, index = source, list(start)
                    while True:
                        index[axis] += direction
                        if not 0 <= index[axis] < leading[axis]:
                            self.stopped[direction] = "end of the stack"
                            break
                        if settings.max_planes is not None and abs(index[axis] - start[axis]) > settings.max_planes:
                            self.stopped[direction] = f"{settings.max_planes} planes done"
                            break
                        plane = tuple(index)
                        found, reason = self._follow(plane, previous)
                        if found is None:
                            self.stopped[direction] = reason
                            break
                        written = self.writer.paint(edit, plane, found.window, found.mask, self.label_id,
                                                    also_over=(self.label_id,))
                        if written is None:
                            self.stopped[direction] = "the object is covered by other labels"
                            break
                        step = PropagationStep(plane, found.iou, int(written[1].sum()))
                        self.steps.append(step)
                        previous = _Source(found.window, written[1])
                        yield step
            except GeneratorExit:
                self.cancelled = True
                self.stopped[direction] = "cancelled"

    def _follow(self, plane, previous: _Source):
        """The object on ``plane`` from its mask on the neighbouring plane: ``(found, None)``
        or ``(None, why not)``."""
        window, settings = previous.window, self.settings
        tight = G.mask_box(previous.mask)
        box = G.Box(tight.r0 + window.r0, tight.c0 + window.c0, tight.r1 + window.r0, tight.c1 + window.c0)
        grow = max(3, int(round(settings.margin * max(box.height, box.width))))
        box = box.grow(grow).clip(self.writer.plane_shape)
        r, c = G.most_interior_point(previous.mask)
        inside = (r + window.r0, c + window.c0)
        prompt = Prompt.check(self.writer.plane_shape, [(box.r0, box.c0), (box.r1, box.c1)], [inside])
        prediction = self.predictor.predict(plane_of(self.image, plane), prompt=prompt, **self.predict_options)
        found = prediction.window
        components, _ = ndimage.label(prediction.window_mask())
        at = components[inside[0] - found.r0, inside[1] - found.c0]
        if at == 0:
            return None, "the object left its inside point"
        mask = components == at
        iou = _iou_in_windows(window, previous.mask, found, mask)
        area, area_before = int(mask.sum()), int(previous.mask.sum())
        if iou < settings.min_iou:
            return None, f"IoU with the previous plane {iou:.2f} < {settings.min_iou}"
        if not 1 / settings.max_area_ratio <= area / area_before <= settings.max_area_ratio:
            return None, f"area changed {area / area_before:.2f}x"
        return _Found(found, mask, iou), None


@dataclass
class _Found:
    window: G.Box
    mask: np.ndarray
    iou: float


def _iou_in_windows(window_a: G.Box, a_mask: np.ndarray, window_b: G.Box, b_mask: np.ndarray) -> float:
    """IoU of two masks given in their own windows of one plane."""
    both = G.Box(min(window_a.r0, window_b.r0), min(window_a.c0, window_b.c0),
                 max(window_a.r1, window_b.r1), max(window_a.c1, window_b.c1))
    a = np.zeros((both.height, both.width), bool)
    b = np.zeros_like(a)
    a[window_a.slices_within(both)] = a_mask
    b[window_b.slices_within(both)] = b_mask
    return int((a & b).sum()) / int((a | b).sum())
