"""Background work in napari's worker threads, and the one loop that waits for it.

Every long job of the GUI (a prediction, segmenting drawn boxes, a propagation, loading a
model, a download) runs through a :class:`BackgroundWork`: one job at a time per instance,
its callbacks delivered in the GUI thread, errors passed to ``errored`` instead of raised.
Without a Qt application (a script on a ``ViewerModel``) there are no workers: callers run
their work in place.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

QT_BINDINGS = ("PyQt6", "PySide6", "PyQt5", "PySide2")


def qt_app_running() -> bool:
    """Is a Qt application running? Without importing Qt: a script on a ``ViewerModel`` stays
    free of it (no application can run in a binding nobody imported)."""
    for binding in QT_BINDINGS:
        widgets = sys.modules.get(f"{binding}.QtWidgets")
        if widgets is not None and widgets.QApplication.instance() is not None:
            return True
    return False


def wait_until(done: Callable[[], bool], timeout: float, what: str) -> None:
    """Block, processing Qt events (so that workers can deliver), until ``done()``."""
    if done():
        return
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            raise TimeoutError(f"{what} did not finish within {timeout} s")
        QApplication.processEvents()
        time.sleep(0.005)


class BackgroundWork:
    """At most one job in a napari worker thread; :attr:`running` until its ``finished``."""

    def __init__(self, what: str = "the work"):
        self.what = what
        self.worker = None

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, function: Callable, *args, yielded: Callable | None = None, returned: Callable | None = None,
              errored: Callable[[Exception], Any] | None = None, finished: Callable[[], Any] | None = None,
              **kwargs) -> None:
        """Run ``function(*args, **kwargs)`` (a generator: each value goes to ``yielded``) in a
        worker thread. ``finished`` runs last, after :attr:`running` is False again."""
        if self.worker is not None:
            raise RuntimeError(f"{self.what} is already running")
        from napari.qt.threading import create_worker

        worker = create_worker(function, *args, _start_thread=False, _ignore_errors=True, **kwargs)
        for signal, slot in (("yielded", yielded), ("returned", returned), ("errored", errored)):
            if slot is not None:
                getattr(worker, signal).connect(slot)

        def ended() -> None:
            self.worker = None
            if finished is not None:
                finished()

        worker.finished.connect(ended)
        self.worker = worker
        worker.start()

    def wait(self, timeout: float = 120.0) -> None:
        wait_until(lambda: self.worker is None, timeout, self.what)
