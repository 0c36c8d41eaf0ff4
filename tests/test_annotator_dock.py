"""The annotator dock as a new user meets it: it fits a 1280x800 window, names models
shortly, and downloads a zoo model with progress and cancel."""

import pytest
from conftest import synthetic_scene

napari = pytest.importorskip("napari")

from gui_input import show_all  # noqa: E402
from local_server import SlowFileServer  # noqa: E402

from napari_iog import build_model, save_model, zoo  # noqa: E402

pytestmark = pytest.mark.napari


def open_annotator(make_napari_viewer, *widgets):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(synthetic_scene()[0], name="scene")
    docks = [viewer.window.add_plugin_dock_widget("napari-iog", name) for name in ("IOG annotator", *widgets)]
    show_all(viewer)
    return viewer, docks


def test_the_dock_leaves_most_of_a_1280x800_window_to_the_canvas(make_napari_viewer):
    viewer, [(dock, widget)] = open_annotator(make_napari_viewer)
    window = viewer.window._qt_window
    assert (window.width(), window.height()) == (1280, 800)
    canvas = viewer.window._qt_viewer.canvas.native
    # more than half: the dock is as wide as "napari-iog-default" whole, no wider
    assert canvas.width() >= 0.54 * window.width() and dock.width() <= 0.2 * window.width(), (canvas.width(),
                                                                                               dock.width())
    for name in (r["name"] for r in zoo.list_weights()):    # short names; the long text is in tooltips
        assert len(name) <= 30 and "(" not in name
    assert widget.model.choices[0] == zoo.DEFAULT_MODEL and "bundled" in widget.model_info.value


def test_both_docks_fit_the_window_height(make_napari_viewer, qtbot):
    """Opened together, the two docks share the right side as tabs, each whole."""
    from qtpy.QtWidgets import QApplication

    viewer, [(annotator_dock, _), (finetune_dock, _)] = open_annotator(make_napari_viewer, "IOG fine-tune")
    QApplication.processEvents()
    window = viewer.window._qt_window
    assert window.height() <= 800
    assert annotator_dock in window.tabifiedDockWidgets(finetune_dock)


@pytest.fixture
def served_model(tmp_path, monkeypatch):
    path = save_model(build_model("iog-resnet18", init="zeros"), tmp_path / "m.pt", card={"name": "served"},
                      half=True)
    served = SlowFileServer(path.read_bytes())
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    entry = zoo.WeightsEntry("served-model", "SERVED.pt", "iog-resnet18", "nothing", "test", "http://localhost",
                             url=f"{served.url}/SERVED.pt")
    monkeypatch.setitem(zoo.WEIGHTS, entry.name, entry)
    yield entry, served.handler
    served.close()


def test_download_from_the_dock_then_the_model_is_selected(make_napari_viewer, served_model, qtbot):
    entry, _ = served_model
    viewer, [(dock, widget)] = open_annotator(make_napari_viewer)
    widget.reset_choices()
    widget.model.value = entry.name
    assert not widget.start_button.enabled and not widget.download_button.native.isHidden()
    widget.download_button.native.click()
    qtbot.waitUntil(lambda: not widget.downloading.running, timeout=60000)
    assert zoo.local_path(entry.name).is_file()
    assert widget.model.value == entry.name and widget.start_button.enabled
    assert widget.download_button.native.isHidden() and "downloaded" in widget.model_info.value


def test_a_download_can_be_cancelled_and_leaves_nothing(make_napari_viewer, served_model, qtbot):
    entry, handler = served_model
    handler.delay = 0.2
    viewer, [(dock, widget)] = open_annotator(make_napari_viewer)
    widget.reset_choices()
    widget.model.value = entry.name
    widget.download_button.native.click()
    assert widget.download_button.text == "Cancel download"
    qtbot.wait(300)
    widget.download_button.native.click()
    qtbot.waitUntil(lambda: not widget.downloading.running, timeout=60000)
    assert "cancelled" in widget.message.value
    assert not zoo.local_path(entry.name).exists() and not list(zoo.cache_dir().glob("*.part"))
    assert widget.model.value == entry.name and not widget.start_button.enabled
