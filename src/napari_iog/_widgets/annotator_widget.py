"""The "IOG annotator" dock widget: pick the layers, the model and the device, then click."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton
from napari.layers import Image, Labels, Shapes
from napari.utils.notifications import show_error

from .. import zoo
from ..predictor import IOGPredictor
from .annotator import ROLE_COLOURS, Annotator, shortcuts_help

NEW_LABELS = "(new labels layer)"
NO_CHANNEL = "(none)"
FROM_FILE = "(the model file below)"

HOW_TO = (
    "1. Click one corner of a box around the object (guide lines follow the cursor),\n"
    "2. then the opposite corner,\n"
    "3. then inside the object, near its centre.\n"
    "More clicks correct it. Commit writes it into the labels layer with a new id.\n"
    "DEXTR models take the object's four extreme points instead."
)


def present_model_choices() -> list[tuple[str, str]]:
    """(label, zoo name) of the models at hand, the bundled default first (the zoo's order)."""
    return [(f"{r['name']} ({r['arch']}{', bundled' if r['bundled'] else ''})", r["name"])
            for r in zoo.list_weights() if r["present"]]


def available_devices() -> list[str]:
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def image_layer_names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers if isinstance(layer, Image)]


def labels_layer_names(viewer) -> list[str]:
    """Labels layers a user annotates in (not the annotator's own preview layer)."""
    ours = {"IOG current object"}
    return [layer.name for layer in viewer.layers if isinstance(layer, Labels) and layer.name not in ours]


