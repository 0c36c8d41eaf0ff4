"""3D propagation and lazily stored labels (zarr, pyramids) in the annotation session."""

import numpy as np
import pytest
from conftest import ThresholdPredictor

from napari_iog.predictor import IOGPredictor
from napari_iog.session import AnnotationSession


def disc(shape, centre, radius):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius ** 2


def moving_disc_stack(planes=9, shape=(96, 128), vanish_at=7, jump_at=None):
    """A disc drifting 3 px right per plane, growing slowly; gone from ``vanish_at`` on."""
    stack = np.zeros((planes, *shape), np.uint8)
    truth = np.zeros((planes, *shape), bool)
    for z in range(planes):
        if z >= vanish_at:
            continue
        col = 50 + 3 * z + (15 if jump_at is not None and z >= jump_at else 0)
        truth[z] = disc(shape, (48, col), 15 + z)
        stack[z][truth[z]] = 200
    return stack, truth


def committed_on(session, plane, box, inside):
    session.set_clicks([("corner", box[0]), ("corner", box[1]), ("inside", inside)], plane)
    return session.commit()


def test_propagation_follows_the_object_both_ways_with_one_id_and_one_undo():
    stack, truth = moving_disc_stack()
    labels = np.zeros(stack.shape, np.uint16)
    s = AnnotationSession(ThresholdPredictor(), stack, labels)
    label_id = committed_on(s, (3,), ((28, 41), (68, 83)), (48, 59))
    assert np.array_equal(labels[3] == label_id, truth[3])
    seen = []
    result = s.propagate(on_progress=seen.append)
    assert result.planes == [(4,), (5,), (6,), (2,), (1,), (0,)] == [step.plane for step in seen]
    assert result.stopped[1] == "the object left its inside point"   # plane 7 is empty
    assert result.stopped[-1] == "end of the stack"
    for z in range(7):
        assert np.array_equal(labels[z] == label_id, truth[z]), z
    assert not labels[7:].any() and set(np.unique(labels)) == {0, label_id}
    assert all(step.iou_with_previous > 0.7 for step in result.steps)
    with pytest.raises(ValueError, match="just propagated"):
        s.propagate()
    assert s.undo() == "commit"                     # the whole propagation at once
    assert np.array_equal(labels[3] == label_id, truth[3]) and not np.delete(labels, 3, axis=0).any()
    assert s.undo() == "commit" and not labels.any()


def test_propagation_stops_where_the_object_changes_too_much():
    stack, truth = moving_disc_stack(jump_at=6)
    labels = np.zeros(stack.shape, np.uint16)
    s = AnnotationSession(ThresholdPredictor(), stack, labels)
    committed_on(s, (3,), ((28, 41), (68, 83)), (48, 59))
    result = s.propagate(directions=(1,), min_iou=0.5)
    assert result.planes == [(4,), (5,)]
    assert "IoU with the previous plane" in result.stopped[1] and not labels[6].any()


def test_propagation_keeps_other_objects_and_can_be_cancelled():
    stack, truth = moving_disc_stack()
    labels = np.zeros(stack.shape, np.uint16)
    labels[5, 40:60, 60:70] = 7                     # someone else's object overlapping plane 5
    s = AnnotationSession(ThresholdPredictor(), stack, labels)
    label_id = committed_on(s, (3,), ((28, 41), (68, 83)), (48, 59))
    assert label_id == 8
    s.propagate(directions=(1,))
    assert (labels[5, 40:60, 60:70] == 7).all()
    assert ((labels[5] == label_id) == (truth[5] & (labels[5] != 7))).all()
    s.undo()
    polls = iter([False, False, True])
    result = s.propagate(directions=(1, -1), should_stop=lambda: next(polls))
    assert result.cancelled and result.planes == [(4,), (5,)]
    assert (labels[4] == label_id).any() and not (labels[6] == label_id).any()
    s.undo()
    assert not (labels[4:] == label_id).any() and (labels[5, 40:60, 60:70] == 7).all()


def test_propagation_through_time_and_channel_images():
    stack, truth = moving_disc_stack()
    rgb = np.repeat(stack[..., None], 3, axis=-1)                       # (T, Y, X, C)
    labels = np.zeros(stack.shape, np.uint16)
    s = AnnotationSession(ThresholdPredictor(), rgb, labels)
    committed_on(s, (0,), ((25, 26), (70, 74)), (48, 50))
    assert s.propagate().planes == [(z,) for z in range(1, 7)]
    tzyx = np.stack([stack, stack])                                     # (T, Z, Y, X) along Z
    labels = np.zeros(tzyx.shape, np.uint16)
    s = AnnotationSession(ThresholdPredictor(), tzyx, labels)
    committed_on(s, (1, 2), ((25, 30), (70, 80)), (48, 56))
    assert s.propagate(axis=1).planes == [(1, 3), (1, 4), (1, 5), (1, 6), (1, 1), (1, 0)]
    assert not labels[0].any()


