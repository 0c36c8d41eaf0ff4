"""The fine-tune dock's plot: training loss (log scale) and held-out mIoU@3 against steps."""

from __future__ import annotations

import numpy as np
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossPlot(QWidget):
    """The training loss (blue, log scale) and the held-out mIoU@3 (orange dots, 0..1)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.losses: list[tuple[int, float]] = []
        self.mious: list[tuple[int, float]] = []
        self.total = 1
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def clear(self, total: int = 1) -> None:
        self.losses, self.mious, self.total = [], [], max(1, total)
        self.update()

    def add_loss(self, step: int, loss: float) -> None:
        self.losses.append((step, loss))
        self.update()

    def add_miou(self, step: int, miou: float) -> None:
        self.mious.append((step, miou))
        self.update()

    def axis_values(self) -> dict[str, str]:
        """The values written on the axes: steps (x), loss range (left), mIoU 0..1 (right)."""
        values = {"steps": f"{self.total} steps", "miou_top": "1.0", "miou_bottom": "0.0"}
        if self.losses:
            losses = [v for _, v in self.losses]
            values["loss_top"], values["loss_bottom"] = f"{max(losses):.3g}", f"{min(losses):.3g}"
        return values

    def paintEvent(self, event):  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        left, right, top, bottom = 44, 30, 16, 22       # room for the axis values
        pw, ph = w - left - right, h - top - bottom
        painter.fillRect(0, 0, w, h, QColor(38, 41, 48))
        painter.setPen(QPen(QColor(140, 140, 140)))
        painter.drawRect(left, top, pw, ph)
        values = self.axis_values()
        painter.drawText(left, h - 6, "0")
        painter.drawText(left + pw - 40, h - 6, values["steps"])
        painter.setPen(QPen(QColor(90, 170, 255)))
        painter.drawText(2, 11, "loss (log)")
        painter.setPen(QPen(QColor(255, 160, 40)))
        painter.drawText(w - right - 80, 11, "held-out mIoU@3")
        painter.drawText(w - right + 3, top + 8, values["miou_top"])
        painter.drawText(w - right + 3, top + ph, values["miou_bottom"])
        x_of = lambda step: left + pw * step / self.total
        if len(self.losses) > 1:
            logs = np.log10([max(v, 1e-6) for _, v in self.losses])
            low, high = float(logs.min()), float(logs.max())
            span = max(high - low, 1e-6)
            painter.setPen(QPen(QColor(90, 170, 255)))
            painter.drawText(2, top + 8, values["loss_top"])
            painter.drawText(2, top + ph, values["loss_bottom"])
            painter.setPen(QPen(QColor(90, 170, 255), 1.5))
            points = [(x_of(s), top + ph * (high - v) / span) for (s, _), v in zip(self.losses, logs)]
            for (x0, y0), (x1, y1) in zip(points, points[1:]):
                painter.drawLine(int(x0), int(y0), int(x1), int(y1))
        painter.setPen(QPen(QColor(255, 160, 40), 1))
        painter.setBrush(QColor(255, 160, 40))
        for step, miou in self.mious:
            y = top + ph * (1.0 - miou)
            painter.drawEllipse(int(x_of(step)) - 3, int(y) - 3, 6, 6)
        painter.end()
