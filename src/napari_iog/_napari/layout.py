"""The docks' layout: narrow on purpose (a 1280 px window keeps most of its width for the
canvas), with labels above fields, combo boxes sized by a few characters, wrapped text, and
the plugin's docks sharing one side as tabs."""

from __future__ import annotations

import torch
from magicgui.widgets import ComboBox, Container, Label
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QComboBox, QDockWidget, QMainWindow, QSizePolicy, QWidget

#: Characters a combo box shows before it elides (the full text is in its tooltip).
COMBO_CHARS = 8
PLUGIN_WIDGET_NAME = "napari-iog dock"


def titled(widget) -> Container:
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
