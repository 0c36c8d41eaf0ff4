"""The models a user can choose in the docks: what each is, whether it is here, and fetching
one from the zoo in the background with napari progress and cancel."""

from __future__ import annotations

import threading
from collections.abc import Callable

from qtpy.QtCore import QTimer

from .. import zoo
from .workers import BackgroundWork

FROM_FILE = "(a model file)"


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
