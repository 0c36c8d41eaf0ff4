"""``Annotator``: the IOG clicking workflow on a napari viewer, for the widget and for scripts.

It owns three helper layers beside the user's image and labels layers:

* ``IOG clicks`` (points): where the user clicks. Each point's role (corner, inside,
  positive, negative, extreme) is a feature and sets its colour;
* ``IOG box`` (shapes, read-only): the box once two corners are set, and while the corners
  are being placed, a vertical and a horizontal guide line that follow the cursor;
* ``IOG current object`` (labels): the prediction drawn as a yellow outline (committed objects
  are filled), a layer only as large as the crop the network saw, placed over the image.

All rules (roles, commit, preserve, undo) are :class:`~napari_iog.session.AnnotationSession`'s;
this class converts coordinates (world <-> the image's data coordinates, here and nowhere
else), runs predictions off the main thread, and draws.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Points, Shapes
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal

from .. import geometry as G
from ..session import ROLES, AnnotationSession
from ..predictor import IOGPredictor
from ..preprocess import ChannelStack

ROLE_COLOURS = {"corner": "yellow", "inside": "lime", "positive": "cyan", "negative": "magenta",
                "extreme": "orange"}
ROLE_SYMBOLS = {"corner": "square", "inside": "disc", "positive": "disc", "negative": "x",
                "extreme": "diamond"}

#: key -> (action, what it does). Bound on the clicks layer only. None of these keys is
#: bound by napari for points layers or for the viewer (tests/test_annotator.py checks this
#: against napari's own keymap); Enter and Escape are napari's only on labels and shapes layers.
SHORTCUTS = {
    "Enter": ("commit", "commit the current object into the labels layer"),
    "U": ("undo", "undo the last click, or with no object in progress the last commit"),
    "Escape": ("clear", "clear the object in progress"),
    "N": ("toggle_negative", "switch correction clicks between positive and negative"),
}
NEGATIVE_MODIFIER = "Shift"   # Shift+click: a negative correction
IN_PROGRESS_COLOUR = "yellow"  # the box and the outline of the object not yet committed
PREVIEW_CONTOUR = 2            # px: the current object is drawn as an outline this thick


def shortcuts_help() -> str:
    lines = [f"{key}: {what}" for key, (_, what) in SHORTCUTS.items()]
    lines.append(f"{NEGATIVE_MODIFIER}+click: a negative correction click")
    return "\n".join(lines)


def _qt_app_running() -> bool:
    try:
        from qtpy.QtWidgets import QApplication
    except Exception:  # no Qt binding: synchronous only
        return False
    return QApplication.instance() is not None


class Annotator:
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

    def __init__(self, viewer, image_layer: Image | str | None = None, model: Any = None, *,
                 device: str = "auto", precision: str = "auto", labels_layer: Labels | str | None = None,
                 overwrite: bool = False, channels: Sequence[int] | None = None,
                 channel_layers: Sequence[Image | str] | None = None, asynchronous: bool | None = None):
        self.viewer = viewer
        self.channel_layers = [self._find_image_layer(layer) for layer in channel_layers or ()]
        if image_layer is None and self.channel_layers:
            image_layer = self.channel_layers[0]
        self.image_layer = self._find_image_layer(image_layer)
        self._check_channel_layers()
        if self.image_layer.ndim < 2:
            raise ValueError(f"image layer {self.image_layer.name!r} has fewer than two dimensions")
        self.predictor = model if isinstance(model, IOGPredictor) else IOGPredictor(
            model, device=device, precision=precision)
        self.labels_layer = self._find_or_make_labels(labels_layer)
        options: dict[str, Any] = {}
        if channels is not None:
            options["channels"] = tuple(channels)
        levels = self._labels_levels()
        self.session = AnnotationSession(self.predictor, self._image_data(), levels[0], overwrite=overwrite,
                                         predict_options=options, pyramid=levels[1:],
                                         next_id_start=self.labels_layer.metadata.get("napari-iog next id"))
        self._follow_contrast_limits()
        for layer in self._source_layers():
            layer.events.contrast_limits.connect(self._follow_contrast_limits)
        self.asynchronous = _qt_app_running() if asynchronous is None else bool(asynchronous)
        self.negative = False
        self.last_latency: float | None = None
        self.messages: list[str] = []
        self._worker = None
        self._propagation = None
        self._drawing = False
        self._modifier_negative = False
        self._guide: tuple[float, float] | None = None
        self._make_helper_layers()
        self._connect()
        self._draw()
        self.status_changed.emit(self.status)

    # --- set-up ------------------------------------------------------------------------------

    def _by_name(self, layer):
        """A layer given by name -> the layer (None and layers pass through)."""
        if isinstance(layer, str):
            if layer not in self.viewer.layers:
                raise ValueError(f"no layer named {layer!r} in the viewer")
            return self.viewer.layers[layer]
        return layer

    def _find_image_layer(self, layer) -> Image:
        layers = self.viewer.layers
        layer = self._by_name(layer)
        if layer is None:
            selected = [lay for lay in layers.selection if isinstance(lay, Image)]
            images = [lay for lay in layers if isinstance(lay, Image)]
            if len(selected) == 1:
                layer = selected[0]
            elif len(images) == 1:
                layer = images[0]
            elif not images:
                raise ValueError("no image layer: open an image first")
            else:
                raise ValueError("several image layers: say which one to annotate (image_layer=...)")
        if not isinstance(layer, Image):
            raise ValueError(f"layer {layer.name!r} is a {type(layer).__name__} layer, not an image layer")
        return layer

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        data = self._image_data()
        return tuple(data.shape[:self.image_layer.ndim])

    def _image_data(self):
        if self.channel_layers:
            return ChannelStack([_full_resolution(layer) for layer in self.channel_layers],
                                [layer.contrast_limits for layer in self.channel_layers])
        return _full_resolution(self.image_layer)

    def _source_layers(self) -> list[Image]:
        return self.channel_layers or [self.image_layer]

    def _check_channel_layers(self) -> None:
        if not self.channel_layers:
            return
        if not 1 <= len(self.channel_layers) <= 3:
            raise ValueError(f"1 to 3 channel layers feed R, G, B; got {len(self.channel_layers)}")
        for layer in self.channel_layers:
            if layer.rgb:
                raise ValueError(f"channel layer {layer.name!r} is RGB: channel layers have one channel each")
            if _full_resolution(layer).shape != _full_resolution(self.image_layer).shape:
                raise ValueError(f"channel layer {layer.name!r} has shape {_full_resolution(layer).shape}, "
                                 f"the image {self.image_layer.name!r} {_full_resolution(self.image_layer).shape}")

    def _find_or_make_labels(self, layer) -> Labels:
        layer = self._by_name(layer)
        if layer is None:
            layer = Labels(new_labels_data(self.image_layer, self.spatial_shape),
                           name=f"{self.image_layer.name} labels", **self._transform())
            layer.metadata["napari-iog next id"] = 1    # empty: no need to scan it for the largest id
            self.viewer.add_layer(layer)
        if not isinstance(layer, Labels):
            raise ValueError(f"layer {layer.name!r} is a {type(layer).__name__} layer, not a labels layer")
        levels = list(layer.data) if layer.multiscale else [layer.data]
        if tuple(levels[0].shape) != self.spatial_shape:
            raise ValueError(f"labels layer {layer.name!r} has shape {levels[0].shape}, the image "
                             f"{self.image_layer.name!r} has {self.spatial_shape}")
        for level in levels:
            if not _writable(level):
                raise ValueError(f"labels layer {layer.name!r} is read-only ({type(level).__name__}); annotate into "
                                 "a new labels layer, or one held in memory or in a zarr array")
        return layer

    def _labels_levels(self) -> list:
        layer = self.labels_layer
        return list(layer.data) if layer.multiscale else [layer.data]

    def _transform(self) -> dict[str, Any]:
        lay = self.image_layer
        return dict(scale=lay.scale, translate=lay.translate, rotate=lay.rotate, shear=lay.shear)

    def _follow_contrast_limits(self, event=None) -> None:
        """16-bit and float images reach the network scaled as the user sees them (channel
        layers each by their own limits)."""
        if self.channel_layers:
            self.session.image.contrast_limits = [tuple(float(v) for v in layer.contrast_limits)
                                                  for layer in self.channel_layers]
            self.session.predict_options["contrast_limits"] = (0.0, 255.0)
            return
        self.session.predict_options["contrast_limits"] = tuple(float(v) for v in self.image_layer.contrast_limits)

    def _make_helper_layers(self) -> None:
        ndim = self.image_layer.ndim
        self.clicks_layer = Points(
            ndim=ndim, name="IOG clicks", features=self._role_table([]),
            face_color="role", face_color_cycle=ROLE_COLOURS, border_color="black", size=10,
            **self._transform())
        self.clicks_layer.feature_defaults = {"role": self.session.next_role()}
        self.box_layer = Shapes(ndim=ndim, name="IOG box", edge_color=IN_PROGRESS_COLOUR, face_color="transparent",
                                edge_width=2, **self._transform())
        self.box_layer.locked = True    # read-only: it shows the clicks, it is not edited
        # An outline in the box's colour, never a fill: committed objects are filled, in whatever
        # colours the labels layer's colormap gives them, so the two cannot be mistaken.
        self.preview_layer = Labels(np.zeros((1,) * ndim, np.uint8), name="IOG current object",
                                    opacity=1.0, scale=self.image_layer.scale, visible=False,
                                    colormap=DirectLabelColormap(color_dict={None: "transparent",
                                                                             1: IN_PROGRESS_COLOUR}))
        self.preview_layer.contour = PREVIEW_CONTOUR
        for layer in (self.preview_layer, self.box_layer, self.clicks_layer):
            self.viewer.add_layer(layer)
        self.viewer.layers.selection.active = self.clicks_layer
        self.clicks_layer.mode = "add"

    @staticmethod
    def _role_table(roles) -> pd.DataFrame:
        return pd.DataFrame({"role": pd.Categorical(list(roles), categories=ROLES)})

    def _connect(self) -> None:
        self.clicks_layer.events.data.connect(self._on_clicks_changed)
        self.clicks_layer.mouse_drag_callbacks.insert(0, self._on_mouse_press)
        self.viewer.mouse_move_callbacks.append(self._on_mouse_move)
        for key, (action, _) in SHORTCUTS.items():
            self.clicks_layer.bind_key(key, self._key_handler(action), overwrite=True)

    def close(self, remove_layers: bool = True) -> None:
        """Stop listening to the viewer; remove the helper layers (not the labels)."""
        self.clicks_layer.events.data.disconnect(self._on_clicks_changed)
        for layer in self._source_layers():
            layer.events.contrast_limits.disconnect(self._follow_contrast_limits)
        if self._on_mouse_press in self.clicks_layer.mouse_drag_callbacks:
            self.clicks_layer.mouse_drag_callbacks.remove(self._on_mouse_press)
        if self._on_mouse_move in self.viewer.mouse_move_callbacks:
            self.viewer.mouse_move_callbacks.remove(self._on_mouse_move)
        if remove_layers:
            for layer in (self.clicks_layer, self.box_layer, self.preview_layer):
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)

    # --- coordinates (the edge: world <-> image data) ------------------------------------------

    def current_plane(self) -> tuple[int, ...]:
        """The leading indices of the plane the viewer shows (() for a 2D image)."""
        ndim = self.image_layer.ndim
        if ndim == 2:
            return ()
        dims = self.viewer.dims
        if dims.ndisplay != 2 or list(dims.displayed[-2:]) != [dims.ndim - 2, dims.ndim - 1]:
            raise G.ClickError("IOG annotates 2D planes: show the image's last two axes (rows, cols) in 2D view")
        data = self.image_layer.world_to_data(np.asarray(dims.point))
        return self._plane_of(data)

    def _plane_of(self, data_coords) -> tuple[int, ...]:
        leading = self.spatial_shape[:-2]
        plane = tuple(int(np.round(v)) for v in np.asarray(data_coords)[:len(leading)])
        if any(not 0 <= i < n for i, n in zip(plane, leading)):
            raise G.ClickError(f"the click is outside the stack (plane {plane} of {leading})")
        return plane

    def _clicks_to_image(self, coords) -> np.ndarray:
        world = self.clicks_layer.data_to_world(np.asarray(coords, dtype=float))
        return np.asarray(self.image_layer.world_to_data(np.asarray(world)), dtype=float)

    def _image_to_layer(self, layer, coords) -> np.ndarray:
        world = self.image_layer.data_to_world(np.asarray(coords, dtype=float))
        return np.asarray(layer.world_to_data(np.asarray(world)), dtype=float)

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
        clicks = [("extreme", p) for p in points]
        return self._scripted(lambda: self.session.set_clicks(clicks, plane, predict=False))

    def correct(self, point, positive: bool = True):
        """Add a correction click (row, col) to the object in progress and re-predict."""
        if not self.session.ready:
            raise G.ClickError("there is no object to correct: segment one first")
        role = "positive" if positive else "negative"
        return self._scripted(lambda: self.session.add_click(point, role, plane=self.session.plane,
                                                             predict=False))

    def _scripted(self, change):
        self._refuse_while_propagating()
        self._join_worker()     # one prediction at a time on the predictor
        change()
        self._predict_now()
        self._draw()
        return self.session.current

    def commit(self) -> int:
        """Write the current object into the labels layer with a fresh id; returns the id."""
        self._refuse_while_propagating()
        self._join_worker()
        if self.session.ready and not self.session.up_to_date:
            self._predict_now()
        label_id = self.session.commit()
        self.labels_layer.refresh()
        self._draw()
        self._set_status(f"committed object {label_id}")
        return label_id

    def undo(self) -> str | None:
        """Take back the last click, or with no object in progress the last commit (a whole
        propagation is one commit)."""
        self._refuse_while_propagating()
        what = self.session.undo(predict=False)
        if what == "commit":
            self.labels_layer.refresh()
        elif what == "click":
            self._request_prediction()
        self._draw()
        return what

    def clear(self) -> None:
        """Drop the object in progress."""
        self.session.clear()
        self._draw()

    # --- many objects from drawn boxes ---------------------------------------------------------------

    def boxes_of(self, shapes_layer: Shapes | str) -> list:
        """The shapes of ``shapes_layer`` as box prompts in the image's pixels: each shape's
        bounding box (rectangles as drawn), its centre as the inside click, on the plane it
        was drawn on (a 2D shapes layer over a stack: the plane on screen)."""
        from ..batch import BoxPrompt

        layer = self._by_name(shapes_layer)
        if not isinstance(layer, Shapes):
            raise ValueError(f"layer {getattr(layer, 'name', layer)!r} is not a shapes layer")
        if len(layer.data) == 0:
            raise ValueError(f"shapes layer {layer.name!r} has no shapes: draw rectangles around the objects")
        leading = len(self.spatial_shape) - 2
        prompts = []
        for n, vertices in enumerate(layer.data):
            world = np.array([layer.data_to_world(v) for v in np.asarray(vertices, dtype=float)])
            missing = self.image_layer.ndim - world.shape[1]
            if missing > 0:     # a 2D layer over a stack: the shapes lie on the plane on screen
                here = np.asarray(self.viewer.dims.point)[-self.image_layer.ndim:][:missing]
                world = np.hstack([np.tile(here, (len(world), 1)), world])
            coords = np.array([self.image_layer.world_to_data(v) for v in world])
            plane = self._plane_of(coords[0, :leading]) if leading else ()
            box = G.outline_box(coords[:, -2:], self.spatial_shape[-2:])
            prompts.append(BoxPrompt(((box.r0, box.c0), (box.r1, box.c1)), plane=plane,
                                     source=f"shape {n + 1} of {layer.name!r}"))
        return prompts

    def segment_boxes(self, shapes_layer: Shapes | str) -> list[int | None]:
        """Segment one object per shape of ``shapes_layer`` and commit them all (ids in shape
        order; None where nothing was left to write). One undo takes them all back."""
        from .. import batch

        self._refuse_while_propagating()
        self._join_worker()
        prompts = self.boxes_of(shapes_layer)
        checked = batch.check_boxes(self.spatial_shape, prompts)
        results = batch.predict_boxes(self.predictor, self.session.image, prompts, checked,
                                      **self.session.predict_options)
        return self._commit_box_results(prompts, results)

    def _commit_box_results(self, prompts, results) -> list[int | None]:
        ids = self.session.commit_masks([(prompts[i].plane, *results[i]) for i in sorted(results)])
        self.labels_layer.refresh()
        self._draw()
        self._set_status(f"{sum(i is not None for i in ids)} objects committed from boxes")
        return ids

    def start_segment_boxes(self, shapes_layer: Shapes | str) -> None:
        """:meth:`segment_boxes` in a worker thread with a napari progress bar; the objects are
        committed together when all are segmented."""
        from .. import batch

        if self._propagation is not None or self._worker is not None:
            self._notify("wait until the current prediction or propagation ends")
            return

        def prepare():
            prompts = self.boxes_of(shapes_layer)
            return prompts, batch.check_boxes(self.spatial_shape, prompts)
        prompts, checked = self._guarded(prepare) or (None, None)
        if prompts is None:
            return
        from napari.qt.threading import create_worker
        from napari.utils import progress

        bar = progress(total=len(prompts), desc="segmenting boxes")
        results: dict = {}
        options = dict(self.session.predict_options)
        image = self.session.image

        def in_batches():
            step = 16 if self.predictor.device.type == "cuda" else 4
            for start in range(0, len(prompts), step):
                chosen = range(start, min(start + step, len(prompts)))
                results.update(batch.predict_boxes(self.predictor, image, prompts, checked, chosen, **options))
                yield len(chosen)

        worker = create_worker(in_batches, _start_thread=False, _ignore_errors=True)

        def finished():
            bar.close()
            if len(results) == len(prompts):
                self._guarded(lambda: self._commit_box_results(prompts, results))
            self.boxes_finished.emit(len(results))
            self._on_worker_finished()      # and serve a click made meanwhile

        worker.yielded.connect(bar.update)
        worker.errored.connect(lambda err: self._notify(f"segmenting the boxes failed: {err}", error=True))
        worker.finished.connect(finished)
        self._worker = worker
        worker.start()

    # --- 3D: propagation ------------------------------------------------------------------------

    @property
    def stack_axes(self) -> list[str]:
        """Names of the image's leading (stack) axes, e.g. ``["z"]`` or ``["t", "z"]``."""
        n = len(self.spatial_shape) - 2
        names = list(self.viewer.dims.axis_labels)[-(n + 2):-2] if n else []
        return [str(name) for name in names] if len(names) == n else [str(i) for i in range(n)]

    def propagate(self, axis: int | None = None, **options) -> Any:
        """Carry the last committed object through the stack (see
        :meth:`~napari_iog.session.AnnotationSession.propagate` for ``options``), synchronously.
        ``axis``: which leading axis (default: the one just before rows, z of (t, z, y, x))."""
        self._refuse_while_propagating()
        self._join_worker()
        axis = len(self.spatial_shape) - 3 if axis is None else axis
        try:
            return self.session.propagate(axis=axis, **options)
        finally:
            self.labels_layer.refresh()

    @property
    def propagating(self) -> bool:
        return self._propagation is not None

    def start_propagation(self, axis: int | None = None, **options) -> None:
        """:meth:`propagate` in a worker thread, plane by plane, with a napari progress bar;
        :meth:`stop_propagation` cancels (what is written stays, one undo takes it back)."""
        if self._propagation is not None or self._worker is not None:
            self._notify("wait until the current prediction or propagation ends")
            return
        axis = len(self.spatial_shape) - 3 if axis is None else axis
        result = self._guarded(lambda: self.session.propagation(axis=axis, **options))
        if result is None:
            return
        from napari.qt.threading import create_worker
        from napari.utils import progress

        stop = threading.Event()

        def plane_by_plane():
            for step in result:
                yield step
                if stop.is_set():
                    result.close()
                    return

        bar = progress(total=max(result.planes_at_most, 1), desc=f"propagating object {result.label_id}")
        worker = create_worker(plane_by_plane, _start_thread=False, _ignore_errors=True)

        def shown(step):
            self.labels_layer.refresh()
            if self._propagation is not None:   # Qt may deliver the last plane after the end
                self._set_status(f"object {result.label_id} on plane {step.plane}")
                bar.update(1)                   # last: it may process events, the end included

        def finished():
            bar.close()
            self._propagation = None
            self.labels_layer.refresh()
            self._set_status(_propagation_summary(result))
            self.propagation_finished.emit(result)

        worker.yielded.connect(shown)
        worker.errored.connect(lambda err: self._notify(f"the propagation failed: {err}", error=True))
        worker.finished.connect(finished)
        self._propagation = (worker, stop, result)
        worker.start()

    def stop_propagation(self) -> None:
        if self._propagation is not None:
            self._propagation[1].set()

    def wait_for_propagation(self, timeout: float = 300.0) -> None:
        """Block (processing Qt events) until a propagation started here has ended."""
        if self._propagation is None:
            return
        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout
        while self._propagation is not None:
            if time.monotonic() > end:
                raise TimeoutError(f"the propagation did not finish within {timeout} s")
            QApplication.processEvents()
            time.sleep(0.005)

    def _refuse_while_propagating(self) -> None:
        if self._propagation is not None:
            raise ValueError("a propagation is writing the labels: wait for it or stop it first")

    @property
    def overwrite(self) -> bool:
        return self.session.overwrite

    @overwrite.setter
    def overwrite(self, value: bool) -> None:
        self.session.overwrite = bool(value)

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def wait(self, timeout: float = 120.0) -> None:
        """Block (processing Qt events) until the prediction for the last click is shown."""
        self._process_events_until(
            lambda: self._worker is None and (self.session.up_to_date or not self.session.ready), timeout)

    def _join_worker(self, timeout: float = 120.0) -> None:
        self._process_events_until(lambda: self._worker is None, timeout)

    def _process_events_until(self, done, timeout: float) -> None:
        if not self.asynchronous or done():
            return
        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout
        while not done():
            if time.monotonic() > end:
                raise TimeoutError(f"the prediction did not finish within {timeout} s")
            QApplication.processEvents()
            time.sleep(0.005)

    # --- status and messages -----------------------------------------------------------------

    @property
    def status(self) -> str:
        p = self.predictor
        text = f"{getattr(p.model, 'card', {}).get('name', p.arch)} on {p.device} ({p.precision})"
        if self.last_latency is not None:
            text += f" · last click {1000 * self.last_latency:.0f} ms"
        return text

    def _set_status(self, extra: str = "") -> None:
        self.status_changed.emit(self.status + (f" · {extra}" if extra else ""))

    def _notify(self, message: str, error: bool = False) -> None:
        self.messages.append(message)
        self.notified.emit(message)
        (show_error if error else show_warning)(message)

    def _guarded(self, action) -> Any:
        """Run a user action; a ValueError (ClickError included) becomes a notification."""
        try:
            return action()
        except ValueError as err:
            self._notify(str(err))
            self._draw()
            return None

    # --- events from the viewer ----------------------------------------------------------------

    def act(self, action: str) -> Any:
        """Run ``commit``, ``undo``, ``clear`` or ``toggle_negative`` as the GUI does: an error
        becomes a notification and changes nothing."""
        if action == "toggle_negative":
            self.set_negative(not self.negative)
            show_info(f"correction clicks are now {'negative' if self.negative else 'positive'}")
            return self.negative
        return self._guarded(getattr(self, action))

    def set_negative(self, value: bool) -> None:
        """Make plain correction clicks negative (True) or positive (False)."""
        if bool(value) != self.negative:
            self.negative = bool(value)
            self._draw()
            self.negative_changed.emit(self.negative)

    def _key_handler(self, action: str):
        """A plain named function for ``bind_key``: napari 0.9 reads every binding's ``__name__``
        on each key press, which a ``functools.partial`` lacks (every key then failed)."""
        def handler(layer=None) -> None:
            self.act(action)

        handler.__name__ = handler.__qualname__ = f"iog_{action}"
        return handler

    def _on_mouse_press(self, layer, event) -> None:
        self._modifier_negative = NEGATIVE_MODIFIER in event.modifiers

    def _on_mouse_move(self, viewer, event) -> None:
        if self.session.next_role() != "corner" or self.viewer.layers.selection.active is not self.clicks_layer:
            guide = None
        else:
            data = self.image_layer.world_to_data(np.asarray(event.position))
            guide = (float(data[-2]), float(data[-1]))
            shape = self.spatial_shape[-2:]
            if not (-0.5 <= guide[0] <= shape[0] - 0.5 and -0.5 <= guide[1] <= shape[1] - 0.5):
                guide = None
        if guide != self._guide:
            self._guide = guide
            self._draw_box()

    def _on_clicks_changed(self, event) -> None:
        if self._drawing:
            return
        action = str(getattr(event, "action", ""))
        if action.endswith("ing"):     # adding / removing / changing: wait for the outcome
            return
        negative, self._modifier_negative = self.negative or self._modifier_negative, False
        data = np.asarray(self.clicks_layer.data)
        known = len(self.session.clicks)
        if action == "added" and len(data) > known:
            def change():
                for coords in data[known:]:
                    image_coords = self._clicks_to_image(coords)
                    plane = self._plane_of(image_coords[:-2]) if len(image_coords) > 2 else ()
                    role = self.session.next_role(negative)
                    self.session.add_click(image_coords[-2:], role, plane=plane, predict=False)
        else:   # points moved or deleted in the layer: the layer's points are the clicks now
            roles = list(self.clicks_layer.features["role"]) if len(data) else []

            def change():
                clicks, planes = [], set()
                for coords, role in zip(data, roles):
                    image_coords = self._clicks_to_image(coords)
                    planes.add(self._plane_of(image_coords[:-2]) if len(image_coords) > 2 else ())
                    clicks.append((str(role), image_coords[-2:]))
                if len(planes) > 1:
                    raise G.ClickError("the clicks of one object must be on one plane")
                self.session.set_clicks(clicks, planes.pop() if planes else self.session.plane, predict=False)
        before = self.session.version
        self._guarded(change)
        self._draw()
        if self.session.version != before:
            self._request_prediction()

    # --- prediction ----------------------------------------------------------------------------

    def _predict_now(self) -> None:
        start = time.perf_counter()
        self.session.update()
        self._shown(time.perf_counter() - start)

    def _request_prediction(self) -> None:
        """Predict for the clicks as they are now: in a worker, or here when synchronous. A
        request made while a worker runs is served when it ends, with the latest clicks."""
        if not self.session.ready:
            self.session.accept(self.session.version, None)
            self._draw()
            return
        if not self.asynchronous:
            self._guarded(self._predict_now)
            return
        if self._worker is not None:
            return      # _on_worker_finished starts the next one with the latest clicks
        from napari.qt.threading import create_worker

        version, task = self.session.request()
        start = time.perf_counter()
        worker = create_worker(task, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(partial(self._on_worker_returned, version, start))
        worker.errored.connect(partial(self._on_worker_errored, version))
        worker.finished.connect(self._on_worker_finished)
        self._worker = worker
        worker.start()

    def _on_worker_returned(self, version: int, start: float, prediction) -> None:
        if self.session.accept(version, prediction):
            self._shown(time.perf_counter() - start)

    def _on_worker_errored(self, version: int, error: Exception) -> None:
        if version == self.session.version:
            self._notify(f"the prediction failed: {error}", error=True)

    def _on_worker_finished(self) -> None:
        self._worker = None
        if self.session.ready and not self.session.up_to_date:
            self._request_prediction()

    def _shown(self, latency: float) -> None:
        self.last_latency = latency
        self._draw()
        self._set_status()
        self.prediction_shown.emit()

    # --- drawing --------------------------------------------------------------------------------

    def _draw(self) -> None:
        self._drawing = True
        try:
            self._draw_clicks()
            self._draw_box()
            self._draw_preview()
        finally:
            self._drawing = False

    def _draw_clicks(self) -> None:
        s = self.session
        layer = self.clicks_layer
        coords = [self._image_to_layer(layer, (*s.plane, *p)) for _, p in s.clicks]
        roles = [r for r, _ in s.clicks]
        layer.data = np.array(coords, dtype=float).reshape(-1, layer.ndim)
        layer.features = self._role_table(roles)
        if roles:
            layer.symbol = [ROLE_SYMBOLS[r] for r in roles]
        layer.refresh_colors(update_color_mapping=False)
        layer.feature_defaults = {"role": s.next_role(self.negative)}

    def _draw_box(self) -> None:
        s = self.session
        layer = self.box_layer
        shapes, types = [], []
        corners = s.points("corner") if s.mode == "iog" else (
            [(min(p[0] for p in s.points("extreme")), min(p[1] for p in s.points("extreme"))),
             (max(p[0] for p in s.points("extreme")), max(p[1] for p in s.points("extreme")))]
            if len(s.clicks) == 4 else [])
        plane = s.plane if s.clicks else self._safe_plane()
        if len(corners) == 2:
            (r0, r1), (c0, c1) = sorted((corners[0][0], corners[1][0])), sorted((corners[0][1], corners[1][1]))
            rect = [(r0 - 0.5, c0 - 0.5), (r0 - 0.5, c1 + 0.5), (r1 + 0.5, c1 + 0.5), (r1 + 0.5, c0 - 0.5)]
            shapes.append([self._image_to_layer(layer, (*plane, *v)) for v in rect])
            types.append("rectangle")
        if self._guide is not None and s.next_role() == "corner" and plane is not None:
            h, w = self.spatial_shape[-2:]
            r, c = self._guide
            for a, b in (((r, -0.5), (r, w - 0.5)), ((-0.5, c), (h - 0.5, c))):
                shapes.append([self._image_to_layer(layer, (*plane, *a)), self._image_to_layer(layer, (*plane, *b))])
                types.append("line")
        with layer.events.blocker_all():
            layer.data = []
        if shapes:
            layer.add([np.asarray(sh) for sh in shapes], shape_type=types)
        layer.refresh()

    def _safe_plane(self) -> tuple[int, ...] | None:
        try:
            return self.current_plane()
        except G.ClickError:
            return None

    def _draw_preview(self) -> None:
        s = self.session
        layer = self.preview_layer
        current = s.current
        if current is None:
            layer.visible = False
            return
        window = current.window
        leading = (1,) * len(s.plane)
        layer.data = current.window_mask().astype(np.uint8).reshape(leading + current.window_mask().shape)
        offset = np.array([*s.plane, window.r0, window.c0], dtype=float)
        layer.scale = self.image_layer.scale
        layer.translate = np.asarray(self.image_layer.translate) + np.asarray(self.image_layer.scale) * offset
        layer.visible = True


#: Above this many pixels a new labels layer is a sparse zarr array (only the chunks that hold
#: objects take memory) instead of a dense numpy array: 8192 x 8192 as uint32 would be 256 MiB.
DENSE_LABELS_MAX_PIXELS = 8192 * 8192
LABELS_CHUNK = 1024


def _full_resolution(layer: Image):
    return layer.data[0] if layer.multiscale else layer.data


def new_labels_data(image_layer: Image, spatial_shape: tuple[int, ...]):
    """Empty labels for ``image_layer``: a numpy array for ordinary images; for multiscale
    images a pyramid of sparse in-memory zarr arrays with the image's level shapes; for other
    very large images one sparse zarr array."""
    huge = int(np.prod(spatial_shape, dtype=np.int64)) > DENSE_LABELS_MAX_PIXELS
    if not (image_layer.multiscale or huge):
        return np.zeros(spatial_shape, np.uint32)
    import zarr

    ndim = len(spatial_shape)
    shapes = ([tuple(level.shape[:ndim]) for level in image_layer.data] if image_layer.multiscale
              else [spatial_shape])
    chunks = (1,) * (ndim - 2) + (LABELS_CHUNK, LABELS_CHUNK)
    levels = [zarr.zeros(shape=shape, chunks=tuple(min(c, n) for c, n in zip(chunks, shape)), dtype="uint32")
              for shape in shapes]
    return levels if image_layer.multiscale else levels[0]


def _writable(array) -> bool:
    if isinstance(array, np.ndarray):
        return array.flags.writeable
    if hasattr(array, "dask"):
        return False
    return callable(getattr(array, "__setitem__", None)) and not getattr(array, "read_only", False)


def _propagation_summary(result) -> str:
    ways = {1: "forward", -1: "backward"}
    why = "; ".join(f"{ways[d]}: {reason}" for d, reason in result.stopped.items())
    return f"object {result.label_id} propagated to {len(result.steps)} planes ({why})"