class AnnotatorWidget(Container):
    """Dock widget around :class:`~napari_iog._widgets.annotator.Annotator`."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.annotator: Annotator | None = None
        self._loading = None
        self.image = ComboBox(label="image", choices=self._image_choices,
                              tooltip="the image layer to segment")
        self.green = ComboBox(label="G from", choices=self._channel_choices,
                              tooltip="multichannel data opened as one layer per channel: the layer that "
                                      "feeds the network's green channel (the image above feeds red); each "
                                      "channel is scaled by its layer's contrast limits")
        self.blue = ComboBox(label="B from", choices=self._channel_choices,
                             tooltip="the layer that feeds the network's blue channel")
        self.labels = ComboBox(label="labels", choices=self._labels_choices,
                               tooltip="where committed objects are written; a new layer is made if you "
                                       "choose '(new labels layer)'")
        self.model = ComboBox(label="model", choices=self._model_choices,
                              tooltip="a model from the zoo (napari-iog weights list), or a file below")
        self.model_file = FileEdit(label="model file", mode="r", filter="*.pth *.pt *.pth.tar",
                                   tooltip="an IOG or DEXTR checkpoint: the authors' .pth files or one "
                                           "saved by napari-iog")
        self.device = ComboBox(label="device", choices=available_devices(), value="auto",
                               tooltip="auto: CUDA, then MPS, then CPU")
        self.start_button = PushButton(text="Start annotating")
        self.negative = CheckBox(text="negative corrections (N; or Shift+click)", value=False)
        self.overwrite = CheckBox(text="overwrite existing labels", value=False,
                                  tooltip="off: a committed object never changes a pixel that already "
                                          "has a label")
        self.commit_button = PushButton(text="Commit (Enter)")
        self.undo_button = PushButton(text="Undo (U)")
        self.clear_button = PushButton(text="Clear (Esc)")
        buttons = Container(widgets=[self.commit_button, self.undo_button, self.clear_button],
                            layout="horizontal", labels=False)
        self.propagate_button = PushButton(text="Propagate through stack")
        self.propagate_button.tooltip = (
            "carry the last committed object to the neighbouring planes, plane after plane, until it "
            "vanishes or changes too much; one Undo takes the whole propagation back")
        self.propagate_axis = ComboBox(label="along", choices=[], tooltip="the stack axis to follow")
        self.propagate_row = Container(widgets=[self.propagate_button, self.propagate_axis],
                                       layout="horizontal", labels=False, visible=False)
        self.boxes_layer = ComboBox(label="boxes", choices=self._shapes_choices,
                                    tooltip="a shapes layer with rectangles drawn around objects")
        self.boxes_button = PushButton(text="Segment all boxes")
        self.boxes_button.tooltip = ("segment one object per shape of the chosen shapes layer (its box, the "
                                     "centre as the inside click) and commit them all; one Undo takes them back")
        self.boxes_row = Container(widgets=[self.boxes_button, self.boxes_layer], layout="horizontal", labels=False)
        self.status = Label(value="no model loaded")
        legend = ", ".join(f"{role}: {colour}" for role, colour in ROLE_COLOURS.items())
        self.help = Label(value=HOW_TO)
        self.help.tooltip = f"Shortcuts (on the 'IOG clicks' layer):\n{shortcuts_help()}\n\nPoint colours: {legend}"
        for label in (self.status, self.help):
            label.native.setWordWrap(True)
        self.extend([self.image, self.green, self.blue, self.labels, self.model, self.model_file, self.device, self.start_button, self.negative,
                     self.overwrite, buttons, self.propagate_row, self.boxes_row, self.status, self.help])
        for w in (self.start_button, self.commit_button, self.undo_button, self.clear_button):
            w.tooltip = self.help.tooltip
        self.start_button.changed.connect(lambda: self.start())
        self.commit_button.changed.connect(lambda: self._act("commit"))
        self.undo_button.changed.connect(lambda: self._act("undo"))
        self.clear_button.changed.connect(lambda: self._act("clear"))
        self.propagate_button.changed.connect(lambda: self.propagate())
        self.boxes_button.changed.connect(lambda: self.segment_boxes())
        self.negative.changed.connect(self._on_negative)
        self.overwrite.changed.connect(self._on_overwrite)
        events = self.viewer.layers.events
        events.inserted.connect(self.reset_choices)
        events.removed.connect(self.reset_choices)
        self.reset_choices()

    # --- choices --------------------------------------------------------------------------------

    def _image_choices(self, _=None) -> list[str]:
        return image_layer_names(self.viewer)

    def _channel_choices(self, _=None) -> list[str]:
        single = [layer.name for layer in self.viewer.layers if isinstance(layer, Image) and not layer.rgb]
        return [NO_CHANNEL] + single

    def _shapes_choices(self, _=None) -> list[str]:
        return [layer.name for layer in self.viewer.layers if isinstance(layer, Shapes) and layer.name != "IOG box"]

    def _labels_choices(self, _=None) -> list[str]:
        return [NEW_LABELS] + labels_layer_names(self.viewer)

    @staticmethod
    def _model_choices(_=None) -> list[tuple[str, str]]:
        # The bundled default comes first, so a new user can start without choosing anything.
        missing = [(f"{r['name']} (not downloaded: napari-iog weights fetch {r['name']})", r["name"])
                   for r in zoo.list_weights() if not r["present"]]
        return present_model_choices() + [(FROM_FILE, FROM_FILE)] + missing

    # --- actions --------------------------------------------------------------------------------

    def start(self, model: Any = None) -> None:
        """Load the model (in a worker thread; ``model`` may be a ready IOGPredictor) and start
        annotating the chosen image. A model that fails to load changes nothing."""
        if not self.image.value:
            show_error("no image layer: open an image first (File > Open Sample > napari-iog)")
            return
        if model is None and self.model.value != FROM_FILE:
            model = self.model.value        # a zoo name; a missing file is reported by the loader
        if model is None:
            path = Path(self.model_file.value) if self.model_file.value else None
            if path is None or not path.is_file():
                show_error("choose a model: one from the zoo, or a model file (.pth)")
                return
            model = path
        if isinstance(model, IOGPredictor):
            self._begin(model)
            return
        from napari.qt.threading import create_worker

        self.status.value = f"loading {Path(str(model)).name} ..."
        self.start_button.enabled = False
        worker = create_worker(IOGPredictor, model, device=self.device.value, _start_thread=False,
                               _ignore_errors=True)
        worker.returned.connect(self._begin)
        worker.errored.connect(self._load_failed)
        worker.finished.connect(self._load_finished)
        self._loading = worker
        worker.start()

    def _load_failed(self, error: Exception) -> None:
        show_error(f"the model could not be loaded: {error}")
        self.status.value = self.annotator.status if self.annotator else "no model loaded"

    def _load_finished(self) -> None:
        self._loading = None
        self.start_button.enabled = True

    def _begin(self, predictor: IOGPredictor) -> None:
        labels = None if self.labels.value in (None, NEW_LABELS) else self.labels.value
        extra = [c.value for c in (self.green, self.blue) if c.value not in (None, NO_CHANNEL)]
        try:
            annotator = Annotator(self.viewer, self.image.value, predictor, labels_layer=labels,
                                  overwrite=self.overwrite.value,
                                  channel_layers=[self.image.value, *extra] if extra else None)
        except ValueError as err:
            show_error(str(err))
            return
        if self.annotator is not None:
            self.annotator.close()
        self.annotator = annotator
        annotator.set_negative(self.negative.value)
        annotator.status_changed.connect(self._on_status)
        annotator.negative_changed.connect(self._show_negative)
        annotator.propagation_finished.connect(self._propagation_finished)
        axes = annotator.stack_axes
        self.propagate_axis.choices = [(name, i) for i, name in enumerate(axes)]
        if axes:
            self.propagate_axis.value = len(axes) - 1
        self.propagate_row.visible = bool(axes)
        self.labels.reset_choices()
        self.labels.value = annotator.labels_layer.name
        self._on_status(annotator.status)

    def _act(self, action: str) -> None:
        if self.annotator is None:
            show_error("start annotating first: choose an image and a model, then 'Start annotating'")
            return
        self.annotator.act(action)

    def propagate(self) -> None:
        """Start propagating the last committed object, or stop the running propagation."""
        if self.annotator is None:
            show_error("start annotating first: choose an image and a model, then 'Start annotating'")
            return
        if self.annotator.propagating:
            self.annotator.stop_propagation()
            return
        self.annotator.start_propagation(axis=self.propagate_axis.value)
        if self.annotator.propagating:
            self.propagate_button.text = "Stop propagating"

    def segment_boxes(self) -> None:
        """Segment every shape of the chosen shapes layer (in a worker) and commit them."""
        if self.annotator is None:
            show_error("start annotating first: choose an image and a model, then 'Start annotating'")
            return
        if not self.boxes_layer.value:
            show_error("draw rectangles around the objects in a shapes layer first (Layers > New shapes layer)")
            return
        self.annotator.start_segment_boxes(self.boxes_layer.value)

    def _propagation_finished(self, result) -> None:
        self.propagate_button.text = "Propagate through stack"

    def _on_negative(self, value: bool) -> None:
        if self.annotator is not None:
            self.annotator.set_negative(value)

    def _show_negative(self, value: bool) -> None:
        if self.negative.value != value:
            self.negative.value = value

    def _on_overwrite(self, value: bool) -> None:
        if self.annotator is not None:
            self.annotator.overwrite = bool(value)

    def _on_status(self, text: str) -> None:
        self.status.value = text
