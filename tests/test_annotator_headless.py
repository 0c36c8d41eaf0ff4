"""The annotator without Qt: a script drives it on a ``ViewerModel`` (no window, no Qt binding
imported), through the clicks layer's own events, as napari's GUI would."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from napari.components import ViewerModel

    sys.path.insert(0, "tests")
    from conftest import ThresholdPredictor
    from napari_iog import Annotator

    viewer = ViewerModel()
    image = np.zeros((60, 80), np.uint8)
    image[10:30, 20:50] = 200
    layer = viewer.add_image(image, scale=(2, 2))
    ann = Annotator(viewer, layer, ThresholdPredictor())
    assert not ann.asynchronous
    for point in ((5, 15), (35, 55), (20, 35)):                 # corners, then inside
        ann.clicks_layer.add(np.asarray(point, float))          # the layer lies over the image: its pixels
    assert ann.session.ready and ann.session.current is not None
    shown = ann.preview_layer.visible
    ann.bridge.key_handler("commit")()                         # what Enter runs
    labels = ann.labels_layer.data
    assert (labels[10:30, 20:50] == 1).all() and (labels == 1).sum() == 20 * 30, np.unique(labels)
    ann.bridge.key_handler("undo")()
    assert not labels.any()
    qt = [m for m in ("PyQt6", "PySide6", "PyQt5", "PySide2", "qtpy") if m in sys.modules]
    print("ok", shown, qt)
    sys.exit(1 if qt else 0)
""")


def test_the_annotator_runs_on_a_viewer_model_without_qt():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok True")
