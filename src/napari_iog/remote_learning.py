"""The annotator's learner when its model is a learning server's (``napari-iog serve --learn``):
committed objects go to the server, whose one model improves from every annotator of a project.

:class:`RemoteLearner` has :class:`~napari_iog.learning.background.BackgroundLearner`'s interface,
so the annotator's learning drives it the same way; the HTTP calls run in a thread of their own,
never the GUI's. No weights come back: the server swaps its model itself (between an object's
first clicks, see :mod:`napari_iog.serve.learning`), and this learner brings its reports.
Objects that cannot reach the server wait here (the newest ``MAX_WAITING``) and go when it is
back; one the server refuses (a 4xx with its reason) is dropped and the reason kept in ``error``.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Hashable

from .learning.learner import LearnReport
from .learning.pool import LearnedObject
from .remote import RemoteError, RemotePredictor

#: objects kept while the server cannot be reached
MAX_WAITING = 200
#: how often the learner asks the server where learning stands (s)
STATUS_SECONDS = 5.0


class ServerReport(LearnReport):
    """A learning server's report, as the annotator shows it."""

    waiting: int = 0                # objects not yet sent: the server could not be reached
    refused: str | None = None      # why the server refused the last object it refused

    def text(self) -> str:
        said = super().text().replace("your newest", "the project's newest").replace("your objects",
                                                                                      "the project's objects")
        late = f" ({self.waiting} object(s) wait for the server)" if self.waiting else ""
        refused = f"; it refused an object: {self.refused}" if self.refused else ""
        return f"on the server: {said}{late}{refused}"


class RemoteLearner:
    """Sends committed objects to ``remote``'s server (see the module). Keys on the server are
    this learner's ``client`` id and the object's key, so annotators' label ids never clash."""

    def __init__(self, remote: RemotePredictor, client: str | None = None, status_seconds: float = STATUS_SECONDS):
        self.remote, self.client = remote, client or uuid.uuid4().hex[:12]
        self.report: ServerReport | None = None
        self.error: str | None = None           # the last reason the server was not reached
        self.refused: str | None = None         # the last reason it refused an object
        self._status_seconds = status_seconds
        self._inbox: queue.Queue = queue.Queue()
        self._waiting: OrderedDict[Hashable, LearnedObject] = OrderedDict()
        self._sent: set[Hashable] = set()
        self._to_forget: set[Hashable] = set()     # undone while the server could not be reached
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True, name="napari-iog remote learner")
        self._thread.start()

    def add(self, obj: LearnedObject) -> None:
        self._inbox.put(("add", obj))

    def remove(self, key: Hashable) -> None:
        self._inbox.put(("forget", key))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def poll(self, timeout: float = 0.0) -> None:
        """Nothing comes back but :attr:`report` (the server swaps its own model)."""
        return None

    def save(self) -> str:
        """The server saves its learned model; the path on the server."""
        return self.remote.save_learned()

    def close(self, timeout: float = 1.0) -> None:
        """Stop sending (on the GUI thread: a call in flight is not waited for long; the thread
        is a daemon and holds nothing to clean up)."""
        self._closing.set()
        self._inbox.put(("stop", None))
        self._thread.join(timeout)

    def server_key(self, key: Hashable) -> str:
        return f"{self.client}:{key}"

    def _work(self) -> None:
        asked = 0.0
        while not self._closing.is_set():
            try:
                kind, payload = self._inbox.get(timeout=self._status_seconds)
            except queue.Empty:
                kind, payload = "status", None
            if kind == "stop":
                return
            if kind == "add":
                self._waiting.pop(payload.key, None)
                self._waiting[payload.key] = payload
                while len(self._waiting) > MAX_WAITING:
                    self._waiting.popitem(last=False)
            elif kind == "forget" and self._waiting.pop(payload, None) is None and payload in self._sent:
                self._sent.discard(payload)
                self._to_forget.add(payload)
            self._send_waiting()
            if self._inbox.empty() or time.monotonic() - asked > self._status_seconds:
                asked = time.monotonic()
                self._call(self._ask_status)

    def _send_waiting(self) -> None:
        for key in list(self._to_forget):
            if not self._call(self.remote.forget, self.server_key(key)):
                return
            self._to_forget.discard(key)
        while self._waiting:
            key, obj = next(iter(self._waiting.items()))
            if not self._call(self.remote.learn, obj, self.server_key(key)):
                return
            self._waiting.pop(key, None)
            self._sent.add(key)

    def _ask_status(self) -> None:
        status = self.remote.learning_status()
        fields = {k: v for k, v in (status.get("report") or {}).items() if k in LearnReport.__dataclass_fields__}
        if not fields:
            fields = dict(objects=status.get("objects", 0), learned_from=0, held_out=0, base_miou=None,
                          in_use_miou=None, candidate_miou=None, swapped=False, steps=0, version=0)
        report = ServerReport(**fields)
        report.waiting, report.refused = len(self._waiting), self.refused
        self.report = report

    def _call(self, call, *args) -> bool:
        """True when the call went through or the server refused it for good (a 4xx other than a
        refused token: sending it again would not help)."""
        try:
            call(*args)
        except RemoteError as error:
            if error.status is not None and 400 <= error.status < 500 and error.status != 401:
                self.refused = str(error)
                return True
            self.error = str(error)
            if self.report is not None:
                self.report.waiting = len(self._waiting)
            return False
        self.error = None
        return True
