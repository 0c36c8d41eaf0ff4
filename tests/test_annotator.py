"""The napari annotation workflow end to end, in a real viewer under a virtual display.

The network is a tiny module with fixed weights made here: its logit is a fixed blend of the
inside and outside guidance maps, so a prediction is a blob around the inside click that a
positive click grows and a negative click shrinks. Segmentation quality is not the point;
behaviour is.
"""

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from conftest import GuidanceFollower, ThresholdPredictor, synthetic_scene

napari = pytest.importorskip("napari")

from gui_input import world_of as world  # noqa: E402
from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks  # noqa: E402

from napari_iog import IOGPredictor  # noqa: E402
from napari_iog._napari.annotator import Annotator  # noqa: E402
from napari_iog._napari.annotator_widget import FROM_FILE, NEW_LABELS, AnnotatorWidget  # noqa: E402
from napari_iog._napari.bridge import SHORTCUTS  # noqa: E402
from napari_iog.evaluation import iou  # noqa: E402

pytestmark = pytest.mark.napari

CORNERS = ((55, 65), (185, 235))
INSIDE = (120, 150)


@pytest.fixture(scope="module")
def predictor():
    return IOGPredictor(GuidanceFollower(), device="cpu", precision="float32", warmup=False)


@dataclass
class MouseEvent:
    """What napari's mouse callbacks read from a vispy mouse event."""

    type: str
    position: tuple
    modifiers: list = field(default_factory=list)
    is_dragging: bool = False
    pos: np.ndarray = field(default_factory=lambda: np.zeros(2))
    view_direction: object = None
    up_direction: object = None
    dims_displayed: list = field(default_factory=lambda: [0, 1])
    handled: bool = False


def click(layer, world_position, modifiers=()):
    """A mouse click on ``layer`` at a world position, through napari's own callbacks (the
    points layer's add mode adds the point on release)."""
    press = MouseEvent("mouse_press", tuple(world_position), list(modifiers),
                       dims_displayed=list(range(len(world_position) - 2, len(world_position))))
    mouse_press_callbacks(layer, press)
    release = MouseEvent("mouse_release", tuple(world_position), list(modifiers),
                         dims_displayed=press.dims_displayed)
    mouse_release_callbacks(layer, release)


def three_clicks(ann, corners=CORNERS, inside=INSIDE, plane=()):
    for point in (*corners, inside):
        click(ann.clicks_layer, world(ann.image_layer, (*plane, *point)))
    ann.wait()


@pytest.fixture
def scene_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    image, _ = synthetic_scene()
    layer = viewer.add_image(image, name="scene")
    return viewer, layer


def state(ann):
    """Every layer the annotator touches, copied."""
    return (ann.labels_layer.data.copy(), ann.clicks_layer.data.copy(), list(ann.clicks_layer.features["role"]),
            [d.copy() for d in ann.box_layer.data], ann.preview_layer.data.copy(), ann.preview_layer.visible)


