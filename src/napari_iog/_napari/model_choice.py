"""The models a user can choose in the docks: what each is, whether it is here, and fetching
one from the zoo in the background with napari progress and cancel."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from magicgui.widgets import ComboBox, PushButton
from napari.utils.notifications import show_info
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QComboBox, QStyle

from .. import zoo
from .workers import BackgroundWork

FROM_FILE = "(a model file)"
FROM_SERVER = "(a server)"


def is_server(model) -> bool:
    """A ``napari-iog serve`` address (``http://host:port``)."""
    return isinstance(model, str) and model.startswith(("http://", "https://"))


def present_model_choices() -> list[tuple[str, str]]:
    """(label, value) of the models at hand: the zoo's present ones by name, the bundled default
    first, then the models fine-tuned into the cache (newest first) by path."""
    zoo_models = [(r["name"], r["name"]) for r in zoo.list_weights() if r["present"]]
    return zoo_models + [(f"{path.stem} (fine-tuned)", str(path)) for path in zoo.list_finetuned()]


def annotator_model_choices(_=None) -> list[tuple[str, str]]:
    """The annotator's list: the models at hand, a file of one's own, then the zoo models still
    to download (marked by an icon: :func:`mark_missing`)."""
    missing = [(r["name"], r["name"]) for r in zoo.list_weights() if not r["present"]]
    return present_model_choices() + [(FROM_FILE, FROM_FILE), (FROM_SERVER, FROM_SERVER)] + missing


def mark_missing(combo: ComboBox) -> None:
    """A download icon on the models not yet here; each entry's tooltip says what it is."""
    native: QComboBox = combo.native
    icon = native.style().standardIcon(QStyle.StandardPixmap.SP_ArrowDown)
    for i in range(native.count()):
        name = native.itemData(i) if isinstance(native.itemData(i), str) else native.itemText(i)
        native.setItemData(i, model_tooltip(name), Qt.ItemDataRole.ToolTipRole)
        if name in zoo.WEIGHTS and not zoo.is_present(name):
            native.setItemIcon(i, icon)


def is_finetuned(value: str) -> bool:
    return value not in zoo.WEIGHTS and value != FROM_FILE and Path(value).parent == zoo.finetuned_dir()


def describe_model(name: str) -> str:
    """One line on a zoo model: what it is and whether it is here."""
    if name not in zoo.WEIGHTS:
        return "fine-tuned here (napari-iog weights list)" if name and is_finetuned(name) else ""
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
    if name == FROM_SERVER:
        return "the model of a napari-iog serve server (a GPU machine of your lab), at the address below"
    if entry is None and name not in (None, FROM_FILE):
        return f"a model fine-tuned with napari-iog: {name}"
    if entry is None:
        return "a checkpoint file of your own, chosen below"
    return f"{name}: {describe_model(name)}; trained on {entry.trained_on}; {entry.licence}"


class ModelDownload:
    """One zoo model fetched in a worker into the cache, with a napari progress bar; cancel()
    stops it and keeps nothing. ``returned(name, path)``, ``failed(name, error)`` and
    ``finished()`` are called in the GUI thread."""

    def __init__(self, returned: Callable, failed: Callable, finished: Callable):
        self.returned, self.failed, self.finished = returned, failed, finished
        self.work = BackgroundWork("the download")
        self._cancel = threading.Event()

    @property
    def running(self) -> bool:
        return self.work.running

    def cancel(self) -> None:
        self._cancel.set()

    def start(self, name: str) -> None:
        from napari.utils import progress

        entry = zoo.WEIGHTS[name]
        self._cancel = cancel = threading.Event()
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

        def finished():
            timer.stop()
            bar.close()
            self.finished()

        self.work.start(zoo.fetch, name, progress=on_bytes, cancel=cancel, finished=finished,
                        returned=lambda path: self.returned(name, path),
                        errored=lambda error: self.failed(name, error))


class DownloadControl:
    """A dock's Download button for the chosen zoo model: pressed, it fetches the model in a
    worker (napari progress); pressed again, it cancels. ``done(name)`` when the model is here,
    ``say(text)`` for a line in the dock, ``report(text)`` for a problem, ``finished()`` at the end."""

    def __init__(self, done: Callable[[str], None], say: Callable[[str], None], report: Callable[[str], None],
                 finished: Callable[[], None]):
        self.done, self.say, self.report, self.finished = done, say, report, finished
        self.button = PushButton(text="Download")
        self.button.tooltip = "download the chosen model into the cache (napari-iog weights list shows where)"
        self.downloading = ModelDownload(self._downloaded, self._failed, self._finished)

    @property
    def running(self) -> bool:
        return self.downloading.running

    def press(self, name: str) -> bool:
        """Start downloading ``name`` (or cancel the running download); True if one started."""
        if self.downloading.running:
            self.downloading.cancel()
            return False
        if name not in zoo.WEIGHTS:
            return False
        self.downloading.start(name)
        self.button.text = "Cancel download"
        self.say(f"downloading {name} ...")
        return True

    def _downloaded(self, name: str, path) -> None:
        self.done(name)
        self.say("")
        show_info(f"{name} downloaded to {path}")

    def _failed(self, name: str, error: Exception) -> None:
        if isinstance(error, zoo.DownloadCancelled):
            self.say(f"the download of {name} was cancelled; nothing was kept")
        else:
            self.report(f"the download of {name} failed: {error}")

    def _finished(self) -> None:
        self.button.text = "Download"
        self.finished()


#: What a long first load is doing (shown after a few seconds of it).
FIRST_START_HINT = ("a model's first start on this computer checks it and may prepare it for ONNX Runtime "
                    "(up to a minute); later starts take seconds")


class ModelLoading:
    """A model loaded in a worker: a busy napari progress bar meanwhile, and the seconds so far
    in the dock through ``say``, so a long first start is seen to be working."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.work = BackgroundWork("loading the model")

    @property
    def running(self) -> bool:
        return self.work.running

    def start(self, model, device: str, returned: Callable, errored: Callable, finished: Callable) -> None:
        from napari.utils import progress

        from ..predictor import IOGPredictor
        from ..remote import RemotePredictor

        name = str(model) if is_server(model) else Path(str(model)).name
        bar = progress(total=0, desc=f"napari-iog: loading {name}")
        began = time.monotonic()

        def tick() -> None:
            seconds = time.monotonic() - began
            self.say(f"loading {name} ... {seconds:.0f} s" + (f" ({FIRST_START_HINT})" if seconds >= 3 else ""))

        timer = QTimer()
        timer.timeout.connect(tick)
        timer.start(500)
        tick()

        def after_ticks(callback: Callable) -> Callable:
            # the worker ends a moment after its result: a tick in between would write "loading"
            # over the status the model's arrival had just set (seen on a busy machine)
            def stop_then(value) -> None:
                timer.stop()
                callback(value)
            return stop_then

        def ended() -> None:
            timer.stop()
            bar.close()
            finished()

        handlers = {"returned": after_ticks(returned), "errored": after_ticks(errored), "finished": ended}
        if is_server(model):
            self.work.start(RemotePredictor, model, **handlers)
        else:
            self.work.start(IOGPredictor, model, device=device, **handlers)
