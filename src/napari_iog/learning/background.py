"""The annotator's learner, in its own process: the lowest CPU priority (``nice`` 19) and one
torch thread, so that clicks, which the annotator's process predicts, keep the CPU first.

The process is a fresh interpreter (``python -m napari_iog.learning.background``), not a
multiprocessing child: those re-run the user's ``__main__`` script, and a script that drives a
viewer without an ``if __name__ == "__main__"`` guard would start a second viewer. It talks to
the annotator over a local authenticated connection (``multiprocessing.connection``): it listens
on a free port of 127.0.0.1, says which on its standard output, and the annotator connects.

Each committed object sent gives the learner ``seconds_per_object`` of training; with no time
left it waits for the next object. After each stretch of training it checks the candidate
(:meth:`Learner.check`) and sends a report, with the weights when the model in use changed.
The parent polls (:meth:`BackgroundLearner.poll`); nothing here touches labels.
"""

from __future__ import annotations

import copy
import os
import pickle
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from multiprocessing.connection import Client, Listener
from typing import Any

from torch import nn

from .learner import LearnReport, LearnSettings
from .pool import LearnedObject

#: longest stretch of training between two checks (and two looks at the inbox)
STRETCH_SECONDS = 5.0
#: how long the learner process may take to start and connect
START_TIMEOUT = 120.0


@dataclass
class LearnedWeights:
    """A better model for the annotator: the in-use weights after ``report``'s swap."""

    version: int
    state: dict[str, Any]
    report: LearnReport


class BackgroundLearner:
    """A :class:`~napari_iog.learning.learner.Learner` in its own process (see the module).
    Nothing here blocks: messages wait in a queue until the process has started. ``device``:
    where it trains (the annotator's CPU; a server's GPU for ``napari-iog serve --learn``)."""

    def __init__(self, model: nn.Module, settings: LearnSettings | None = None, threads: int = 1,
                 priority: int = 19, device: str = "cpu"):
        self.settings = settings or LearnSettings()
        self.report: LearnReport | None = None
        self.error: str | None = None
        self._inbox: queue.Queue = queue.Queue()       # to the process
        self._outbox: queue.Queue = queue.Queue()      # from it
        self._closing = threading.Event()
        self._key = secrets.token_bytes(32)
        self._process = subprocess.Popen([sys.executable, "-m", "napari_iog.learning.background"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._process.stdin.write(self._key.hex().encode() + b"\n")
        self._process.stdin.close()
        self._inbox.put(("init", (copy.deepcopy(model).cpu(), self.settings, threads, priority, str(device))))
        self._link = threading.Thread(target=self._relay, name="napari-iog learner link", daemon=True)
        self._link.start()

    def add(self, obj: LearnedObject) -> None:
        self._inbox.put(("add", obj))

    def remove(self, key: Hashable) -> None:
        self._inbox.put(("remove", key))

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def poll(self, timeout: float = 0.0) -> LearnedWeights | None:
        """What the learner said since the last poll: the newest better model, if any
        (:attr:`report` keeps the newest report). ``timeout``: wait that long for a first message.
        Raises RuntimeError when the learner has stopped on an error."""
        newest = None
        block = timeout > 0
        while True:
            try:
                kind, payload = self._outbox.get(block, timeout) if block else self._outbox.get_nowait()
            except queue.Empty:
                return newest
            block = False
            if kind == "error":
                self.error = payload
                raise RuntimeError(f"the learner stopped: {payload}")
            self.report = payload.report if kind == "weights" else payload
            if kind == "weights":
                newest = payload

    def close(self, timeout: float = 10.0) -> None:
        self._closing.set()
        self._inbox.put(("stop", None))
        self._link.join(timeout)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout)
        self._process.stdout.close()

    def _relay(self) -> None:
        """The link's thread: connect to the process, then pass messages both ways."""
        connection = None
        try:
            port = self._process.stdout.readline().strip()
            if not port:
                raise EOFError("it ended before it started")
            connection = Client(("127.0.0.1", int(port)), authkey=self._key)
            while True:
                try:
                    message = self._inbox.get(timeout=0.05)
                except queue.Empty:
                    message = None
                if message is not None:
                    _send(connection, message)
                    if message[0] == "stop":
                        return
                while connection.poll():
                    self._outbox.put(_receive(connection))
                if not self.alive and not connection.poll():
                    if not self._closing.is_set():
                        self._outbox.put(("error", f"the learner process ended (exit code {self._process.poll()})"))
                    return
        except (OSError, EOFError) as error:
            if not self._closing.is_set():
                self._outbox.put(("error", f"lost the learner process ({type(error).__name__}: {error})"))
        finally:
            if connection is not None:
                connection.close()


def _send(connection, message) -> None:
    # plain pickle: multiprocessing's pickler would hand torch tensors over as shared memory,
    # which only a multiprocessing child of this process may open
    connection.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _receive(connection):
    return pickle.loads(connection.recv_bytes())


def _serve(connection) -> None:
    import torch

    from .learner import Learner

    kind, (model, settings, threads, priority, device) = _receive(connection)
    try:
        os.nice(priority)
    except (OSError, AttributeError):      # AttributeError: Windows has no nice
        pass
    torch.set_num_threads(max(1, threads))
    learner = Learner(model, settings, device=device)
    credit = 0.0
    while True:
        waiting = credit <= 0 or not learner.can_train()
        if connection.poll(1.0 if waiting else 0):
            kind, payload = _receive(connection)
            if kind == "stop":
                return
            if kind == "add":
                learner.add(payload)
                credit += settings.seconds_per_object
            elif kind == "remove":
                learner.remove(payload)
            if not learner.can_train():
                _send(connection, ("report", learner.check()))
            continue            # take every waiting message before training
        if waiting:
            continue
        started = time.perf_counter()
        learner.train(seconds=min(credit, STRETCH_SECONDS), should_stop=connection.poll)
        credit -= time.perf_counter() - started
        report = learner.check()
        if report.swapped:
            _send(connection, ("weights", LearnedWeights(report.version, learner.in_use_state(), report)))
        else:
            _send(connection, ("report", report))


def main() -> int:
    key = bytes.fromhex(sys.stdin.readline().strip())
    with Listener(("127.0.0.1", 0), authkey=key) as listener:
        # an annotator that never connects (it died first) leaves no learner behind
        watchdog = threading.Timer(START_TIMEOUT, os._exit, args=(0,))
        watchdog.daemon = True
        watchdog.start()
        print(listener.address[1], flush=True)
        connection = listener.accept()
        watchdog.cancel()
    try:
        _serve(connection)
    except (EOFError, OSError):
        return 0                # the annotator went away
    except Exception as error:  # noqa: BLE001  (the annotator shows it and goes on without learning)
        _send(connection, ("error", f"{type(error).__name__}: {error}"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
