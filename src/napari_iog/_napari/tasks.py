"""The annotator's longer jobs: many objects from drawn boxes, and an object carried through a
stack. Each runs here for scripts, or in a worker with a napari progress bar for the GUI."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from napari.layers import Shapes

from .. import batch
from .. import geometry as G
from .layers import HELPER_KEY, by_name
from .workers import BackgroundWork


class DrawnBoxes:
    """Rectangles of a shapes layer -> one object each, committed together (one undo)."""

    def __init__(self, annotator):
        self.annotator = annotator

    def prompts_of(self, shapes_layer: Shapes | str) -> list[batch.BoxPrompt]:
        """The shapes of ``shapes_layer`` as box prompts in the image's pixels: each shape's
        bounding box (rectangles as drawn), its centre as the inside click, on the plane it
        was drawn on (a 2D shapes layer over a stack: the plane on screen)."""
        ann = self.annotator
        layer = by_name(ann.viewer, shapes_layer)
        if not isinstance(layer, Shapes):
            raise ValueError(f"layer {getattr(layer, 'name', layer)!r} is not a shapes layer")
        if layer.metadata.get(HELPER_KEY):
            raise ValueError(f"{layer.name!r} is the annotator's own box: draw rectangles in a shapes layer of your "
                             "own (Layers > New shapes layer)")
        if len(layer.data) == 0:
            raise ValueError(f"shapes layer {layer.name!r} has no shapes: draw rectangles around the objects")
        image_layer, spatial = ann.image_layer, ann.spatial_shape
        leading = len(spatial) - 2
        prompts = []
        for n, vertices in enumerate(layer.data):
            world = np.array([layer.data_to_world(v) for v in np.asarray(vertices, dtype=float)])
            missing = image_layer.ndim - world.shape[1]
            if missing > 0:     # a 2D layer over a stack: the shapes lie on the plane on screen
                here = np.asarray(ann.viewer.dims.point)[-image_layer.ndim:][:missing]
                world = np.hstack([np.tile(here, (len(world), 1)), world])
            coords = np.array([image_layer.world_to_data(v) for v in world])
            plane = ann.coordinates.plane_of(coords[0, :leading]) if leading else ()
            box = G.outline_box(coords[:, -2:], spatial[-2:])
            prompts.append(batch.BoxPrompt(((box.r0, box.c0), (box.r1, box.c1)), plane=plane,
                                           source=f"shape {n + 1} of {layer.name!r}"))
        return prompts

    def segment(self, shapes_layer: Shapes | str) -> list[int | None]:
        """Segment one object per shape of ``shapes_layer`` and commit them all (ids in shape
        order; None where nothing was left to write). One undo takes them all back."""
        ann = self.annotator
        ann.stack.refuse_while_running()
        ann.predictions.work.wait()
        prompts = self.prompts_of(shapes_layer)
        checked = batch.check_boxes(ann.spatial_shape, prompts)
        results = batch.predict_boxes(ann.predictor, ann.session.image, prompts, checked,
                                      **ann.session.predict_options)
        return self._commit(prompts, results)

    def _commit(self, prompts, results) -> list[int | None]:
        ann = self.annotator
        ids = ann.session.commit_masks([(prompts[i].plane, *results[i]) for i in sorted(results)])
        ann.labels_layer.refresh()
        ann.draw()
        ann.set_status(f"{sum(i is not None for i in ids)} objects committed from boxes")
        return ids

    def start(self, shapes_layer: Shapes | str) -> None:
        """:meth:`segment` in a worker thread (the predictions' own, so that clicks wait) with a
        napari progress bar; the objects are committed together when all are segmented."""
        ann = self.annotator
        if ann.stack.work.running or ann.predictions.work.running:
            ann.notify("wait until the current prediction or propagation ends")
            return

        def prepare():
            prompts = self.prompts_of(shapes_layer)
            return prompts, batch.check_boxes(ann.spatial_shape, prompts)
        prompts, checked = ann.guarded(prepare) or (None, None)
        if prompts is None:
            return
        from napari.utils import progress

        bar = progress(total=len(prompts), desc="segmenting boxes")
        results: dict = {}
        options, image, predictor = dict(ann.session.predict_options), ann.session.image, ann.predictor

        def in_batches():
            step = 16 if predictor.device.type == "cuda" else 4
            for start in range(0, len(prompts), step):
                chosen = range(start, min(start + step, len(prompts)))
                results.update(batch.predict_boxes(predictor, image, prompts, checked, chosen, **options))
                yield len(chosen)

        def finished():
            bar.close()
            if len(results) == len(prompts):
                ann.guarded(lambda: self._commit(prompts, results))
            ann.boxes_finished.emit(len(results))
            ann.predictions.serve_pending()     # a click made meanwhile

        ann.predictions.work.start(in_batches, yielded=bar.update, finished=finished,
                                   errored=lambda err: ann.notify(f"segmenting the boxes failed: {err}", error=True))


class StackPropagation:
    """The last committed object carried through the stack, plane after plane."""

    def __init__(self, annotator):
        self.annotator = annotator
        self.work = BackgroundWork("the propagation")
        self._stop = threading.Event()

    @property
    def axes(self) -> list[str]:
        """Names of the image's leading (stack) axes, e.g. ``["z"]`` or ``["t", "z"]``."""
        ann = self.annotator
        n = len(ann.spatial_shape) - 2
        names = list(ann.viewer.dims.axis_labels)[-(n + 2):-2] if n else []
        return [str(name) for name in names] if len(names) == n else [str(i) for i in range(n)]

    def refuse_while_running(self) -> None:
        if self.work.running:
            raise ValueError("a propagation is writing the labels: wait for it or stop it first")

    def _axis(self, axis: int | None) -> int:
        return len(self.annotator.spatial_shape) - 3 if axis is None else axis

    def propagate(self, axis: int | None = None, **options) -> Any:
        """Carry the last committed object through the stack, synchronously (``options``: those
        of :class:`~napari_iog.propagation.PropagationSettings`). ``axis``: which leading axis
        (default: the one just before rows, z of (t, z, y, x))."""
        ann = self.annotator
        self.refuse_while_running()
        ann.predictions.work.wait()
        try:
            return ann.session.propagate(axis=self._axis(axis), **options)
        finally:
            ann.labels_layer.refresh()

    def start(self, axis: int | None = None, **options) -> None:
        """:meth:`propagate` in a worker thread, plane by plane, with a napari progress bar;
        :meth:`stop` cancels (what is written stays, one undo takes it back)."""
        ann = self.annotator
        if self.work.running or ann.predictions.work.running:
            ann.notify("wait until the current prediction or propagation ends")
            return
        run = ann.guarded(lambda: ann.session.propagation(axis=self._axis(axis), **options))
        if run is None:
            return
        from napari.utils import progress

        self._stop.clear()
        stop = self._stop

        def plane_by_plane():
            for step in run:
                yield step
                if stop.is_set():
                    run.close()
                    return

        bar = progress(total=max(run.planes_at_most, 1), desc=f"propagating object {run.label_id}")

        def shown(step):
            ann.labels_layer.refresh()
            if self.work.running:               # Qt may deliver the last plane after the end
                ann.set_status(f"object {run.label_id} on plane {step.plane}")
                bar.update(1)                   # last: it may process events, the end included

        def finished():
            bar.close()
            ann.labels_layer.refresh()
            ann.set_status(_summary(run))
            ann.propagation_finished.emit(run)

        self.work.start(plane_by_plane, yielded=shown, finished=finished,
                        errored=lambda err: ann.notify(f"the propagation failed: {err}", error=True))

    def stop(self) -> None:
        if self.work.running:
            self._stop.set()


def _summary(run) -> str:
    ways = {1: "forward", -1: "backward"}
    why = "; ".join(f"{ways[d]}: {reason}" for d, reason in run.stopped.items())
    return f"object {run.label_id} propagated to {len(run.steps)} planes ({why})"


class BoxAndStackMethods:
    """The annotator's methods for many objects from drawn boxes and for 3D propagation: each
    hands the work to its :class:`DrawnBoxes` (``self.boxes``) or :class:`StackPropagation`
    (``self.stack``)."""

    def boxes_of(self, shapes_layer: Shapes | str) -> list:
        """The shapes of ``shapes_layer`` as box prompts (see :meth:`DrawnBoxes.prompts_of`)."""
        return self.boxes.prompts_of(shapes_layer)

    def segment_boxes(self, shapes_layer: Shapes | str) -> list[int | None]:
        """Segment one object per shape and commit them all, here (:meth:`DrawnBoxes.segment`)."""
        return self.boxes.segment(shapes_layer)

    def start_segment_boxes(self, shapes_layer: Shapes | str) -> None:
        """:meth:`segment_boxes` in a worker with a progress bar (:meth:`DrawnBoxes.start`)."""
        self.boxes.start(shapes_layer)

    @property
    def stack_axes(self) -> list[str]:
        """Names of the image's leading (stack) axes, e.g. ``["z"]`` or ``["t", "z"]``."""
        return self.stack.axes

    def propagate(self, axis: int | None = None, **options) -> Any:
        """Carry the last committed object through the stack, here (:meth:`StackPropagation.propagate`)."""
        return self.stack.propagate(axis, **options)

    @property
    def propagating(self) -> bool:
        return self.stack.work.running

    def start_propagation(self, axis: int | None = None, **options) -> None:
        """:meth:`propagate` in a worker, plane by plane (:meth:`StackPropagation.start`)."""
        self.stack.start(axis, **options)

    def stop_propagation(self) -> None:
        """Stop the running propagation before its next plane; what is written stays."""
        self.stack.stop()

    def wait_for_propagation(self, timeout: float = 300.0) -> None:
        """Block (processing Qt events) until a propagation started here has ended."""
        self.stack.work.wait(timeout)
