"""The docks' layout: narrow on purpose (a 1280 px window keeps most of its width for the
canvas), with labels above fields, combo boxes sized by a few characters, wrapped text, and
the plugin's docks sharing one side as tabs."""

from __future__ import annotations

import torch
from magicgui.widgets import ComboBox, Container, Label
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QComboBox,
    QDockWidget,
    QFrame,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPlainTextEdit,
    QScrollArea,
    QSizePolicy,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

#: Characters a combo box shows before it cuts a name off (the whole name is in its tooltip):
#: "napari-iog-default" whole, and the dock still narrow enough for a 1280 px window.
COMBO_CHARS = 15
PLUGIN_WIDGET_NAME = "napari-iog dock"
SCROLL_AREA_NAME = "napari-iog dock scroll"


def titled(widget) -> Container:
    """``widget`` under its label (not beside it: the dock stays narrow)."""
    title = Label(value=widget.label)
    title.tooltip = widget.tooltip
    row = Container(widgets=[title, widget], labels=False)
    row.margins = (0, 0, 0, 0)
    return row


class TallEnough(QObject):
    """Keeps a wrapped label's minimum height at what its text needs at its width: Qt lays a
    dock out from its widgets' minimum heights when space is short, and a wrapped label's is
    one line, so a status of three lines was squeezed into one. A new text is painted, and
    (QLabel has no signal for it) that is when its height is checked."""

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() in (QEvent.Type.Resize, QEvent.Type.Paint):
            changed = fit_height(watched)
            if changed or event.type() == QEvent.Type.Resize:    # a new width may need new heights above
                QTimer.singleShot(0, lambda: relayout(watched))
        return False


def fit_height(native) -> bool:
    """Set the label's minimum height to what its text needs; True if it changed."""
    needed = native.heightForWidth(max(native.width(), native.minimumWidth()))
    if needed > 0 and needed != native.minimumHeight():
        native.setMinimumHeight(needed)
        return True
    return False


def relayout(native) -> None:
    """Lay out the rows above ``native`` again, up to the dock's scroll area (out of the paint
    event that found the new height: the siblings below then move down)."""
    chain, parent = [], native
    while parent is not None and not isinstance(parent, QScrollArea):
        chain.append(parent)
        parent = parent.parentWidget()
    for widget in chain:            # forget every cached size first, then lay out from the inside
        widget.updateGeometry()
    for widget in chain:
        if widget.layout() is not None:
            widget.layout().invalidate()
            widget.layout().activate()


def wrap_text(label: Label) -> None:
    """A label that wraps to the dock's width instead of widening it (selectable, to copy), as
    tall as its text needs."""
    native = label.native
    native.setWordWrap(True)
    native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    policy.setHeightForWidth(False)     # its height is set by TallEnough: the rows' caches kept stale ones
    native.setSizePolicy(policy)
    native.setMinimumWidth(100)
    native.installEventFilter(TallEnough(native))


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
    keep_keys_in_dock(widget)
    scroll_when_tall(widget)
    QTimer.singleShot(0, tabify)


def wrapped_label_of(row: QWidget) -> QLabel | None:
    """The word-wrapped label in magicgui's row around it, taken out of the row: laid out in the
    dock's body directly, its height follows its text (inside the row, Qt kept a stale height)."""
    layout = row.layout()
    labels = [layout.itemAt(i).widget() for i in range(layout.count())] if layout is not None else []
    wrapped = [w for w in labels if isinstance(w, QLabel) and w.wordWrap()]
    if len(wrapped) != 1:
        return None
    layout.removeWidget(wrapped[0])
    row.hide()
    wrapped[0].setParent(None)
    return wrapped[0]


class DockScroll(QScrollArea):
    """As wide as what it holds asks now (QScrollArea keeps the first answer, given before the
    controls were styled and wider than they are), so the dock stays narrow."""

    def sizeHint(self):  # noqa: N802 (Qt's name)
        hint = super().sizeHint()
        if self.widget() is not None:
            hint.setWidth(self.widget().sizeHint().width() + self.verticalScrollBar().sizeHint().width())
        return hint


def scroll_when_tall(widget: Container) -> QScrollArea:
    """Put what ``widget`` shows in a scroll area that fills the dock: a long error or status
    then makes the dock scroll instead of cutting off its last lines. (napari docks a magicgui
    container's inner widget, so magicgui's own ``scrollable`` would not be docked.) Call it
    once every control is in place."""
    outer = widget.native
    layout = outer.layout()
    body = QWidget()
    body_layout = QVBoxLayout(body)
    body_layout.setContentsMargins(layout.contentsMargins())
    body_layout.setSpacing(layout.spacing())
    while layout.count():
        item = layout.takeAt(0)
        if item.widget() is not None:
            body_layout.addWidget(wrapped_label_of(item.widget()) or item.widget())
        else:
            body_layout.addItem(item)
    body_layout.addStretch(1)
    scroll = DockScroll()
    scroll.setObjectName(SCROLL_AREA_NAME)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(body)

    def fit_width() -> None:     # once shown: before, the unstyled controls ask for more width
        scroll.setMinimumWidth(body.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width())

    QTimer.singleShot(0, fit_width)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(scroll)
    return scroll


#: Fields that take typed keys: every key pressed in one stops at the dock.
TEXT_ENTRY = (QLineEdit, QAbstractSpinBox, QTextEdit, QPlainTextEdit, QComboBox)
#: Keys that work a focused button or check box: they stop at the dock too; others pass.
ACTIVATION_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space)


class KeysStayInDock(QObject):
    """Stops the keys meant for a dock's fields and buttons at the dock.

    A text field takes the letters but leaves Return, Enter and Escape unhandled, and a button
    leaves Return; Qt then passes the key to the parents, up to napari's main window, which
    hands every key it gets to the canvas, where the annotator's keys are bound: Return in
    "learning rate" committed the object in progress. Each field and button of the dock lets
    the key do what it does there, then keeps it. Other keys pressed on a button (U, N, Esc
    after clicking "Commit") still reach napari, as they do from any dock."""

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() not in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            return False
        if not isinstance(watched, TEXT_ENTRY) and event.key() not in ACTIVATION_KEYS:
            return False
        watched.event(event)        # the field or button handles it as it would ...
        event.accept()              # ... and it goes no further
        return True


def keep_keys_in_dock(widget: Container) -> None:
    """Install :class:`KeysStayInDock` on every field and button of ``widget``."""
    keys = KeysStayInDock(widget.native)
    for child in widget.native.findChildren(QWidget):
        if isinstance(child, (*TEXT_ENTRY, QAbstractButton)):
            child.installEventFilter(keys)


def make_compact(combo: ComboBox, chars: int = COMBO_CHARS) -> None:
    """Size a combo box by ``chars`` characters, not by its longest entry."""
    native: QComboBox = combo.native
    native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    native.setMinimumContentsLength(chars)
    about = combo.tooltip or ""

    def show_whole_name(*_) -> None:
        text = native.currentText()
        native.setToolTip(f"{about}\n(chosen: {text})" if about and text else about or text)

    native.currentTextChanged.connect(show_whole_name)
    show_whole_name()


def available_devices() -> list[str]:
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices
