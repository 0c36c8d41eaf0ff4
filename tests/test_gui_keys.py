"""Keys and clicks as a person makes them: real Qt events on the canvas, through vispy and
napari's own key and mouse dispatch (napari 0.9 broke every key of ours while only the
keymap's contents were tested)."""

import numpy as np
import pytest
from conftest import GuidanceFollower, ThresholdPredictor, synthetic_scene
from scipy import ndimage

napari = pytest.importorskip("napari")

from gui_input import canvas_position, canvas_widget, hold_key, mouse_click, press_key, release_key, show_all, world_of  # noqa: E402

from napari_iog import IOGPredictor  # noqa: E402
from napari_iog._napari.annotator import Annotator  # noqa: E402

pytestmark = pytest.mark.napari

CORNERS = ((55, 65), (185, 235))
INSIDE = (120, 150)


@pytest.fixture
def annotator(make_napari_viewer):
    viewer = make_napari_viewer()
    image, _ = synthetic_scene()
    layer = viewer.add_image(image, name="scene")
    show_all(viewer)
    predictor = IOGPredictor(GuidanceFollower(), device="cpu", precision="float32", warmup=False)
    ann = Annotator(viewer, layer, predictor)
    assert viewer.layers.selection.active is ann.clicks_layer   # as right after Start
    return ann


def click_object(ann, corners=CORNERS, inside=INSIDE):
    for point in (*corners, inside):
        mouse_click(ann.viewer, world_of(ann.image_layer, point))
    ann.wait()


def test_real_mouse_clicks_land_where_clicked(annotator):
    ann = annotator
    click_object(ann)
    assert list(ann.clicks_layer.features["role"]) == ["corner", "corner", "inside"]
    clicks = np.array([p for _, p in ann.session.clicks])
    np.testing.assert_allclose(clicks, np.array([*CORNERS, INSIDE]), atol=1.0)
    assert ann.preview_layer.visible and ann.preview_layer.data.any()


def test_enter_commits_and_u_undoes_the_commit(annotator):
    ann = annotator
    click_object(ann)
    press_key(ann.viewer, "Enter")
    labels = ann.labels_layer.data
    assert (labels == 1).any() and labels[INSIDE] == 1
    assert len(ann.clicks_layer.data) == 0
    press_key(ann.viewer, "U")
    np.testing.assert_array_equal(ann.labels_layer.data, 0)


def test_u_takes_back_the_last_click(annotator):
    ann = annotator
    click_object(ann)
    press_key(ann.viewer, "U")
    ann.wait()
    assert [r for r, _ in ann.session.clicks] == ["corner", "corner"]
    assert len(ann.clicks_layer.data) == 2


def test_escape_clears_the_object_in_progress(annotator):
    ann = annotator
    click_object(ann)
    press_key(ann.viewer, "Escape")
    assert ann.session.clicks == [] and len(ann.clicks_layer.data) == 0
    assert not ann.preview_layer.visible
    np.testing.assert_array_equal(ann.labels_layer.data, 0)


def test_n_toggles_negative_corrections(annotator):
    ann = annotator
    click_object(ann)
    area = ann.session.current.mask.sum()
    press_key(ann.viewer, "N")
    assert ann.negative
    mouse_click(ann.viewer, world_of(ann.image_layer, (INSIDE[0], INSIDE[1] + 6)))
    ann.wait()
    assert [r for r, _ in ann.session.clicks][-1] == "negative"
    assert ann.session.current.mask.sum() < area
    press_key(ann.viewer, "N")
    assert not ann.negative


def test_shift_click_is_a_negative_correction(annotator):
    ann = annotator
    click_object(ann)
    mouse_click(ann.viewer, world_of(ann.image_layer, (INSIDE[0], INSIDE[1] + 6)), modifiers=["Shift"])
    ann.wait()
    assert [r for r, _ in ann.session.clicks][-1] == "negative"


def test_napari_keys_still_work_on_the_clicks_layer(annotator):
    ann = annotator
    assert ann.clicks_layer.mode == "add"
    press_key(ann.viewer, "4")
    assert ann.clicks_layer.mode == "pan_zoom"
    press_key(ann.viewer, "2")
    assert ann.clicks_layer.mode == "add"
    hold_key(ann.viewer, "Space")            # napari: hold Space to pan and zoom
    assert ann.clicks_layer.mode == "pan_zoom"
    release_key(ann.viewer, "Space")
    assert ann.clicks_layer.mode == "add"


