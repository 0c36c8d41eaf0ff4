"""The "IOG annotator" dock widget: pick the layers, the model and the device, then click.

It is narrow on purpose (a 1280 px window keeps most of its width for the canvas): short
names in the combo boxes, the long text in tooltips and in lines that wrap.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton
from napari.layers import Image, Shapes
from napari.utils.notifications import show_error

from .. import zoo
from ..predictor import IOGPredictor, is_predictor
from .annotator import Annotator
from .bridge import shortcuts_help
from .drawing import ROLE_COLOURS
from .layers import image_layer_names, labels_layer_names, user_layer_names
from .layout import available_devices, make_compact, share_dock, titled, wrap_text
from .learning_controls import LearningControls
from .model_choice import (
    FROM_FILE,
    FROM_SERVER,
    DownloadControl,
    ModelLoading,
    annotator_model_choices,
    describe_model,
    is_server,
    mark_missing,
    model_tooltip,
)

NEW_LABELS = "(new layer)"
NO_CHANNEL = "(none)"

HOW_TO = (
    "Click two opposite corners of a box around the object, then inside it. More clicks "
    "correct it (Shift+click: negative).\nKeys: Enter commit · U undo · Shift+U redo · Esc clear · "
    "N negative clicks"
)
NOT_STARTED = "start annotating first: choose an image and a model, then 'Start annotating'"
DEXTR_HOW_TO = "DEXTR models take the object's four extreme points instead of the box and inside click."


_OPEN: weakref.WeakSet[AnnotatorWidget] = weakref.WeakSet()


def open_annotator_widget(viewer) -> AnnotatorWidget | None:
    """The annotator dock open on ``viewer`` (the one annotating, if several), or None."""
    widgets = [w for w in _OPEN if w.viewer is viewer]
    return next((w for w in widgets if w.annotator is not None), widgets[0] if widgets else None)


class AnnotatorWidget(Container):
    """Dock widget around :class:`~napari_iog._napari.annotator.Annotator`."""

    def __init__(self, napari_viewer):
        super().__init__(labels=False)
        self.margins = (2, 4, 2, 4)
        self.viewer = napari_viewer
        self.annotator: Annotator | None = None
        self.loading = ModelLoading(self._say_loading)
        self.image = ComboBox(label="image", choices=self._image_choices,
                              tooltip="the image layer to segment")
        self.green = ComboBox(label="G from", choices=self._channel_choices,
                              tooltip="multichannel data opened as one layer per channel: the layer that "
                                      "feeds the network's green channel (the image above feeds red); each "
                                      "channel is scaled by its layer's contrast limits")
        self.blue = ComboBox(label="B from", choices=self._channel_choices,
                             tooltip="the layer that feeds the network's blue channel")
        self.labels = ComboBox(label="labels", choices=self._labels_choices,
                               tooltip="where committed objects are written; '(new layer)' makes one")
        self.model = ComboBox(label="model", choices=annotator_model_choices,
                              tooltip="a model from the zoo (napari-iog weights list), one fine-tuned here, or a "
                                      "file of your own")
        self.model_info = Label(value="")
        self.downloads = DownloadControl(self._downloaded, self._set_message, self._report, self._download_finished)
        self.download_button, self.downloading = self.downloads.button, self.downloads.downloading
        self.model_file = FileEdit(label="file", mode="r", filter="*.pth *.pt *.pth.tar",
                                   tooltip="an IOG or DEXTR checkpoint: the authors' .pth files or one "
                                           "saved by napari-iog")
        self.server = LineEdit(label="server", value="", tooltip="http://host:port of napari-iog serve (its token: "
                                                                 "$NAPARI_IOG_TOKEN when napari started)")
        self.device = ComboBox(label="device", choices=available_devices(), value="auto",
                               tooltip="auto: CUDA, then MPS, then CPU")
        self.start_button = PushButton(text="Start annotating")
        self.negative = CheckBox(text="negative clicks (N)", value=False,
                                 tooltip="correction clicks remove from the object; Shift+click does too")
        self.overwrite = CheckBox(text="overwrite labels", value=False,
                                  tooltip="off: a committed object never changes a pixel that already "
                                          "has a label")
        self.commit_button = PushButton(text="Commit", tooltip="commit the object into the labels layer (Enter)")
        self.undo_button = PushButton(text="Undo", tooltip="undo the last click, or the last commit (U)")
        self.redo_button = PushButton(text="Redo", tooltip="redo what Undo took back (Shift+U)")
        self.clear_button = PushButton(text="Clear", tooltip="clear the object in progress (Esc)")
        buttons = Container(widgets=[self.undo_button, self.redo_button, self.clear_button], layout="horizontal",
                            labels=False)
        buttons.margins = (0, 0, 0, 0)
        self.propagate_button = PushButton(text="Propagate")
        self.propagate_button.tooltip = (
            "carry the last committed object to the neighbouring planes, plane after plane, until it "
            "vanishes or changes too much; one Undo takes the whole propagation back")
        self.propagate_axis = ComboBox(label="along", choices=[], tooltip="the stack axis to follow")
        self.propagate_row = Container(widgets=[self.propagate_button, self.propagate_axis],
                                       layout="horizontal", labels=False, visible=False)
        self.propagate_row.margins = (0, 0, 0, 0)
        self.boxes_layer = ComboBox(label="boxes", choices=self._shapes_choices,
                                    tooltip="a shapes layer with rectangles drawn around objects")
        self.boxes_button = PushButton(text="Segment all boxes")
        self.boxes_button.tooltip = ("segment one object per shape of the chosen shapes layer (its box, the "
                                     "centre as the inside click) and commit them all; one Undo takes them back")
        self.status = Label(value="no model loaded")
        self.learning = LearningControls()
        self.status.tooltip = ("the model, the device and what runs it: float32 or bfloat16 in torch, or 'ORT': "
                               "the same float32 network in ONNX Runtime, chosen at the start where it is faster")
        #: the last problem, in full (a notification toast may cut it short)
        self.message = Label(value="")
        self.message.native.setStyleSheet("color: #ff9080;")
        legend = ", ".join(f"{role}: {colour}" for role, colour in ROLE_COLOURS.items())
        self.help = Label(value=HOW_TO)
        self.help.tooltip = (f"Shortcuts (on the 'IOG clicks' layer):\n{shortcuts_help()}\n\nPoint colours: {legend}"
                             f"\n\n{DEXTR_HOW_TO}")
        for label in (self.model_info, self.status, self.message, self.help):
            wrap_text(label)
        for combo in (self.image, self.green, self.blue, self.labels, self.model, self.device, self.boxes_layer):
            make_compact(combo)
        make_compact(self.propagate_axis, 2)        # axis names: z, t, 0 ...
        self.green_row, self.blue_row = titled(self.green), titled(self.blue)
        self.model_file_row, self.server_row = titled(self.model_file), titled(self.server)
        self.extend([titled(self.image), self.green_row, self.blue_row, titled(self.labels), titled(self.model),
                     self.model_info, self.download_button, self.model_file_row, self.server_row, titled(self.device),
                     self.start_button, self.negative, self.overwrite, self.commit_button, buttons,
                     self.propagate_row,
                     titled(self.boxes_layer), self.boxes_button, self.status, self.learning, self.message,
                     self.help])
        self.start_button.tooltip = self.help.tooltip
        self.model.changed.connect(self._show_model)
        self.download_button.changed.connect(lambda: self.download())
        self.start_button.changed.connect(lambda: self.start())
        self.commit_button.changed.connect(lambda: self._act("commit"))
        self.undo_button.changed.connect(lambda: self._act("undo"))
        self.redo_button.changed.connect(lambda: self._act("redo"))
        self.clear_button.changed.connect(lambda: self._act("clear"))
        self.propagate_button.changed.connect(lambda: self.propagate())
        self.boxes_button.changed.connect(lambda: self.segment_boxes())
        self.negative.changed.connect(self._on_negative)
        self.overwrite.changed.connect(self._on_overwrite)
        events = self.viewer.layers.events
        events.inserted.connect(self.reset_choices)
        events.removed.connect(self.reset_choices)
        self.reset_choices()
        self._show_model()
        share_dock(self)
        _OPEN.add(self)

    # --- choices --------------------------------------------------------------------------------

    def _image_choices(self, _=None) -> list[str]:
        return image_layer_names(self.viewer)

    def _channel_choices(self, _=None) -> list[str]:
        single = [layer.name for layer in self.viewer.layers if isinstance(layer, Image) and not layer.rgb]
        return [NO_CHANNEL] + single

    def _shapes_choices(self, _=None) -> list[str]:
        return user_layer_names(self.viewer, Shapes)

    def _labels_choices(self, _=None) -> list[str]:
        return [NEW_LABELS] + labels_layer_names(self.viewer)

    def reset_choices(self, *args) -> None:
        super().reset_choices(*args)
        mark_missing(self.model)
        # The channel pickers matter only for data opened as one layer per channel.
        channels = len(self._channel_choices()) > 2
        self.green_row.visible = self.blue_row.visible = channels

    def _show_model(self, *_) -> None:
        name = self.model.value
        from_file = name == FROM_FILE
        missing = name in zoo.WEIGHTS and not zoo.is_present(name)
        self.model_info.value = describe_model(name) if not from_file else "choose the file below"
        self.model.native.setToolTip(model_tooltip(name))
        self.model_file_row.visible, self.server_row.visible = from_file, name == FROM_SERVER
        self.download_button.visible = missing or self.downloading.running
        self.start_button.enabled = not missing and not self.loading.running

    # --- downloading a zoo model ------------------------------------------------------------

    def download(self, name: str | None = None) -> None:
        """Download the chosen zoo model in a worker, with napari progress; pressing the button
        again cancels. When it is here, it is selected."""
        if self.downloads.press(name or self.model.value):
            self.start_button.enabled = False

    def _downloaded(self, name: str) -> None:
        self.model.value = name

    def _download_finished(self) -> None:
        self.reset_choices()
        self._show_model()

    def _set_message(self, text: str) -> None:
        self.message.value = text

    def _report(self, text: str) -> None:
        """A problem: in a notification and, whole, in the dock."""
        self._set_message(text)
        show_error(text)

    # --- actions --------------------------------------------------------------------------------

    def start(self, model: Any = None) -> None:
        """Load the model (in a worker thread; ``model`` may be a ready IOGPredictor) and start
        annotating the chosen image. A model that fails to load changes nothing."""
        if not self.image.value:
            self._report("no image layer: open an image first (File > Open Sample > napari-iog)")
            return
        if model is None and self.model.value == FROM_SERVER:
            model = self.server.value.strip() or None
        elif model is None and self.model.value != FROM_FILE:
            model = self.model.value        # a zoo name; a missing file is reported by the loader
        if model is None:
            path = Path(self.model_file.value) if self.model_file.value else None
            if path is None or not path.is_file():
                self._report("choose a model: one from the zoo, a model file (.pth), or a server's address")
                return
            model = path
        if is_predictor(model):
            self._begin(model)
            return
        self.start_button.enabled = False
        self.loading.start(model, self.device.value, returned=self._begin, errored=self._load_failed,
                           finished=self._show_model)

    def use_model(self, model: Any) -> None:
        """Annotate with ``model`` (a zoo name, a file, or a ready IOGPredictor) from now on. The
        annotator that runs keeps its labels, its layers and the object in progress; with none
        running, one starts."""
        if is_server(model):
            self.model.value, self.server.value = FROM_SERVER, str(model)
        elif not is_predictor(model):
            self.reset_choices()
            known = list(self.model.choices)
            self.model.value = str(model) if str(model) in known else FROM_FILE
            if self.model.value == FROM_FILE:
                self.model_file.value = Path(str(model))
        if self.annotator is None:
            self.start(model)
        elif is_predictor(model):
            self.annotator.use_predictor(model)
        elif not self.loading.running:
            self.start_button.enabled = False
            self.loading.start(model, self.device.value, returned=self._swap, errored=self._load_failed,
                               finished=self._show_model)

    def _swap(self, predictor: IOGPredictor) -> None:
        if self.annotator is None:
            self._begin(predictor)
        else:
            self.annotator.use_predictor(predictor)

    def _say_loading(self, text: str) -> None:
        self.status.value = text

    def _load_failed(self, error: Exception) -> None:
        self._report(f"the model could not be loaded: {error}")
        self.status.value = self.annotator.status if self.annotator else "no model loaded"

    def _begin(self, predictor: IOGPredictor) -> None:
        labels = None if self.labels.value in (None, NEW_LABELS) else self.labels.value
        extra = [c.value for c in (self.green, self.blue) if c.value not in (None, NO_CHANNEL)]
        try:
            annotator = Annotator(self.viewer, self.image.value, predictor, labels_layer=labels,
                                  overwrite=self.overwrite.value,
                                  channel_layers=[self.image.value, *extra] if extra else None)
        except ValueError as err:
            self._report(str(err))
            return
        if self.annotator is not None:
            self.annotator.close()
        self.annotator = annotator
        self._set_message("")
        annotator.notified.connect(self._set_message)
        annotator.stopped.connect(self._stopped)
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
        self.learning.attach(annotator)
        self._on_status(annotator.status)

    def _stopped(self, why: str) -> None:
        self.annotator = None
        self.status.value = why
        self.propagate_row.visible = False

    def _act(self, action: str) -> None:
        if self.annotator is None:
            self._report(NOT_STARTED)
            return
        self.annotator.act(action)

    def propagate(self) -> None:
        """Start propagating the last committed object, or stop the running propagation."""
        if self.annotator is None:
            self._report(NOT_STARTED)
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
            self._report(NOT_STARTED)
            return
        if not self.boxes_layer.value:
            self._report("draw rectangles around the objects in a shapes layer first (Layers > New shapes layer)")
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
        self._set_message("")        # the annotator works again: an earlier problem is history
