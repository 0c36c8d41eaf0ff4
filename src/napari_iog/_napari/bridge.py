"""napari events -> the annotation session: points added to (or moved in, or deleted from) the
clicks layer, the keys bound on it, the mouse (Shift+click, the guide lines) - and the
predictions those clicks ask for, here or in a worker.

The flow is one way: an event becomes clicks in the image's pixels (``coordinates``), the
session checks them and makes the prompt, the predictor runs, the helper layers are redrawn
from the session. The clicks layer is redrawn from the session too, with the bridge's own
handler blocked meanwhile (:meth:`ClickBridge.quiet`), so a redraw is never taken for clicks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from napari.layers.base import ActionType

from .. import geometry as G
from ..session import AnnotationSession
from .workers import BackgroundWork

#: key -> (action, what it does). Bound on the clicks layer only. None of these keys is
#: bound by napari for points layers or for the viewer (tests/test_annotator.py checks this
#: against napari's own keymap); Enter and Escape are napari's only on labels and shapes layers.
SHORTCUTS = {
    "Enter": ("commit", "commit the current object into the labels layer"),
    "U": ("undo", "undo the last click, or with no object in progress the last commit"),
    "Shift+U": ("redo", "redo what U undid"),
    "Escape": ("clear", "clear the object in progress"),
    "N": ("toggle_negative", "switch correction clicks between positive and negative"),
}
NEGATIVE_MODIFIER = "Shift"   # Shift+click: a negative correction


def shortcuts_help() -> str:
    lines = [f"{key}: {what}" for key, (_, what) in SHORTCUTS.items()]
    lines.append(f"{NEGATIVE_MODIFIER}+click: a negative correction click")
    return "\n".join(lines)


#: A prediction that took less than this last time runs in the GUI thread, at once: for the
#: default model (~25 ms) the hop to a worker thread cost more than the network (the worker
#: waited for the GIL while napari drew the new point: 85 ms from request to result).
INLINE_BELOW_S = 0.04


class Predictions:
    """Predictions for the session's clicks: here, or in a worker, one at a time. A result for
    clicks that changed meanwhile is dropped by the session; when a prediction ends, the latest
    clicks are served. ``work`` is shared with other jobs on the predictor (drawn boxes).
    With ``asynchronous``, a model whose last prediction took under :data:`INLINE_BELOW_S`
    runs in the GUI thread anyway (too short to be felt, and shown sooner)."""

    def __init__(self, session: AnnotationSession, asynchronous: bool, shown: Callable[[float], None],
                 cleared: Callable[[], None], problem: Callable[[str, bool], None]):
        self.session, self.asynchronous = session, asynchronous
        self.shown, self.cleared, self.problem = shown, cleared, problem
        self.work = BackgroundWork("the prediction")
        self.last_task_s: float | None = None     # the last prediction's own time (None: none yet)
        self.failed_version: int | None = None    # the clicks whose prediction failed

    def request(self) -> None:
        """Predict for the clicks as they are now. A request made while a worker runs is served
        when it ends, with the latest clicks."""
        s = self.session
        if not s.ready:
            s.accept(s.version, None)
            self.cleared()
            return
        # never for a server: its answer may take a network's time, which the CPU time hides
        inline = (self.last_task_s is not None and self.last_task_s < INLINE_BELOW_S
                  and getattr(s.predictor, "backend", None) != "remote")
        if not self.asynchronous or (inline and not self.work.running):
            try:
                self.now()
            except ValueError as err:
                self.problem(str(err), False)
            except Exception as err:        # as a worker's error is shown: the labels stay as they are
                self.problem(f"the prediction failed: {err}", True)
            return
        if self.work.running:
            return
        version, untimed = s.request()
        start = time.perf_counter()

        def task():
            # The worker's own CPU time: what the prediction costs without the wait for the
            # GIL while the GUI thread draws (ONNX Runtime and torch share the work with it).
            began = time.thread_time()
            result = untimed()
            self.last_task_s = time.thread_time() - began
            return result

        def returned(prediction) -> None:
            if s.accept(version, prediction):
                self.shown(time.perf_counter() - start)

        def errored(error: Exception) -> None:
            if version == s.version:
                self.failed_version = version       # not asked again until the clicks change
                self.problem(f"the prediction failed: {error}", True)

        self.work.start(task, returned=returned, errored=errored, finished=self.serve_pending)

    def serve_pending(self) -> None:
        s = self.session
        if s.ready and not s.up_to_date and s.version != self.failed_version:
            self.request()

    def now(self) -> None:
        """Predict here and now (scripts, synchronous use, fast models)."""
        start = time.perf_counter()
        self.session.update()
        self.last_task_s = time.perf_counter() - start
        self.shown(self.last_task_s)

    def wait(self, timeout: float = 120.0) -> None:
        """Until the prediction for the last click is shown."""
        from .workers import wait_until

        s = self.session
        wait_until(lambda: not self.work.running and (s.up_to_date or not s.ready), timeout, "the prediction")


class ClickBridge:
    """Connects the clicks layer, its keys and the canvas's mouse to ``annotator``."""

    def __init__(self, annotator):
        self.annotator = annotator
        self.negative_modifier = False      # the last press held Shift
        self.guide: tuple[float, float] | None = None

    @property
    def _clicks(self):
        return self.annotator.layers.clicks

    def connect(self) -> None:
        self._clicks.events.data.connect(self.on_clicks_changed)
        self._clicks.mouse_drag_callbacks.insert(0, self.on_mouse_press)
        self.annotator.viewer.mouse_move_callbacks.append(self.on_mouse_move)
        for key, (action, _) in SHORTCUTS.items():
            self._clicks.bind_key(key, self.key_handler(action), overwrite=True)

    def quiet(self):
        """A context in which changes to the clicks layer do not reach :meth:`on_clicks_changed`."""
        return self._clicks.events.data.blocker(self.on_clicks_changed)

    def disconnect(self) -> None:
        self._clicks.events.data.disconnect(self.on_clicks_changed)
        if self.on_mouse_press in self._clicks.mouse_drag_callbacks:
            self._clicks.mouse_drag_callbacks.remove(self.on_mouse_press)
        callbacks = self.annotator.viewer.mouse_move_callbacks
        if self.on_mouse_move in callbacks:
            callbacks.remove(self.on_mouse_move)

    def key_handler(self, action: str):
        """A plain named function for ``bind_key``: napari 0.9 reads every binding's ``__name__``
        on each key press, which a ``functools.partial`` lacks (every key then failed)."""
        def handler(layer=None) -> None:
            self.annotator.act(action)

        handler.__name__ = handler.__qualname__ = f"iog_{action}"
        return handler

    def on_mouse_press(self, layer, event) -> None:
        self.negative_modifier = NEGATIVE_MODIFIER in event.modifiers

    def on_mouse_move(self, viewer, event) -> None:
        ann = self.annotator
        placing_corner = ann.session.next_role() == "corner" and viewer.layers.selection.active is self._clicks
        guide = ann.coordinates.world_to_pixel(event.position) if placing_corner else None
        if guide != self.guide:
            self.guide = guide
            ann.layers.draw_box(ann.session, guide)

    def on_clicks_changed(self, event) -> None:
        ann = self.annotator
        action = getattr(event, "action", None)
        if action not in (ActionType.ADDED, ActionType.REMOVED, ActionType.CHANGED):
            return      # adding / removing / changing: the outcome follows
        negative, self.negative_modifier = ann.negative or self.negative_modifier, False
        session, layer = ann.session, self._clicks
        data = np.asarray(layer.data)
        known = len(session.clicks)
        if action == ActionType.ADDED and len(data) > known:
            def change():
                for plane, point in ann.coordinates.clicks_of(layer, data[known:]):
                    session.add_click(point, session.next_role(negative), plane=plane, predict=False)
        else:   # points moved or deleted in the layer: the layer's points are the clicks now
            roles = list(layer.features["role"]) if len(data) else []

            def change():
                placed = list(ann.coordinates.clicks_of(layer, data))
                planes = {plane for plane, _ in placed}
                if len(planes) > 1:
                    raise G.ClickError("the clicks of one object must be on one plane")
                clicks = [(str(role), point) for role, (_, point) in zip(roles, placed)]
                session.set_clicks(clicks, planes.pop() if planes else session.plane, predict=False)
        before = session.version
        ann.guarded(change)
        if session.version != before:
            # The network starts before the layers are redrawn: drawing takes tens of ms of
            # the main thread, which the prediction then runs beside rather than after.
            ann.predictions.request()
        ann.draw()
