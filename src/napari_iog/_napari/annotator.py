"""``Annotator``: the IOG clicking workflow on a napari viewer, for the widget and for scripts.

All rules (roles, commit, preserve, undo) are the :class:`~napari_iog.session.AnnotationSession`'s;
the annotator puts it on a viewer: it finds the layers (``layers``), adds the helper layers and
draws on them (``drawing``), turns napari events into session calls (``bridge``), and runs
predictions, drawn boxes and propagation off the main thread (``workers``, ``tasks``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal

from .. import geometry as G
from ..predictor import IOGPredictor, is_predictor
from ..session import AnnotationSession
from .bridge import ClickBridge, Predictions
from .coordinates import Coordinates
from .drawing import HelperLayers
from .layers import NEXT_ID_KEY, SourceLayers, find_or_make_labels, labels_levels
from .tasks import BoxAndStackMethods, DrawnBoxes, StackPropagation
from .workers import qt_app_running


class Annotator(BoxAndStackMethods):
    """Segment objects in ``image_layer`` with IOG clicks and commit them to ``labels_layer``.

    Args:
        viewer: the napari viewer (``napari.Viewer`` or a ``ViewerModel``).
        image_layer: an image layer or its name; default: the selected image layer, or the
            only one.
        model: an :class:`~napari_iog.IOGPredictor`, a network, a zoo name or a checkpoint path;
            None: the bundled default model.
        device, precision: passed to :class:`~napari_iog.IOGPredictor` when ``model`` is not
            a predictor.
        labels_layer: a labels layer or its name; default: a new one named
            ``"<image> labels"`` with the image's shape (uint32).
        overwrite: let committed objects replace existing labels (off: they never do).
        channels: which three channels feed R, G, B for images with more than four channels.
        channel_layers: 1 to 3 image layers of one shape feeding R, G, B (e.g. the layers napari
            makes with ``channel_axis``), each scaled by its own contrast limits; ``image_layer``
            defaults to the first.
        asynchronous: predict in a worker thread after each click (default: when a Qt
            application runs). The scripted methods (:meth:`segment`, :meth:`correct`...)
            are always synchronous.

    Coordinates given to the scripted methods are (row, col) in the image layer's data
    coordinates (pixels), like ``IOGPredictor``'s.
    """

    status_changed = Signal(str)
    negative_changed = Signal(bool)
    prediction_shown = Signal()
    propagation_finished = Signal(object)
    boxes_finished = Signal(int)
    notified = Signal(str)      # every problem shown to the user, in full
    stopped = Signal(str)       # the annotator closed itself (its image or labels layer was removed)
    commits_changed = Signal(str, int, object)   # "committed"/"undid"/"redid", the id, the clicks (on commit)

    def __init__(self, viewer, image_layer: Image | str | None = None, model: Any = None, *,
                 device: str = "auto", precision: str = "auto", labels_layer: Labels | str | None = None,
                 overwrite: bool = False, channels: Sequence[int] | None = None,
                 channel_layers: Sequence[Image | str] | None = None, asynchronous: bool | None = None):
        self.viewer = viewer
        self.source = SourceLayers(viewer, image_layer, channel_layers)
        self.predictor = model if is_predictor(model) else IOGPredictor(model, device=device, precision=precision)
        self.labels_layer = find_or_make_labels(viewer, labels_layer, self.image_layer, self.spatial_shape)
        levels = labels_levels(self.labels_layer)
        self.session = AnnotationSession(self.predictor, self.source.data(), levels[0], overwrite=overwrite,
                                         predict_options={} if channels is None else {"channels": tuple(channels)},
                                         pyramid=levels[1:], next_id_start=self.labels_layer.metadata.get(NEXT_ID_KEY))
        self._follow_contrast_limits()
        for layer in self.source.layers:
            layer.events.contrast_limits.connect(self._follow_contrast_limits)
        self.asynchronous = qt_app_running() if asynchronous is None else bool(asynchronous)
        self.negative = False
        self.last_latency: float | None = None
        self.coordinates = Coordinates(viewer, self.image_layer, self.spatial_shape)
        self.layers = HelperLayers(viewer, self.image_layer, self.coordinates, self.session.next_role())
        self.predictions = Predictions(self.session, self.asynchronous, self._shown, self.draw, self.notify)
        self.boxes = DrawnBoxes(self)
        self.stack = StackPropagation(self)
        self.bridge = ClickBridge(self)
        self.bridge.connect()
        self.closed = False
        viewer.layers.events.removed.connect(self._on_layer_removed)
        self.draw()
        self.status_changed.emit(self.status)

    # --- layers ------------------------------------------------------------------------------

    @property
    def image_layer(self) -> Image:
        return self.source.image_layer

    @property
    def channel_layers(self) -> list[Image]:
        return self.source.channel_layers

    @property
    def clicks_layer(self):
        return self.layers.clicks

    @property
    def box_layer(self):
        return self.layers.box

    @property
    def preview_layer(self):
        return self.layers.preview

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.source.spatial_shape

    def current_plane(self) -> tuple[int, ...]:
        """The leading indices of the plane the viewer shows (() for a 2D image)."""
        return self.coordinates.current_plane()

    def _follow_contrast_limits(self, event=None) -> None:
        """16-bit and float images reach the network scaled as the user sees them."""
        self.session.predict_options.update(self.source.contrast_options(self.session.image))

    def close(self, remove_layers: bool = True) -> None:
        """Stop listening to the viewer; remove the helper layers (not the labels). A prediction
        or propagation still running ends unseen."""
        if self.closed:
            return
        self.closed = True
        self.stack.stop()
        self.bridge.disconnect()
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        for layer in self.source.layers:
            layer.events.contrast_limits.disconnect(self._follow_contrast_limits)
        if remove_layers:
            self.layers.remove()

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        if layer in self.source.layers or layer is self.labels_layer:
            what = "labels" if layer is self.labels_layer else "image"
            message = (f"the {what} layer {layer.name!r} was removed: annotating stopped"
                       + ("" if what == "labels" else "; the labels are kept"))
            self.close()
            self.notify(message)
            self.stopped.emit(message)

    # --- scripted use ------------------------------------------------------------------------

    def segment(self, corners, inside, plane: Sequence[int] | None = None):
        """Start a new object from two opposite box corners and one inside click (row, col),
        on ``plane`` (default: the slice the viewer shows). Replaces any object in progress.
        Returns the :class:`~napari_iog.Prediction`."""
        plane = self.current_plane() if plane is None else tuple(plane)
        clicks = [("corner", corners[0]), ("corner", corners[1]), ("inside", inside)]
        return self._scripted(lambda: self.session.set_clicks(clicks, plane, predict=False))

    def extreme(self, points, plane: Sequence[int] | None = None):
        """DEXTR models: start a new object from its four extreme points (row, col)."""
        plane = self.current_plane() if plane is None else tuple(plane)
        return self._scripted(lambda: self.session.set_clicks([("extreme", p) for p in points], plane, predict=False))

    def correct(self, point, positive: bool = True):
        """Add a correction click (row, col) to the object in progress and re-predict."""
        if not self.session.ready:
            raise G.ClickError("there is no object to correct: segment one first")
        role = "positive" if positive else "negative"
        return self._scripted(lambda: self.session.add_click(point, role, plane=self.session.plane, predict=False))

    def _scripted(self, change):
        self.stack.refuse_while_running()
        self.predictions.work.wait()     # one prediction at a time on the predictor
        change()
        self.predictions.now()
        self.draw()
        return self.session.current

    def commit(self) -> int:
        """Write the current object into the labels layer with a fresh id; returns the id."""
        self.stack.refuse_while_running()
        self.predictions.work.wait()
        if self.session.ready and not self.session.up_to_date:
            self.predictions.now()
        clicks = self.session.current.clicks if self.session.current is not None else {}
        label_id = self.session.commit()
        self.labels_layer.refresh()
        self.draw()
        self.set_status(f"committed object {label_id}")
        self.commits_changed.emit("committed", label_id, clicks)
        return label_id

    def undo(self) -> str | None:
        """Take back the last click, or with no object in progress the last commit (a whole
        propagation is one commit)."""
        self.stack.refuse_while_running()
        last = self.session.last_commit
        return self._after_history(self.session.undo(predict=False), "undid",
                                   None if last is None or self.session.clicks else last[0])

    def redo(self) -> str | None:
        """Do again what the last :meth:`undo` took back: a click, or a commit."""
        self.stack.refuse_while_running()
        what = self.session.redo(predict=False)
        last = self.session.last_commit
        return self._after_history(what, "redid", last[0] if what == "commit" and last else None)

    def _after_history(self, what: str | None, verb: str, label_id: int | None) -> str | None:
        if what == "commit":
            self.labels_layer.refresh()
        elif what == "click":
            self.predictions.request()
        self.draw()
        self.set_status({"commit": f"{verb} the commit of object {label_id}", "click": f"{verb} the last click",
                         None: f"nothing to {verb[:-2]}"}[what])
        if what == "commit" and label_id is not None:
            self.commits_changed.emit(verb, label_id, None)
        return what

    def use_predictor(self, predictor: IOGPredictor) -> None:
        """Predict with ``predictor`` from the next click on; the labels, the helper layers and
        the object in progress stay (it is predicted again with the new model)."""
        self.predictions.work.wait()
        self.predictor = predictor
        self.session.use_predictor(predictor)
        if self.session.ready:
            self.predictions.request()
        self.draw()
        self.set_status(f"now using {what_runs(predictor).split(':')[0]}")

    def clear(self) -> None:
        """Drop the object in progress."""
        self.session.clear()
        self.draw()

    @property
    def overwrite(self) -> bool:
        return self.session.overwrite

    @overwrite.setter
    def overwrite(self, value: bool) -> None:
        self.session.overwrite = bool(value)

    @property
    def busy(self) -> bool:
        return self.predictions.work.running

    def wait(self, timeout: float = 120.0) -> None:
        """Block (processing Qt events) until the prediction for the last click is shown."""
        self.predictions.wait(timeout)

    # --- what the user sees ------------------------------------------------------------------

    def act(self, action: str) -> Any:
        """Run ``commit``, ``undo``, ``redo``, ``clear`` or ``toggle_negative`` as the GUI does: an error
        becomes a notification and changes nothing."""
        if self.closed:
            self.notify("annotating has stopped: press 'Start annotating' again")
            return None
        if action == "toggle_negative":
            self.set_negative(not self.negative)
            show_info(f"correction clicks are now {'negative' if self.negative else 'positive'}")
            return self.negative
        return self.guarded(getattr(self, action))

    def set_negative(self, value: bool) -> None:
        """Make plain correction clicks negative (True) or positive (False)."""
        if bool(value) != self.negative:
            self.negative = bool(value)
            self.draw()
            self.negative_changed.emit(self.negative)

    @property
    def status(self) -> str:
        text = what_runs(self.predictor)
        if self.last_latency is not None:
            text += f" · last click {1000 * self.last_latency:.0f} ms"
            network = getattr(self.predictor, "last_timings", {}).get("network")
            if network is not None:     # a server: its network's share of the round trip
                text += f" (network {1000 * network:.0f} ms)"
        return text

    def set_status(self, extra: str = "") -> None:
        self.status_changed.emit(self.status + (f" · {extra}" if extra else ""))

    def notify(self, message: str, error: bool = False) -> None:
        """Tell the user of a problem: a napari notification, and :attr:`notified` with the whole text."""
        self.notified.emit(message)
        (show_error if error else show_warning)(message)

    def guarded(self, action) -> Any:
        """Run a user action; a ValueError (ClickError included) becomes a notification, and so
        does an OSError (labels on a full or unplugged disk), which leaves the labels as they were."""
        try:
            return action()
        except ValueError as err:
            self.notify(str(err))
        except ConnectionError as err:     # a server that is away: its message says what to do
            self.notify(str(err), error=True)
        except OSError as err:
            self.notify(f"the labels could not be written: {err}; they are as they were before", error=True)
        self.draw()
        return None

    def _shown(self, latency: float) -> None:
        if self.closed:
            return
        self.last_latency = latency
        with self.bridge.quiet():   # a result changes only the outline: the clicks and box are drawn
            self.layers.draw_preview(self.session)
        self.set_status()
        self.prediction_shown.emit()

    def draw(self) -> None:
        if self.closed:
            return
        with self.bridge.quiet():
            self.layers.draw(self.session, self.negative, self.bridge.guide)


def what_runs(p) -> str:
    """'napari-iog default: cpu, float32 ORT': short, for a line of the dock (ORT: ONNX Runtime)."""
    backend = getattr(p, "backend", "torch")       # stand-in predictors may not say
    remote = f"{p.precision}, remote"
    if backend == "remote" and getattr(p, "learns", False):     # a learning server: which version answered
        remote += f", learning (model v{p.model_version})"
    runs = {"onnxruntime": f"{p.precision} ORT", "remote": remote}.get(backend, p.precision)
    return f"{(getattr(p, 'card', None) or {}).get('name', p.arch)}: {p.device}, {runs}"
