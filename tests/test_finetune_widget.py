"""The "IOG fine-tune" widget in a real viewer: training in a subprocess, live curve,
before/after mIoU, cancel, a crash reported, the new model handed to the annotator."""

import numpy as np
import pytest
from test_training import shapes_scene

napari = pytest.importorskip("napari")

from napari_iog import zoo  # noqa: E402
from napari_iog._napari.annotator_widget import AnnotatorWidget  # noqa: E402
from napari_iog._napari.finetune_widget import FROM_FILE, USE_TEXT, FineTuneWidget  # noqa: E402
from napari_iog.models import build_model, load_model, save_model  # noqa: E402
from napari_iog.training import events  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    save_model(build_model("iog-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=0), path)
    return path


def annotated_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    images, labels = zip(*(shapes_scene(seed) for seed in range(3)))
    viewer.add_image(np.stack(images)[..., 0], name="cells")          # a grayscale stack
    stack = np.stack(labels).astype(np.uint32)
    stack[1] = 0                                                        # an unannotated slice
    viewer.add_labels(stack, name="cells labels")
    return viewer


def configure(widget, base, out, steps):
    widget.base.value = FROM_FILE
    widget.base_file.value = base
    widget.out.value = out
    widget.length.value = steps
    widget.unit.value = "steps"
    widget.batch_size.value = 2
    widget.lr.value = "1e-3"
    widget.device.value = "cpu"


def test_fine_tune_from_layers_and_use_the_model(make_napari_viewer, tiny_model, tmp_path, qtbot, monkeypatch):
    monkeypatch.setenv("NAPARI_IOG_CACHE", str(tmp_path / "cache"))
    viewer = annotated_viewer(make_napari_viewer)
    labels_before = viewer.layers["cells labels"].data.copy()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG fine-tune")
    assert isinstance(widget, FineTuneWidget)
    assert widget.image.value == "cells" and widget.labels.value == "cells labels"
    assert widget.base.value == zoo.DEFAULT_MODEL     # fine-tuning starts from the bundled model
    n_objects = len(np.unique(labels_before)) - 1
    assert f"{n_objects} objects in 'cells labels'" in widget.status.value
    out = tmp_path / "tuned.pt"
    configure(widget, tiny_model, out, steps=3)
    widget.val_fraction.value = 0.5
    widget.start()
    assert widget.running and not widget.start_button.enabled
    qtbot.waitUntil(lambda: not widget.running and widget.process is None, timeout=300_000)
    assert widget.result is not None and widget.result.status == "complete", widget.status.value
    assert [s for s, _ in widget.plot.losses] == [1, 2, 3]
    assert out.is_file() and not out.with_name(out.name.replace(".pt", ".state.pt")).exists()  # no leftovers
    load_model(out)
    # one training image of 2-3 objects, batch 2: an epoch is one step; validated before and after each
    assert [s for s, _ in widget.plot.mious] == [0, 1, 2, 3]
    assert "held-out mIoU@3" in widget.status.value and "->" in widget.status.value
    assert widget.result.objects >= 2                    # the labelled slices only: 1 image trains
    assert load_model(out).card["steps"] == 3
    np.testing.assert_array_equal(viewer.layers["cells labels"].data, labels_before)
    assert widget._tmp is None                              # the exported copy is gone
    assert widget.use_button.enabled
    annotator_widget = widget.use_in_annotator()
    assert isinstance(annotator_widget, AnnotatorWidget)
    qtbot.waitUntil(lambda: annotator_widget.annotator is not None, timeout=60_000)
    assert annotator_widget.annotator.predictor.model.card["steps"] == 3


def test_cancel_keeps_a_checkpoint_and_a_crash_is_reported(make_napari_viewer, tiny_model, tmp_path, qtbot):
    viewer = annotated_viewer(make_napari_viewer)
    labels_before = viewer.layers["cells labels"].data.copy()
    widget = FineTuneWidget(viewer)
    out = tmp_path / "cancelled.pt"
    configure(widget, tiny_model, out, steps=500)
    widget.val_fraction.value = 0.0
    widget.start()
    qtbot.waitUntil(lambda: len(widget.plot.losses) >= 1, timeout=300_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.process is None, timeout=120_000)
    assert widget.result.status == "cancelled", widget.status.value
    assert "cancelled at step" in widget.status.value
    assert load_model(out).card["status"].startswith("cancelled at step")
    # a corrupt base model: the run fails, the widget says why, nothing is lost
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    configure(widget, broken, tmp_path / "never.pt", steps=2)
    widget.start()
    qtbot.waitUntil(lambda: widget.process is None, timeout=120_000)
    assert widget.result is None and "training failed" in widget.status.value
    assert "not a readable PyTorch checkpoint" in widget.status.value
    assert widget.start_button.enabled and not (tmp_path / "never.pt").exists()
    np.testing.assert_array_equal(viewer.layers["cells labels"].data, labels_before)


def test_nothing_to_train_on_is_refused_at_once(make_napari_viewer, tiny_model, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.uint8), name="blank")
    viewer.add_labels(np.zeros((64, 64), np.uint32), name="blank labels")
    widget = FineTuneWidget(viewer)
    configure(widget, tiny_model, tmp_path / "x.pt", steps=2)
    widget.start()
    assert widget.process is None and widget._tmp is None


def test_the_learning_rate_is_the_measured_default_unless_given(make_napari_viewer, tiny_model, tmp_path,
                                                                monkeypatch, qtbot):
    from qtpy.QtCore import Qt

    from napari_iog._napari import finetune_widget

    said = []
    monkeypatch.setattr(finetune_widget, "show_error", said.append)
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG fine-tune")
    assert widget.lr.value == "auto" and widget.config("napari-iog-default", tmp_path / "a.pt").lr is None
    widget.lr.value = " 5e-4 "
    assert widget.config("napari-iog-default", tmp_path / "a.pt").lr == 5e-4
    viewer.add_image(np.zeros((64, 64), np.uint8), name="blank")
    viewer.add_labels(np.zeros((64, 64), np.uint32), name="blank labels")
    for bad in ("fast", "-1e-3"):
        configure(widget, tiny_model, tmp_path / "x.pt", steps=2)
        widget.lr.value = bad
        said.clear()
        qtbot.mouseClick(widget.start_button.native, Qt.MouseButton.LeftButton)    # refused, nothing started
        assert said and widget.process is None and widget._tmp is None and "learning rate" in said[-1]


def test_a_worse_model_is_said_so_and_not_pushed(make_napari_viewer, tiny_model, tmp_path):
    """The run's own report (its JSON events) says held-out mIoU fell: the widget warns and
    offers the new model only as 'Use it anyway'."""
    viewer = annotated_viewer(make_napari_viewer)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG fine-tune")
    widget.out_path, widget._base_used = tmp_path / "worse.pt", "napari-iog-default"
    widget.on_event(events.from_json('{"event": "end", "status": "complete", "out": "worse.pt", '
                                     '"arch": "iog-resnet18", "steps": 6, "total_steps": 6, '
                                     '"val_miou_before": 0.988, "val_miou_after": 0.964}'))
    widget._finished(0)
    assert widget.worse and "WORSE" in widget.status.value and "napari-iog-default" in widget.status.value
    assert widget.use_button.text == "Use it anyway"


def test_the_status_says_when_the_run_kept_all_of_its_change(make_napari_viewer, tiny_model, tmp_path):
    """A domain the base never saw: the run's end found all of the change better than halfway on
    the held-out objects and saved it whole; the dock says so, with the figure it beat."""
    viewer = annotated_viewer(make_napari_viewer)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG fine-tune")
    widget.out_path, widget._base_used = tmp_path / "plants.pt", "napari-iog-default"
    widget.on_event(events.from_json('{"event": "end", "status": "complete", "out": "plants.pt", '
                                     '"arch": "iog-resnet18", "steps": 200, "total_steps": 200, '
                                     '"val_miou_before": 0.412, "val_miou_after": 0.805, "blend": 1.0, '
                                     '"blend_scores": {"0.5": 0.741, "1": 0.805}, "lr": 0.001}'))
    widget._finished(0)
    assert widget.status.value.startswith("done at lr 0.001: ")     # the faster rate for a domain it got wrong
    assert "0.412 -> 0.805 (all of training's change kept: halfway back to the base scored 0.741)" in \
        widget.status.value
    assert not widget.worse and widget.use_button.text == USE_TEXT and widget.use_button.enabled


def test_the_plot_has_axis_values(make_napari_viewer, tmp_path):
    viewer = annotated_viewer(make_napari_viewer)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG fine-tune")
    widget.plot.clear(10)
    for step, loss in enumerate((0.9, 0.5, 0.3), 1):
        widget.plot.add_loss(step, loss)
    widget.plot.add_miou(3, 0.8)
    assert widget.plot.axis_values() == {"steps": "10 steps", "loss_top": "0.9", "loss_bottom": "0.3",
                                         "miou_top": "1.0", "miou_bottom": "0.0"}
    widget.plot.resize(300, 140)
    assert not widget.plot.grab().toImage().isNull()      # it paints with them