def assert_same_state(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert len(a[3]) == len(b[3]) and all(np.array_equal(x, y) for x, y in zip(a[3], b[3]))
    np.testing.assert_array_equal(a[4], b[4])
    assert a[5] == b[5]


def test_three_clicks_then_commit_write_an_object_in_the_box(scene_viewer, predictor):
    viewer, layer = scene_viewer
    ann = Annotator(viewer, layer, predictor)
    assert ann.asynchronous                       # a Qt application runs: predictions in a worker
    assert ann.labels_layer.data.shape == (240, 320) and ann.labels_layer.data.dtype == np.uint32
    three_clicks(ann)
    assert list(ann.clicks_layer.features["role"]) == ["corner", "corner", "inside"]
    assert len(ann.box_layer.data) == 1 and ann.box_layer.shape_type == ["rectangle"]
    assert ann.preview_layer.visible and ann.preview_layer.data.any()
    assert ann.last_latency is not None and "ms" in ann.status
    ann.act("commit")
    labels = ann.labels_layer.data
    assert (labels == 1).any() and set(np.unique(labels)) == {0, 1}
    rows, cols = np.nonzero(labels == 1)
    assert rows.min() >= 55 and rows.max() <= 185 and cols.min() >= 65 and cols.max() <= 235
    assert labels[INSIDE] == 1
    assert len(ann.clicks_layer.data) == 0 and not ann.preview_layer.visible


def test_second_object_gets_the_next_id_and_the_first_is_untouched(scene_viewer, predictor):
    viewer, layer = scene_viewer
    ann = Annotator(viewer, layer, predictor)
    three_clicks(ann)
    first = ann.commit()
    before = ann.labels_layer.data.copy()
    three_clicks(ann, corners=((100, 120), (230, 310)), inside=(125, 160))  # overlaps the first
    second = ann.commit()
    after = ann.labels_layer.data
    assert (first, second) == (1, 2)
    np.testing.assert_array_equal(after[before == 1], 1)       # pixel for pixel
    assert (after == 2).any() and not ((after == 2) & (before != 0)).any()


def test_negative_correction_shrinks_and_undo_restores_exactly(scene_viewer, predictor):
    viewer, layer = scene_viewer
    ann = Annotator(viewer, layer, predictor)
    three_clicks(ann)
    before = state(ann)
    area = ann.session.current.mask.sum()
    click(ann.clicks_layer, world(layer, (INSIDE[0], INSIDE[1] + 6)), modifiers=["Shift"])
    ann.wait()
    assert list(ann.clicks_layer.features["role"])[-1] == "negative"
    assert ann.session.current.mask.sum() < area
    assert ann.act("undo") == "click"
    ann.wait()
    assert_same_state(state(ann), before)
    # a positive correction grows it; N makes plain clicks negative
    click(ann.clicks_layer, world(layer, (INSIDE[0] + 12, INSIDE[1])))
    ann.wait()
    assert ann.session.current.mask.sum() > area
    ann.act("toggle_negative")
    click(ann.clicks_layer, world(layer, (INSIDE[0], INSIDE[1] - 6)))
    ann.wait()
    assert list(ann.clicks_layer.features["role"])[-2:] == ["positive", "negative"]
    # undo of a commit puts the labels back
    ann.commit()
    ann.undo()
    np.testing.assert_array_equal(ann.labels_layer.data, 0)
    assert ann.session.next_id == 1


def test_world_coordinates_give_the_same_object(make_napari_viewer, predictor):
    image, _ = synthetic_scene()
    committed = []
    for scale, translate in (((1, 1), (0, 0)), ((2, 2), (10, -4))):
        viewer = make_napari_viewer()
        layer = viewer.add_image(image, scale=scale, translate=translate)
        ann = Annotator(viewer, layer, predictor)
        three_clicks(ann)
        ann.commit()
        committed.append(ann.labels_layer.data.copy())
        np.testing.assert_array_equal(ann.labels_layer.scale, scale)
        np.testing.assert_array_equal(ann.clicks_layer.translate, translate)
        # the crop-sized preview sits over the object in world coordinates
        preview_origin = ann.preview_layer.data_to_world(np.zeros(2))
        window = ann.session.last_commit[2]
        np.testing.assert_allclose(preview_origin, layer.data_to_world(np.array([window.r0, window.c0], float)))
    np.testing.assert_array_equal(committed[0], committed[1])
    assert committed[0].any()


def test_16_bit_and_float_images_are_scaled_by_the_contrast_limits(make_napari_viewer, predictor):
    image, _ = synthetic_scene()
    gray = image.mean(axis=2)
    viewer = make_napari_viewer()
    results = []
    for data, limits in ((gray.astype(np.uint8), (0, 255)), ((gray * 256).astype(np.uint16), (0, 255 * 256)),
                         (gray / 255.0, (0.0, 1.0))):
        layer = viewer.add_image(data, contrast_limits=limits)
        ann = Annotator(viewer, layer, predictor)
        network_input = predictor.network_input(data, CORNERS, INSIDE, **ann.session.predict_options)[0]
        results.append(network_input[:3])
        assert ann.session.predict_options["contrast_limits"] == tuple(map(float, limits))
        layer.contrast_limits = (limits[0], limits[1] / 2)      # the user brightens the view
        assert ann.session.predict_options["contrast_limits"][1] == limits[1] / 2
        ann.close()
    torch.testing.assert_close(results[1], results[0], atol=1.5, rtol=0)
    torch.testing.assert_close(results[2], results[0], atol=1.5, rtol=0)


def test_a_stack_slice_is_annotated_alone(make_napari_viewer, predictor):
    viewer = make_napari_viewer()
    image, _ = synthetic_scene()
    stack = np.stack([image // 2, image, image // 3])            # (Z, Y, X, RGB)
    layer = viewer.add_image(stack, rgb=True)
    ann = Annotator(viewer, layer, predictor)
    assert ann.labels_layer.data.shape == (3, 240, 320)
    viewer.dims.set_current_step(0, 1)
    assert ann.current_plane() == (1,)
    three_clicks(ann, plane=(1,))
    ann.commit()
    labels = ann.labels_layer.data
    assert labels[1].any() and not labels[0].any() and not labels[2].any()
    # scripted use on another slice
    ann.segment(CORNERS, INSIDE, plane=(2,))
    assert ann.commit() == 2 and labels[2].any() and not labels[0].any()


def test_guide_lines_follow_the_cursor_until_the_box_is_set(scene_viewer, predictor):
    from napari.utils.interactions import mouse_move_callbacks

    viewer, layer = scene_viewer
    ann = Annotator(viewer, layer, predictor)

    def move(point):
        mouse_move_callbacks(viewer, MouseEvent("mouse_move", world(layer, point)))

    move((100, 40))
    assert ann.box_layer.shape_type == ["line", "line"]
    horizontal, vertical = ann.box_layer.data
    np.testing.assert_allclose(horizontal[:, 0], 100)
    np.testing.assert_allclose(vertical[:, 1], 40)
    click(ann.clicks_layer, world(layer, CORNERS[0]))
    move((150, 200))
    assert ann.box_layer.shape_type == ["line", "line"]
    click(ann.clicks_layer, world(layer, CORNERS[1]))
    move((120, 150))
    assert ann.box_layer.shape_type == ["rectangle"]       # the box, no more guides
    move((500, 500))                                       # off the image: nothing follows


def test_bad_clicks_notify_and_change_no_layer(scene_viewer, predictor):
    from napari.utils.notifications import notification_manager

    viewer, layer = scene_viewer
    ann = Annotator(viewer, layer, predictor)
    messages = []
    ann.notified.connect(messages.append)
    untouched = state(ann)
    click(ann.clicks_layer, world(layer, (300, 10)))              # outside the image
    assert "outside the image" in messages[-1]
    assert any("outside the image" in str(n.message) for n in notification_manager.records)
    assert_same_state(state(ann), untouched)
    click(ann.clicks_layer, world(layer, CORNERS[0]))
    one_corner = state(ann)
    click(ann.clicks_layer, world(layer, (CORNERS[0][0], 200)))  # zero-height box
    assert "only 1 x" in messages[-1]
    assert_same_state(state(ann), one_corner)
    assert ann.act("commit") is None and "no object" in messages[-1]
    assert_same_state(state(ann), one_corner)


def test_scripted_use_as_in_the_readme(scene_viewer, predictor):
    viewer, layer = scene_viewer
    ann = napari_iog_annotator(viewer, layer, predictor)
    result = ann.segment(corners=CORNERS, inside=INSIDE)       # synchronous
    assert result is ann.session.current and ann.preview_layer.visible
    area = result.mask.sum()
    smaller = ann.correct((INSIDE[0], INSIDE[1] + 6), positive=False)
    assert smaller.mask.sum() < area
    label_id = ann.commit()
    assert label_id == 1 and (ann.labels_layer.data == 1).sum() == smaller.mask.sum()
    assert ann.undo() == "commit" and not ann.labels_layer.data.any()


def napari_iog_annotator(*args, **kwargs):
    import napari_iog

    return napari_iog.Annotator(*args, **kwargs)


def test_a_click_during_a_prediction_supersedes_it(scene_viewer, predictor):
    viewer, layer = scene_viewer
    ann = Annotator(viewer, layer, predictor)
    shown = []
    ann.prediction_shown.connect(lambda: shown.append(ann.session.current.clicks))
    for point in (*CORNERS, INSIDE):
        click(ann.clicks_layer, world(layer, point))
    click(ann.clicks_layer, world(layer, (INSIDE[0], INSIDE[1] + 6)), modifiers=["Shift"])  # no wait
    ann.wait()
    assert ann.session.up_to_date
    assert ann.session.current.clicks["negative"] == [(120.0, 156.0)]
    assert shown[-1]["negative"] == [(120.0, 156.0)]
    assert all(s["negative"] == [(120.0, 156.0)] for s in shown)   # the stale one was never shown


def test_shortcuts_do_not_clash_with_napari():
    from napari.layers import Points
    from napari.utils.shortcuts import default_shortcuts

    ours = set(SHORTCUTS)
    assert not ours & {str(k) for k in Points.class_keymap}
    assert not ours & {str(k) for k in napari.components.ViewerModel.class_keymap}
    for command, bindings in default_shortcuts.items():
        for binding in bindings:
            if str(binding) in ours:
                # napari binds Enter/Escape only to finish shapes or labels polygons
                assert any(kind in command for kind in ("polygon", "shape")), (binding, command)


def test_the_widget_segments_out_of_the_box_with_the_bundled_model(make_napari_viewer, tmp_path, qtbot,
                                                                   monkeypatch):
    """A new user: no weights downloaded, nothing chosen; Start, three clicks, commit."""
    from napari_iog import zoo

    monkeypatch.setenv("NAPARI_IOG_CACHE", str(tmp_path / "empty-cache"))
    viewer = make_napari_viewer()
    image, truth = synthetic_scene()
    viewer.add_image(image, name="scene")
    _, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
    assert widget.model.value == zoo.DEFAULT_MODEL
    widget.device.value = "cpu"
    widget.start()
    qtbot.waitUntil(lambda: not widget.loading.running, timeout=60000)
    ann = widget.annotator
    assert ann is not None and "napari-iog default" in widget.status.value
    three_clicks(ann)
    widget.commit_button.clicked.emit()
    labels = ann.labels_layer.data
    assert (labels == 1).sum() > 0
    assert iou(labels == 1, truth) > 0.85


def test_widget_from_the_plugin_menu_annotates(make_napari_viewer, predictor, tmp_path, qtbot, monkeypatch):
    from napari.utils.notifications import notification_manager

    monkeypatch.setenv("NAPARI_IOG_CACHE", str(tmp_path / "empty-cache"))
    viewer = make_napari_viewer()
    image, _ = synthetic_scene()
    viewer.add_image(image, name="scene")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
    assert isinstance(widget, AnnotatorWidget)
    assert widget.image.value == "scene" and widget.labels.value == NEW_LABELS
    assert "Enter" in widget.help.tooltip and "Shift+click" in widget.help.tooltip
    # a corrupt model file: an error, nothing changes
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    widget.model.value = FROM_FILE
    widget.model_file.value = bad
    layers_before = [lay.name for lay in viewer.layers]
    widget.start()
    qtbot.waitUntil(lambda: not widget.loading.running, timeout=30000)
    assert widget.annotator is None and [lay.name for lay in viewer.layers] == layers_before
    assert "not a" in widget.message.value or "could not be loaded" in widget.message.value   # in full
    # a zoo model that is not downloaded: Start waits for Download; a scripted start says how
    widget.model.value = "iog-pascal-sbd"
    assert "not downloaded" in widget.model_info.value and widget.model.current_choice == "iog-pascal-sbd"
    assert not widget.start_button.enabled and not widget.download_button.native.isHidden()
    widget.start()
    qtbot.waitUntil(lambda: not widget.loading.running, timeout=30000)
    assert widget.annotator is None and [lay.name for lay in viewer.layers] == layers_before
    assert "weights fetch iog-pascal-sbd" in str(notification_manager.records[-1].message)
    widget.start(predictor)
    ann = widget.annotator
    assert ann is not None and widget.labels.value == "scene labels"
    assert "guidance follower" in widget.status.value
    three_clicks(ann)
    widget.commit_button.clicked.emit()
    assert (ann.labels_layer.data == 1).any()
    widget.negative.value = True
    assert ann.negative
    ann.act("toggle_negative")
    assert widget.negative.value is False


def stack_viewer(make_napari_viewer, planes=6):
    """A bright ellipse drifting a little from plane to plane, in RGB."""
    viewer = make_napari_viewer()
    stack = np.stack([synthetic_scene(center=(120, 146 + 2 * z))[0] for z in range(planes)])
    layer = viewer.add_image(stack, rgb=True, name="stack")
    return viewer, layer


def test_propagation_from_the_widget_fills_the_stack_and_one_undo_reverts_it(make_napari_viewer):
    predictor = ThresholdPredictor()
    viewer, layer = stack_viewer(make_napari_viewer)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
    widget.start(predictor)
    ann = widget.annotator
    assert not widget.propagate_row.native.isHidden() and widget.propagate_axis.value == 0
    viewer.dims.set_current_step(0, 2)
    three_clicks(ann, plane=(2,))
    widget.commit_button.clicked.emit()
    labels = ann.labels_layer.data
    first = labels[2].copy()
    finished = []
    ann.propagation_finished.connect(finished.append)
    widget.propagate_button.clicked.emit()
    assert widget.propagate_button.text == "Stop propagating"
    ann.wait_for_propagation()
    result = finished[-1]
    assert sorted(result.planes) == [(0,), (1,), (3,), (4,), (5,)] and not result.cancelled
    assert all((labels[z] == 1).any() for z in range(6)) and set(np.unique(labels)) == {0, 1}
    assert widget.propagate_button.text == "Propagate through stack"
    assert "propagated to 5 planes" in widget.status.value
    widget.undo_button.clicked.emit()
    np.testing.assert_array_equal(labels[2], first)
    assert not np.delete(labels, 2, axis=0).any()


def test_a_propagation_can_be_stopped_and_blocks_edits_meanwhile(make_napari_viewer):
    predictor = ThresholdPredictor()
    viewer, layer = stack_viewer(make_napari_viewer, planes=8)
    ann = Annotator(viewer, layer, predictor, asynchronous=True)
    ann.segment(CORNERS, INSIDE, plane=(0,))
    ann.commit()
    finished = []
    ann.propagation_finished.connect(finished.append)
    ann.start_propagation()
    assert ann.propagating
    with pytest.raises(ValueError, match="propagation"):
        ann.commit()
    ann.stop_propagation()
    ann.wait_for_propagation()
    result = finished[-1]
    assert result.cancelled and 1 <= len(result.steps) < 7
    labels = ann.labels_layer.data
    assert [z for z in range(8) if (labels[z] == 1).any()] == list(range(len(result.steps) + 1))
    ann.undo()
    assert (labels[0] == 1).any() and not labels[1:].any()


def test_propagation_on_a_single_image_says_it_needs_a_stack(scene_viewer, predictor):
    viewer, layer = scene_viewer
    ann = Annotator(viewer, layer, predictor, asynchronous=True)
    messages = []
    ann.notified.connect(messages.append)
    ann.segment(CORNERS, INSIDE)
    ann.commit()
    ann.start_propagation()
    assert not ann.propagating and "needs a stack" in messages[-1]


def test_labels_saved_as_coco_from_napari_open_again_identical(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = np.zeros((2, 50, 60), np.uint32)
    labels[0, 5:20, 5:25] = 3
    labels[1, 30:45, 10:50] = 8
    layer = viewer.add_labels(labels, name="cells")
    written = viewer.layers.save(str(tmp_path / "cells.json"), selected=False, plugin="napari-iog")
    assert written == [str(tmp_path / "cells.json")]
    opened = viewer.open(str(tmp_path / "cells.json"), plugin="napari-iog")
    assert opened[0]._type_string == "labels" and opened[0].name.startswith("cells")
    np.testing.assert_array_equal(opened[0].data, layer.data)


def checkerboard_level(size, step, chunk=512):
    """A lazily generated level of a checkerboard (squares of 64 px at full resolution)."""
    import dask.array as da

    def block(block_info=None):
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        yy, xx = np.mgrid[r0:r1, c0:c1] * step
        return (60 + 150 * ((yy // 64 + xx // 64) % 2)).astype(np.uint8)
    n = size // step
    return da.map_blocks(block, chunks=(tuple(min(chunk, n - i) for i in range(0, n, chunk)),) * 2, dtype=np.uint8)


def test_a_multiscale_image_gets_sparse_multiscale_labels_kept_in_step(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.add_image([checkerboard_level(4096, s) for s in (1, 2, 4)], multiscale=True, name="slide")
    ann = Annotator(viewer, layer, ThresholdPredictor())
    levels = list(ann.labels_layer.data)
    assert ann.labels_layer.multiscale and [lv.shape for lv in levels] == [(4096, 4096), (2048, 2048), (1024, 1024)]
    assert not any(isinstance(lv, np.ndarray) for lv in levels)
    ann.segment(((2040, 2100), (2120, 2190)), (2080, 2140))     # the square rows 2048.., cols 2112..
    assert ann.commit() == 1
    full = np.asarray(levels[0][1984:2176, 1984:2176])
    assert (full[64:128, 128:192] == 1).all() and (full == 1).sum() == 64 * 64
    np.testing.assert_array_equal(np.asarray(levels[1][992:1088, 992:1088]), full[::2, ::2])
    np.testing.assert_array_equal(np.asarray(levels[2][496:544, 496:544]), full[::4, ::4])
    ann.undo()
    assert not np.asarray(levels[0][1984:2176, 1984:2176]).any() and not np.asarray(levels[2][496:544, 496:544]).any()


def test_a_very_large_plain_image_gets_sparse_labels(make_napari_viewer, monkeypatch):
    from napari_iog._napari import layers as annotator_module

    monkeypatch.setattr(annotator_module, "DENSE_LABELS_MAX_PIXELS", 100 * 100)
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.asarray(checkerboard_level(256, 1)), name="big")
    ann = Annotator(viewer, layer, ThresholdPredictor())
    data = ann.labels_layer.data
    assert not isinstance(data, np.ndarray) and not ann.labels_layer.multiscale and data.shape == (256, 256)
    ann.segment(((60, 0), (130, 70)), (100, 30))
    ann.commit()
    assert (np.asarray(data[64:128, 0:64]) == 1).all() and (np.asarray(data[:]) == 1).sum() == 64 * 64


def test_a_read_only_labels_layer_is_refused_with_a_reason(scene_viewer, predictor):
    import dask.array as da

    viewer, layer = scene_viewer
    viewer.add_labels(da.zeros((240, 320), dtype=np.uint32, chunks=64), name="lazy")
    with pytest.raises(ValueError, match="read-only"):
        Annotator(viewer, layer, predictor, labels_layer="lazy")


def test_channel_layers_feed_rgb_each_through_its_contrast_limits(make_napari_viewer):
    """Two 16-bit channels opened with channel_axis; the object is in channel 0 at 1000 over 0."""
    viewer = make_napari_viewer()
    data = np.zeros((2, 80, 100), np.uint16)
    data[0, 20:50, 30:70] = 1000
    data[1] = 3000
    nuclei, membrane = viewer.add_image(data, channel_axis=0, name=["nuclei", "membrane"])
    nuclei.contrast_limits = (0, 4000)           # 1000 shows dark: the stand-in network sees nothing
    dock, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
    widget.image.value = "nuclei"
    widget.green.value = "membrane"
    widget.start(ThresholdPredictor())
    ann = widget.annotator
    assert ann.channel_layers == [nuclei, membrane]
    with pytest.raises(ValueError, match="empty"):
        ann.segment(((15, 25), (55, 75)), (35, 50))
        ann.commit()
    nuclei.contrast_limits = (0, 1500)           # now 1000 shows bright (170 of 255)
    ann.segment(((15, 25), (55, 75)), (35, 50))
    assert ann.commit() == 1
    assert (ann.labels_layer.data[20:50, 30:70] == 1).all() and (ann.labels_layer.data == 1).sum() == 30 * 40
    crop = ann.session.image[10:12, 35:37]
    np.testing.assert_allclose(crop[..., 0], 0)
    low, high = membrane.contrast_limits
    np.testing.assert_allclose(crop[..., 1], np.clip((3000 - low) * 255 / (high - low), 0, 255), rtol=1e-5)
    viewer.add_image(np.zeros((10, 10), np.uint16), name="small")
    with pytest.raises(ValueError, match="has shape"):
        Annotator(viewer, model=ThresholdPredictor(), channel_layers=["nuclei", "small"])


def test_drawn_boxes_are_segmented_and_committed_together(make_napari_viewer):
    viewer = make_napari_viewer()
    image = np.zeros((80, 120, 3), np.uint8)
    image[10:30, 10:40] = 200
    image[40:70, 60:110] = 220
    viewer.add_image(image, scale=(2, 2), name="two")
    existing = viewer.add_labels(np.zeros((80, 120), np.uint32), scale=(2, 2), name="objects")
    existing.data[40:45, 60:110] = 5                            # someone's object on the second box
    viewer.add_shapes([np.array([[8, 8], [32, 42]]) * 2, np.array([[38, 58], [72, 112]]) * 2],
                      shape_type="rectangle", name="boxes")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
    widget.labels.value = "objects"
    widget.start(ThresholdPredictor())
    ann = widget.annotator
    assert widget.boxes_layer.value == "boxes"
    done = []
    ann.boxes_finished.connect(done.append)
    widget.boxes_button.clicked.emit()
    ann.predictions.work.wait()
    assert done == [2]
    labels = existing.data
    assert (labels[10:30, 10:40] == 6).all() and (labels == 6).sum() == 20 * 30
    assert (labels[45:70, 60:110] == 7).all() and (labels[40:45, 60:110] == 5).all()
    ann.undo()
    assert set(np.unique(labels)) == {0, 5}
    assert ann.segment_boxes("boxes") == [6, 7]                # the same from a script
    with pytest.raises(ValueError, match="not a shapes layer"):
        ann.boxes_of("two")


def test_boxes_drawn_in_a_2d_layer_over_a_stack_go_to_the_slice_on_screen(make_napari_viewer):
    viewer = make_napari_viewer()
    stack = np.zeros((3, 80, 120), np.uint8)
    stack[:, 10:30, 10:40] = 200
    layer = viewer.add_image(stack, name="stack")
    viewer.add_shapes([np.array([[8, 8], [32, 42]])], shape_type="rectangle", name="boxes", ndim=2)
    ann = Annotator(viewer, layer, ThresholdPredictor())
    viewer.dims.set_current_step(0, 1)
    assert ann.segment_boxes("boxes") == [1]
    labels = ann.labels_layer.data
    assert (labels[1, 10:30, 10:40] == 1).all() and not labels[0].any() and not labels[2].any()
