"""A training run in a separate process (``python -m napari_iog train --progress json``) driven
by QProcess: the GUI stays responsive, a crash cannot take napari down, and the GPU memory is
released when the process ends. Its JSON lines become typed training events."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from qtpy.QtCore import QProcess, QProcessEnvironment, QTimer

from ..training import events

#: How long a cancelled run may take to save its checkpoint before it is killed (ms).
CANCEL_GRACE_MS = 60_000
STDERR_LINES = 40


class TrainingProcess:
    """``on_event(event)`` for each event the run prints, ``on_finished(exit_code)`` at the end;
    :attr:`stderr` keeps the last lines the run wrote that were not events."""

    def __init__(self, argv: Sequence[str], on_event: Callable[[events.TrainingEvent], None],
                 on_finished: Callable[[int], None]):
        self.on_event, self.on_finished = on_event, on_finished
        self.stderr: list[str] = []
        self._buffer = ""
        process = QProcess()
        environment = QProcessEnvironment.systemEnvironment()
        environment.insert("PYTHONUNBUFFERED", "1")
        process.setProcessEnvironment(environment)
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._finished)
        self.process = process
        process.start(sys.executable, ["-m", "napari_iog", "train", "--progress", "json", *argv])

    @property
    def running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def cancel(self) -> None:
        """SIGTERM: the trainer saves its model at the current step, then exits; killed if it
        has not within the grace time."""
        self.process.terminate()
        process = self.process
        QTimer.singleShot(CANCEL_GRACE_MS, lambda: process.state() != QProcess.ProcessState.NotRunning
                          and process.kill())

    def wait(self, timeout_ms: int) -> None:
        self.process.waitForFinished(timeout_ms)

    def _read_stdout(self) -> None:
        self._buffer += bytes(self.process.readAllStandardOutput()).decode(errors="replace")
        *lines, self._buffer = self._buffer.split("\n")
        for line in filter(None, (line.strip() for line in lines)):
            try:
                event = events.from_json(line)
            except ValueError:     # not an event (json.JSONDecodeError is one too)
                self.stderr.append(line)
            else:
                self.on_event(event)

    def _read_stderr(self) -> None:
        text = bytes(self.process.readAllStandardError()).decode(errors="replace")
        self.stderr = (self.stderr + text.splitlines())[-STDERR_LINES:]

    def _finished(self, exit_code: int, exit_status=None) -> None:
        self._read_stdout()
        self.on_finished(exit_code)
