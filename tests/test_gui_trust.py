"""What a new user met in the docks and must not meet again: a key typed in a field that
committed the object, a second annotator, helper layers offered as data, text cut off, stale
messages, no redo. Real key and mouse events in a shown viewer."""

import numpy as np
import pytest
from conftest import GuidanceFollower, synthetic_scene

napari = pytest.importorskip("napari")

from gui_input import mouse_click, press_key, show_all, type_into, world_of  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402
from qtpy.QtTest import QTest  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

from napari_iog import zoo  # noqa: E402
from napari_iog._napari.annotator_widget import AnnotatorWidget  # noqa: E402
from napari_iog._napari.finetune_widget import FineTuneWidget, default_output  # noqa: E402
from napari_iog.models import build_model, save_model  # noqa: E402
from napari_iog.predictor import IOGPredictor  # noqa: E402

pytestmark = pytest.mark.napari

CORNERS, INSIDE = ((55, 65), (185, 235)), (120, 150)


@pytest.fixture
def docks(make_napari_viewer, tmp_path, monkeypatch):
    """Both docks open in a shown 1280x800 window, annotating with a stand-in network."""
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    viewer = make_napari_viewer(show=True)
    viewer.add_image(synthetic_scene()[0], name="scene")
    _, finetune = viewer.window.add_plugin_dock_widget("napari-iog", "IOG fine-tune")
    _, annotator = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
    show_all(viewer)
    annotator.start(IOGPredictor(GuidanceFollower(), device="cpu", precision="float32", warmup=False))
    return viewer, annotator, finetune


def place_clicks(ann, extra=()):
    for point in (*CORNERS, INSIDE, *extra):
        mouse_click(ann.viewer, world_of(ann.image_layer, point))
    ann.wait()


def test_return_in_a_dock_field_never_commits_the_object_in_progress(docks):
    viewer, annotator, finetune = docks
    ann = annotator.annotator
    place_clicks(ann, extra=[(100, 120), (150, 200)])               # five clicks, as the user had
    assert len(ann.session.clicks) == 5
    type_into(finetune.lr.native, "3e-4", then="Enter")
    assert finetune.lr.value.endswith("3e-4")                       # the field took the text
    for field in (finetune.images_dir, finetune.labels_dir, finetune.out):
        type_into(field.native.findChild(type(finetune.lr.native)), "x", then="Enter")
    type_into(finetune.batch_size.native, "", then="Enter")
    assert not ann.labels_layer.data.any() and len(ann.session.clicks) == 5
    assert annotator.message.value == ""                            # no "no object to commit"
    QTest.keyClick(annotator.undo_button.native, Qt.Key.Key_Return)  # Return on a focused button: that button
    ann.wait()
    assert not ann.labels_layer.data.any() and len(ann.session.clicks) == 4
    press_key(viewer, "Enter")                                      # on the canvas it still commits
    assert ann.labels_layer.data[INSIDE] == 1


