"""The "IOG annotator" dock widget: pick the layers, the model and the device, then click.

It is narrow on purpose (a 1280 px window keeps most of its width for the canvas): short
names in the combo boxes, the long text in tooltips and in lines that wrap.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton
from napari.layers import Image, Labels, Shapes
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QComboBox, QDockWidget, QMainWindow, QSizePolicy, QStyle, QWidget

from .. import zoo
from ..predictor import IOGPredictor
from .annotator import ROLE_COLOURS, Annotator, shortcuts_help

NEW_LABELS = "(new layer)"
NO_CHANNEL = "(none)"
FROM_FILE = "(a model file)"
#: Characters a combo box shows before it elides (the full text is in its tooltip).
COMBO_CHARS = 8
PLUGIN_WIDGET_NAME = "napari-iog dock"

HOW_TO = (
    "Click two opposite corners of a box around the object, then inside it. More clicks "
    "correct it (Shift+click: negative). Enter commits, U undoes, Esc clears."
)
NOT_STARTED = "start annotating first: choose an image and a model, then 'Start annotating'"
DEXTR_HOW_TO = "DEXTR models take the object's four extreme points instead of the box and inside click."


def present_model_choices() -> list[tuple[str, str]]:
    """(label, zoo name) of the models at hand, the bundled default first (the zoo's order)."""
    return [(r["name"], r["name"]) for r in zoo.list_weights() if r["present"]]


def describe_model(name: str) -> str:
    """One line on a zoo model: what it is and whether it is here."""
    if name not in zoo.WEIGHTS:
        return ""
    entry = zoo.WEIGHTS[name]
    if entry.bundled:
        state = "bundled"
    elif zoo.is_present(name):
        state = "downloaded"
    else:
        size = f", {entry.size / 1e6:.0f} MB" if entry.size else ""
        state = f"not downloaded{size}"
    return f"{entry.arch}; {state}"


def model_tooltip(name: str) -> str:
    """Everything known of a model choice, for its tooltip."""
    entry = zoo.WEIGHTS.get(name)
    if entry is None:
        return "a checkpoint file of your own, chosen below"
    return f"{name}: {describe_model(name)}; trained on {entry.trained_on}; {entry.licence}"


def _titled(widget) -> Container:
    """``widget`` under its label (not beside it: the dock stays narrow)."""
    title = Label(value=widget.label)
    title.tooltip = widget.tooltip
    row = Container(widgets=[title, widget], labels=False)
    row.margins = (0, 0, 0, 0)
    return row


def wrap_text(label: Label) -> None:
    """A label that wraps to the dock's width instead of widening it (selectable, to copy)."""
    native = label.native
    native.setWordWrap(True)
    native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    native.setMinimumWidth(100)


def share_dock(widget: Container) -> None:
    """Once ``widget`` is docked, put it in tabs with the plugin's other docks on the same side:
    stacked, the annotator and the fine-tune widget would not fit one window's height."""

    def tabify() -> None:
        dock = widget.native.parent()
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parent()
        window = dock.parent() if dock is not None else None
        if not isinstance(window, QMainWindow) or dock.isFloating():
            return
        for other in window.findChildren(QDockWidget):
            if (other is not dock and not other.isFloating() and other.isVisible()
                    and window.dockWidgetArea(other) == window.dockWidgetArea(dock)
                    and other.findChild(QWidget, PLUGIN_WIDGET_NAME) is not None):
                window.tabifyDockWidget(other, dock)
                dock.show()
                dock.raise_()
                return

    widget.native.setObjectName(PLUGIN_WIDGET_NAME)
    QTimer.singleShot(0, tabify)


def make_compact(combo: ComboBox, chars: int = COMBO_CHARS) -> None:
    """Size a combo box by ``chars`` characters, not by its longest entry."""
    native: QComboBox = combo.native
    native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    native.setMinimumContentsLength(chars)


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
        super().__init__(labels=False)
        self.margins = (2, 4, 2, 4)
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
                               tooltip="where committed objects are written; '(new layer)' makes one")
        self.model = ComboBox(label="model", choices=self._model_choices,
                              tooltip="a model from the zoo (napari-iog weights list), or a file of your own")
        self.model_info = Label(value="")
        self.download_button = PushButton(text="Download")
        self.download_button.tooltip = "download the chosen model into the cache (napari-iog weights list shows where)"
        self.model_file = FileEdit(label="file", mode="r", filter="*.pth *.pt *.pth.tar",
                                   tooltip="an IOG or DEXTR checkpoint: the authors' .pth files or one "
                                           "saved by napari-iog")
        self.device = ComboBox(label="device", choices=available_devices(), value="auto",
                               tooltip="auto: CUDA, then MPS, then CPU")
        self.start_button = PushButton(text="Start annotating")
        self.negative = CheckBox(text="negative clicks (N)", value=False,
                                 tooltip="correction clicks remove from the object; Shift+click does too")
        self.overwrite = CheckBox(text="overwrite labels", value=False,
                                  tooltip="off: a committed object never changes a pixel that already "
                                          "has a label")
        self.commit_button = PushButton(text="Commit")
        self.undo_button = PushButton(text="Undo")
        self.clear_button = PushButton(text="Clear")
        buttons = Container(widgets=[self.undo_button, self.clear_button], layout="horizontal", labels=False)
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
        self.green_row, self.blue_row = _titled(self.green), _titled(self.blue)
        self.model_file_row = _titled(self.model_file)
        self.extend([_titled(self.image), self.green_row, self.blue_row, _titled(self.labels), _titled(self.model),
                     self.model_info, self.download_button, self.model_file_row, _titled(self.device),
                     self.start_button, self.negative, self.overwrite, self.commit_button, buttons,
                     self.propagate_row,
                     _titled(self.boxes_layer), self.boxes_button, self.status, self.message, self.help])
        self.commit_button.tooltip = "commit the object into the labels layer (Enter)"
        self.undo_button.tooltip = "undo the last click, or the last commit (U)"
        self.clear_button.tooltip = "clear the object in progress (Esc)"
        self.start_button.tooltip = self.help.tooltip
        self._download: tuple[Any, threading.Event] | None = None
        self.model.changed.connect(self._show_model)
        self.download_button.changed.connect(lambda: self.download())
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
        self._show_model()
        share_dock(self)

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
        # The bundled default comes first, so a new user can start without choosing anything;
        # the models still to download come last, marked by an icon (see _mark_missing).
        missing = [(r["name"], r["name"]) for r in zoo.list_weights() if not r["present"]]
        return present_model_choices() + [(FROM_FILE, FROM_FILE)] + missing

    def reset_choices(self, *args) -> None:
        super().reset_choices(*args)
        self._mark_missing()
        # The channel pickers matter only for data opened as one layer per channel.
        channels = len(self._channel_choices()) > 2
        self.green_row.visible = self.blue_row.visible = channels

    def _mark_missing(self) -> None:
        """A download icon on the models not yet here; each entry's tooltip says what it is."""
        native: QComboBox = self.model.native
        icon = native.style().standardIcon(QStyle.StandardPixmap.SP_ArrowDown)
        for i in range(native.count()):
            name = native.itemData(i) if isinstance(native.itemData(i), str) else native.itemText(i)
            native.setItemData(i, model_tooltip(name), Qt.ItemDataRole.ToolTipRole)
            if name in zoo.WEIGHTS and not zoo.is_present(name):
                native.setItemIcon(i, icon)

    def _show_model(self, *_) -> None:
        name = self.model.value
        from_file = name == FROM_FILE
        missing = name in zoo.WEIGHTS and not zoo.is_present(name)
        self.model_info.value = describe_model(name) if not from_file else "choose the file below"
        self.model.native.setToolTip(model_tooltip(name))
        self.model_file_row.visible = from_file
        self.download_button.visible = missing or self._download is not None
        self.start_button.enabled = not missing and self._loading is None

    # --- downloading a zoo model ------------------------------------------------------------

    def download(self, name: str | None = None) -> None:
        """Download the chosen zoo model in a worker, with napari progress; pressing the button
        again cancels. When it is here, it is selected."""
        if self._download is not None:
            self._download[1].set()
            return
        name = name or self.model.value
        if name not in zoo.WEIGHTS:
            return
        from napari.qt.threading import create_worker
        from napari.utils import progress

        entry = zoo.WEIGHTS[name]
        cancel = threading.Event()
        bar = progress(total=entry.size or 0, desc=f"downloading {name}")
        arrived = {"done": 0, "total": entry.size, "shown": 0}

        def on_bytes(done: int, total: int | None) -> None:    # in the worker: no Qt here
            arrived["done"], arrived["total"] = done, total or arrived["total"]

        def show_progress() -> None:                           # in the GUI thread, by a timer
            if arrived["total"] and bar.total != arrived["total"]:
                bar.total = arrived["total"]
            bar.update(arrived["done"] - arrived["shown"])
            arrived["shown"] = arrived["done"]

        timer = QTimer()
        timer.timeout.connect(show_progress)
        timer.start(200)

        def fetch():
            return zoo.fetch(name, progress=on_bytes, cancel=cancel)

        worker = create_worker(fetch, _start_thread=False, _ignore_errors=True)

        def finished():
            timer.stop()
            bar.close()
            self._download = None
            self.download_button.text = "Download"
            self.reset_choices()
            self._show_model()

        def returned(path):
            self.model.value = name
            self._set_message("")
            show_info(f"{name} downloaded to {path}")

        def failed(error):
            if isinstance(error, zoo.DownloadCancelled):
                self._set_message(f"the download of {name} was cancelled; nothing was kept")
            else:
                self._report(f"the download of {name} failed: {error}")

        worker.returned.connect(returned)
        worker.errored.connect(failed)
        worker.finished.connect(finished)
        self._download = (worker, cancel)
        self.download_button.text = "Cancel download"
        self.start_button.enabled = False
        self._set_message(f"downloading {name} ...")
        worker.start()

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
        if model is None and self.model.value != FROM_FILE:
            model = self.model.value        # a zoo name; a missing file is reported by the loader
        if model is None:
            path = Path(self.model_file.value) if self.model_file.value else None
            if path is None or not path.is_file():
                self._report("choose a model: one from the zoo, or a model file (.pth)")
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
        self._report(f"the model could not be loaded: {error}")
        self.status.value = self.annotator.status if self.annotator else "no model loaded"

    def _load_finished(self) -> None:
        self._loading = None
        self._show_model()

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