def _colour_at(shot, viewer, layer, data_point):
    pos = canvas_position(viewer, world_of(layer, data_point))
    ratio = shot.shape[1] / canvas_widget(viewer).width()     # screenshots may be in device pixels
    return shot[int(pos.y() * ratio), int(pos.x() * ratio), :3].astype(int)


@pytest.mark.parametrize("colormap", ["default", "yellow for 1"])
def test_the_object_in_progress_is_an_outline_unlike_committed_ones(make_napari_viewer, colormap):
    """Committed objects are filled; the object in progress is only outlined, so it cannot be
    mistaken for a committed one whatever colours the labels layer uses."""
    from napari.utils.colormaps import DirectLabelColormap

    viewer = make_napari_viewer()
    image, _ = synthetic_scene()
    yy, xx = np.indices(image.shape[:2])
    image[(yy - 40) ** 2 + (xx - 40) ** 2 < 20 ** 2] = (230, 230, 230)     # a second bright object
    ann = Annotator(viewer, viewer.add_image(image, name="scene"), ThresholdPredictor())
    show_all(viewer)
    if colormap != "default":
        ann.labels_layer.colormap = DirectLabelColormap(color_dict={None: "transparent", 1: "yellow"})
    ann.labels_layer.opacity = 1.0
    click_object(ann, corners=((15, 15), (65, 65)), inside=(40, 40))
    press_key(viewer, "Enter")
    assert ann.labels_layer.data[40, 40] == 1
    click_object(ann)                                      # the second object, in progress
    assert ann.preview_layer.visible and ann.session.current.mask[INSIDE]
    shot = viewer.screenshot(canvas_only=True, flash=False)
    mask = ann.session.current.mask
    depth = ndimage.distance_transform_edt(mask)
    yy, xx = np.indices(mask.shape)
    depth[(yy - INSIDE[0]) ** 2 + (xx - INSIDE[1]) ** 2 < 10 ** 2] = 0      # the click's marker
    interior = np.unravel_index(np.argmax(depth), mask.shape)              # deep inside the object
    assert depth[interior] >= 4
    image_colour = _colour_at(shot, viewer, ann.image_layer, interior)
    committed = _colour_at(shot, viewer, ann.image_layer, (40, 30))
    expected_fill = (255 * ann.labels_layer.colormap.map(1)[:3]).astype(int)
    assert np.abs(committed - expected_fill).max() <= 40                # filled
    assert np.abs(image_colour - ann.image_layer.data[interior]).max() <= 40  # not filled: the image
    edge = mask & ~ndimage.binary_erosion(mask)
    rows, cols = np.nonzero(edge)
    yellow = [np.abs(_colour_at(shot, viewer, ann.image_layer, (r, c)) - (255, 255, 0)).max() <= 60
              for r, c in zip(rows[::15], cols[::15])]
    assert np.mean(yellow) > 0.5                                         # its outline is drawn


@pytest.mark.parametrize("last_prediction_s, inline", [(0.01, True), (0.5, False)])
def test_a_fast_model_predicts_at_the_click_and_a_slow_one_in_a_worker(annotator, last_prediction_s, inline):
    """The click path: a model whose last prediction was short runs at once in the GUI thread
    (the mask is there when the click returns); a slow one leaves the GUI free meanwhile.
    The time is set, not measured, so a busy machine cannot change the outcome."""
    import threading

    ann = annotator
    ann.asynchronous = ann.predictions.asynchronous = True
    click_object(ann)
    threads = []
    predict = ann.predictor.predict

    def recorded(*args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return predict(*args, **kwargs)

    ann.predictor.predict = recorded
    ann.predictions.last_task_s = last_prediction_s
    mouse_click(ann.viewer, world_of(ann.image_layer, (INSIDE[0], INSIDE[1] + 6)))
    ann.wait()
    assert threads == [inline]
    assert ann.session.up_to_date and ann.preview_layer.visible