def test_use_this_model_loads_into_the_open_annotator(docks, tmp_path, qtbot):
    viewer, annotator, finetune = docks
    ann = annotator.annotator
    place_clicks(ann)
    press_key(viewer, "Enter")
    place_clicks(ann)                                               # an object in progress
    layers_before = [layer.name for layer in viewer.layers]
    tuned = save_model(build_model("iog-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=0),
                       zoo.finetuned_dir() / "tuned.pt", card={"name": "tuned here"})
    finetune.out_path = tuned
    finetune.use_button.enabled = True                              # as after a run
    QTest.mouseClick(finetune.use_button.native, Qt.MouseButton.LeftButton)   # the user presses it
    qtbot.waitUntil(lambda: not annotator.loading.running, timeout=60_000)
    assert annotator.annotator is ann                               # the same annotator ...
    assert ann.predictor.model.card["name"] == "tuned here"          # ... with the new model
    assert [layer.name for layer in viewer.layers] == layers_before  # no second labels or helper layers
    assert ann.labels_layer.data[INSIDE] == 1 and len(ann.session.clicks) == 3
    assert sum(isinstance(w, AnnotatorWidget) for w in _dock_widgets(viewer)) == 1
    assert "now using tuned here" in annotator.status.value
    assert annotator.model.value == str(tuned)                      # the list shows the fine-tuned model


def _dock_widgets(viewer):
    return [dock.inner_widget() for dock in viewer.window._wrapped_dock_widgets.values()]


def test_helper_layers_are_in_no_picker(docks, qtbot):
    viewer, annotator, finetune = docks
    viewer.add_shapes([np.array([[10, 10], [60, 80]])], shape_type="rectangle", name="my boxes")
    annotator.start(annotator.annotator.predictor)                  # a second start: helpers 'IOG box [1]' ...
    annotator.reset_choices()
    finetune.reset_choices()
    helper = [layer.name for layer in viewer.layers if layer.metadata.get("napari-iog helper")]
    assert helper
    offered = [*annotator.boxes_layer.choices, *annotator.labels.choices, *annotator.image.choices,
               *finetune.labels.choices, *finetune.image.choices]
    assert not set(helper) & set(offered)
    assert "my boxes" in annotator.boxes_layer.choices
    ann = annotator.annotator
    place_clicks(ann, extra=())                                     # a half-drawn object in progress
    with pytest.raises(ValueError, match="annotator's own box"):
        ann.segment_boxes(ann.box_layer)
    assert not ann.labels_layer.data.any()
    annotator.boxes_layer.value = "my boxes"
    QTest.mouseClick(annotator.boxes_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ann.labels_layer.data.any() and not ann.busy, timeout=60_000)
    assert ann.labels_layer.data[35, 45] == 1 and ann.labels_layer.data[INSIDE] == 0   # the user's box only


def test_every_text_of_the_docks_is_readable_at_1280x800(docks):
    viewer, annotator, finetune = docks
    ann = annotator.annotator
    place_clicks(ann)
    press_key(viewer, "Enter")
    long_error = ("the labels could not be written: [Errno 28] No space left on device: "
                  "'/data/labels.zarr'; they are as they were before")
    ann.notify(long_error, error=True)
    finetune.status.value = ("done: held-out mIoU@3 0.810 -> 0.802; saved /root/.cache/napari-iog/finetuned/"
                             "napari-iog-default-cvppp-20261204-231500.pt\nThe new model is WORSE on the "
                             "held-out objects than napari-iog-default was: keep using that one.")
    for _ in range(10):
        QApplication.processEvents()
    for widget in (annotator, finetune):
        widget.native.window().activateWindow()
        for label in (widget.status, getattr(widget, "message", None), getattr(widget, "help", None)):
            if label is None or not label.value:
                continue
            _whole_text_shown(label.native)
        for combo in widget.native.findChildren(type(annotator.model.native)):
            if combo.isVisible() and combo.currentText():
                assert combo.currentText() in combo.toolTip() or combo.toolTip().endswith(combo.currentText()) \
                    or combo.fontMetrics().horizontalAdvance(combo.currentText()) < combo.width() - 20
    assert annotator.model.native.fontMetrics().horizontalAdvance(zoo.DEFAULT_MODEL) < annotator.model.native.width()
    assert "Esc clear" in annotator.help.value and "Shift+U redo" in annotator.help.value


def _whole_text_shown(label):
    """The label is as tall as its wrapped text, and nothing in the dock's body is drawn over it."""
    for _ in range(5):
        QApplication.processEvents()
    assert label.height() >= label.heightForWidth(label.width()), (label.text(), label.height())
    body = label.parentWidget()
    for sibling in body.findChildren(type(label).__mro__[2], options=Qt.FindChildOption.FindDirectChildrenOnly):
        if sibling is not label and sibling.isVisible():
            assert not sibling.geometry().intersects(label.geometry()), (label.text(), sibling)
    shot = label.grab().toImage()
    assert shot.height() == label.height()


def test_status_and_errors_are_never_stale(docks):
    viewer, annotator, finetune = docks
    ann = annotator.annotator
    place_clicks(ann)
    press_key(viewer, "Enter")
    assert "committed object 1" in annotator.status.value
    press_key(viewer, "U")
    assert "committed object" not in annotator.status.value and "undid the commit of object 1" in annotator.status.value
    press_key(viewer, "Enter")                                     # nothing to commit: an error ...
    assert "no object to commit" in annotator.message.value
    place_clicks(ann)                                              # ... gone once clicking works again
    assert annotator.message.value == ""
    finetune.labels.value = "(the folders below)"
    assert "choose the image and label folders" in finetune.status.value


def test_fine_tune_folders_chosen_say_ready(docks, tmp_path):
    _, _, finetune = docks
    finetune.labels.value = "(the folders below)"
    for name in ("images", "labels"):
        (tmp_path / "cvppp" / name).mkdir(parents=True)
    finetune.images_dir.value = tmp_path / "cvppp" / "images"
    assert "choose" in finetune.status.value
    finetune.labels_dir.value = tmp_path / "cvppp" / "labels"
    assert finetune.status.value.startswith("ready to fine-tune")
    out = default_output("napari-iog-default", tmp_path / "cvppp" / "images")
    assert out.parent == zoo.finetuned_dir() and out.name.startswith("napari-iog-default-cvppp-")


def test_shift_u_redoes_what_u_undid(docks):
    viewer, annotator, _ = docks
    ann = annotator.annotator
    place_clicks(ann)
    press_key(viewer, "Enter")
    committed = ann.labels_layer.data.copy()
    press_key(viewer, "U")
    assert not ann.labels_layer.data.any()
    press_key(viewer, "U", modifiers=["Shift"])
    np.testing.assert_array_equal(ann.labels_layer.data, committed)
    place_clicks(ann)
    press_key(viewer, "U")
    ann.wait()
    assert len(ann.session.clicks) == 2
    annotator.redo_button.native.click()
    ann.wait()
    assert [r for r, _ in ann.session.clicks] == ["corner", "corner", "inside"]


def test_fine_tuned_models_of_the_cache_are_in_both_model_lists(docks):
    viewer, annotator, finetune = docks
    path = save_model(build_model("iog-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=0),
                      zoo.finetuned_dir() / "napari-iog-default-leaves-20261204-120000.pt")
    annotator.reset_choices()
    finetune.reset_choices()
    assert str(path) in annotator.model.choices and str(path) in finetune.base.choices
    assert isinstance(finetune, FineTuneWidget)


def test_the_loading_seconds_stop_when_the_model_arrives(qtbot):
    """The ticker must not write "loading ..." over the status the model's arrival sets: the worker
    ends a moment after its result, and on a busy machine a tick fell in between (the status then
    said "loading" for good). The worker is a stand-in whose result and end the test hands over."""
    from napari_iog._napari.model_choice import ModelLoading

    class HeldWork:
        running = True

        def start(self, function, *args, returned, errored, finished, **kwargs):
            self.returned, self.finished = returned, finished

    said = []
    loading = ModelLoading(said.append)
    loading.work = HeldWork()
    loading.start("model.pt", "cpu", returned=lambda model: said.append(f"using {model}"), errored=said.append,
                  finished=lambda: said.append("ended"))
    assert len(said) == 1 and said[0].startswith("loading model.pt ... ")    # its seconds are the machine's
    loading.work.returned("the model")
    qtbot.wait(1200)                          # the worker has not ended yet: the ticker's 500 ms pass
    assert said[-1] == "using the model"
    loading.work.finished()
    assert said[1:] == ["using the model", "ended"]


def test_a_long_first_load_shows_that_it_is_working(docks, qtbot, monkeypatch):
    """A slow model start (an ONNX export, say) shows the seconds so far and why, not just 'loading'."""
    import itertools
    import threading
    import types

    from qtpy.QtCore import QThreadPool

    from napari_iog._napari import model_choice

    viewer, annotator, _ = docks
    release = threading.Event()
    ticks = itertools.chain([0.0, 0.5, 4.0, 9.0], itertools.repeat(9.5))     # the clock is given, not read
    # the loading clock's alone: a clock patched in the time module itself also drives every wait
    # loop of the process (a finite one ran out inside them on a busy machine)
    monkeypatch.setattr(model_choice, "time", types.SimpleNamespace(monotonic=lambda: next(ticks)))

    def slow_predictor(*args, **kwargs):
        release.wait(30)
        return annotator.annotator.predictor

    monkeypatch.setattr("napari_iog.predictor.IOGPredictor", slow_predictor)
    # napari's workers share Qt's global pool, one thread a core: workers of earlier tests still
    # busy (a real model's first start, on a loaded machine) would leave this load queued, never run
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=180_000)
    annotator.model.value = zoo.DEFAULT_MODEL
    annotator.start()
    assert annotator.loading.running and not annotator.start_button.enabled
    qtbot.waitUntil(lambda: "first start" in annotator.status.value, timeout=10_000)
    assert "loading napari-iog-default ..." in annotator.status.value and " s " in annotator.status.value
    release.set()
    # the status follows the load's end through Qt's queue: on a busy machine a moment later
    qtbot.waitUntil(lambda: not annotator.loading.running and "loading" not in annotator.status.value,
                    timeout=60_000)
    assert annotator.start_button.enabled and "loading" not in annotator.status.value