def test_propagation_needs_a_stack_and_an_object():
    image = np.zeros((40, 40), np.uint8)
    s = AnnotationSession(ThresholdPredictor(), image, np.zeros((40, 40), np.uint8))
    with pytest.raises(ValueError, match="needs a stack"):
        s.propagate()
    stack, _ = moving_disc_stack()
    s = AnnotationSession(ThresholdPredictor(), stack, np.zeros(stack.shape, np.uint8))
    with pytest.raises(ValueError, match="commit one first"):
        s.propagate()
    with pytest.raises(ValueError, match="not on plane"):
        s.propagate(label_id=3, plane=(2,))


def test_propagation_with_the_network(calibrated_iog18):
    """The real predictor in the loop: whatever it predicts, one id and one undo."""
    stack, _ = moving_disc_stack(planes=4, vanish_at=4)
    rgb = np.repeat(stack[..., None], 3, axis=-1)
    labels = np.zeros(stack.shape, np.uint16)
    predictor = IOGPredictor(calibrated_iog18, device="cpu", precision="float32", warmup=False)
    s = AnnotationSession(predictor, rgb, labels)
    label_id = committed_on(s, (1,), ((28, 41), (68, 83)), (48, 59))
    before = labels.copy()
    result = s.propagate(min_iou=0.01, max_area_ratio=100)
    assert set(np.unique(labels)) <= {0, label_id}
    for step in result.steps:
        assert (labels[step.plane] == label_id).sum() == step.area > 0
    if result.steps:
        s.undo()
    assert np.array_equal(labels, before)


zarr = pytest.importorskip("zarr")


def test_labels_in_a_zarr_array_with_a_pyramid_are_written_and_undone():
    stack, truth = moving_disc_stack()
    labels = zarr.zeros(shape=stack.shape, chunks=(1, 32, 32), dtype="uint32")
    level1 = zarr.zeros(shape=(stack.shape[0], 48, 64), chunks=(1, 32, 32), dtype="uint32")
    level2 = zarr.zeros(shape=(stack.shape[0], 24, 32), chunks=(1, 32, 32), dtype="uint32")
    s = AnnotationSession(ThresholdPredictor(), stack, labels, pyramid=[level1, level2])
    assert s.next_id == 1
    label_id = committed_on(s, (3,), ((28, 41), (68, 83)), (48, 59))
    s.propagate(directions=(1,))
    full = labels[:]
    for z in range(3, 7):
        assert np.array_equal(full[z] == label_id, truth[z])
    np.testing.assert_array_equal(level1[:], full[:, ::2, ::2])
    np.testing.assert_array_equal(level2[:], full[:, ::4, ::4])
    s.undo()
    s.undo()
    assert not labels[:].any() and not level1[:].any() and not level2[:].any()


def test_next_id_of_stored_labels_is_found_chunk_by_chunk():
    labels = zarr.zeros(shape=(64, 64), chunks=(16, 16), dtype="uint16")
    labels[40:42, 10:12] = 41
    s = AnnotationSession(ThresholdPredictor(), np.zeros((64, 64), np.uint8), labels)
    assert s.next_id == 42
    s = AnnotationSession(ThresholdPredictor(), np.zeros((64, 64), np.uint8), labels, next_id_start=100)
    assert s.next_id == 100


def test_a_zarr_image_stack_is_read_plane_by_plane():
    stack, truth = moving_disc_stack()
    image = zarr.array(stack, chunks=(1, 32, 32))
    labels = np.zeros(stack.shape, np.uint16)
    s = AnnotationSession(ThresholdPredictor(), image, labels)
    committed_on(s, (3,), ((28, 41), (68, 83)), (48, 59))
    assert s.propagate().planes == [(4,), (5,), (6,), (2,), (1,), (0,)]
    for z in range(7):
        assert np.array_equal(labels[z] != 0, truth[z])


def test_propagation_stops_where_other_labels_cover_the_object():
    stack, truth = moving_disc_stack()
    labels = np.zeros(stack.shape, np.uint16)
    labels[5][truth[5]] = 7                         # another object exactly where this one goes
    s = AnnotationSession(ThresholdPredictor(), stack, labels)
    committed_on(s, (3,), ((28, 41), (68, 83)), (48, 59))
    result = s.propagate(directions=(1,))
    assert result.planes == [(4,)] and result.stopped[1] == "the object is covered by other labels"
    assert (labels[5][truth[5]] == 7).all() and not labels[6].any()
