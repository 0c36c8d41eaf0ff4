"""Keys and clicks as a person makes them: real Qt events on the canvas, through vispy and
napari's own key and mouse dispatch (napari 0.9 broke every key of ours while only the
keymap's contents were tested)."""

import numpy as np
import pytest

from conftest import GuidanceFollower, synthetic_scene

napari = pytest.importorskip("napari")

from gui_input import hold_key, mouse_click, press_key, release_key, show_all, world_of  # noqa: E402

from napari_iog import IOGPredictor  # noqa: E402
from napari_iog._widgets.annotator import Annotator  # noqa: E402

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
