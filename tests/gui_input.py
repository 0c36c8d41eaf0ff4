"""Real mouse and key events on a napari viewer's canvas, as a person makes them.

Events go through Qt to the canvas widget, then through vispy and napari's own dispatch, so
whatever napari does with them (its keymaps, its mouse callbacks) happens as in use.
"""

import numpy as np
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

KEYS = {"Enter": Qt.Key.Key_Return, "Escape": Qt.Key.Key_Escape, "Space": Qt.Key.Key_Space,
        "U": Qt.Key.Key_U, "N": Qt.Key.Key_N, "4": Qt.Key.Key_4, "2": Qt.Key.Key_2}
MODIFIERS = {"Shift": Qt.KeyboardModifier.ShiftModifier, "Control": Qt.KeyboardModifier.ControlModifier}


def canvas_widget(viewer):
    return viewer.window._qt_viewer.canvas.native


def _modifiers(names):
    flags = Qt.KeyboardModifier.NoModifier
    for name in names:
        flags |= MODIFIERS[name]
    return flags


def press_key(viewer, key, modifiers=()):
    """Press and release ``key`` (a name of KEYS) on the canvas."""
    QTest.keyClick(canvas_widget(viewer), KEYS[key], _modifiers(modifiers))
    QApplication.processEvents()


def hold_key(viewer, key):
    QTest.keyPress(canvas_widget(viewer), KEYS[key])
    QApplication.processEvents()


def release_key(viewer, key):
    QTest.keyRelease(canvas_widget(viewer), KEYS[key])
    QApplication.processEvents()


def canvas_position(viewer, world_point) -> QPoint:
    """The canvas pixel that shows ``world_point`` (2D view)."""
    canvas = viewer.window._qt_viewer.canvas
    view = canvas.view
    transform = view.transform * view.scene.transform
    displayed = list(viewer.dims.displayed)
    scene_xy = [float(world_point[d]) for d in displayed][::-1]       # vispy is (x, y)
    x, y = transform.map(scene_xy)[:2]
    return QPoint(int(round(x)), int(round(y)))


def mouse_click(viewer, world_point, modifiers=()):
    """A left click on the canvas at ``world_point``: press and release, through Qt."""
    widget = canvas_widget(viewer)
    QTest.mouseClick(widget, Qt.MouseButton.LeftButton, _modifiers(modifiers), canvas_position(viewer, world_point))
    QApplication.processEvents()


def show_all(viewer, size=(1280, 800)):
    """Show the window at ``size`` and fit the image in view, so every pixel can be clicked."""
    window = viewer.window._qt_window
    window.resize(*size)
    window.show()
    QApplication.processEvents()
    viewer.reset_view()
    QApplication.processEvents()


def world_of(layer, data_point):
    return tuple(layer.data_to_world(np.asarray(data_point, dtype=float)))


def type_into(widget, text, then=None):
    """Type ``text`` into a dock's field as a person does (focus, keys), then press ``then``
    (a name of KEYS, e.g. "Enter"); the keys go through Qt's dispatch to the field's parents."""
    widget.setFocus()
    QTest.keyClicks(widget, text)
    if then is not None:
        QTest.keyClick(widget, KEYS[then])
    QApplication.processEvents()
