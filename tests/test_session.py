"""The annotation session on plain arrays: roles, commit, the preserve rule, undo."""

import numpy as np
import pytest
from conftest import synthetic_scene

from napari_iog import geometry as G
from napari_iog.models import build_model
from napari_iog.predictor import IOGPredictor
from napari_iog.session import AnnotationSession


@pytest.fixture(scope="module")
def predictor(calibrated_iog18):
    return IOGPredictor(calibrated_iog18, device="cpu", precision="float32", warmup=False)


@pytest.fixture
def session(predictor):
    image, _ = synthetic_scene()
    return AnnotationSession(predictor, image, np.zeros(image.shape[:2], np.uint16))


def three_clicks(s, corners=((55, 65), (185, 235)), inside=(120, 150)):
    assert s.add_click(corners[0]) is None and s.next_role() == "corner"
    assert s.add_click(corners[1]) is None and s.next_role() == "inside"
    return s.add_click(inside)


def test_three_clicks_commit_a_new_object_inside_the_box(session):
    res = three_clicks(session)
    assert res is not None and session.next_role() == "positive"
    label_id = session.commit()
    assert label_id == 1
    written = session.labels == 1
    assert written.any() and np.array_equal(written, res.mask)
    outside = np.ones(written.shape, bool)
    outside[res.window.slices()] = False
    assert not written[outside].any()
    assert session.clicks == [] and session.current is None


def test_second_object_gets_the_next_id_and_leaves_the_first_untouched(session):
    three_clicks(session)
    session.commit()
    first = session.labels.copy()
    three_clicks(session, corners=((100, 120), (230, 310)), inside=(170, 220))
    assert session.commit() == 2
    assert np.array_equal(session.labels[first == 1], first[first == 1])  # pixel for pixel
    assert ((session.labels == 2) & (first != 0)).sum() == 0  # preserve rule


def test_overwrite_replaces_existing_labels(predictor):
    image, _ = synthetic_scene()
    labels = np.full(image.shape[:2], 9, np.uint16)
    s = AnnotationSession(predictor, image, labels)
    three_clicks(s)
    with pytest.raises(ValueError, match="already labelled"):
        s.commit()
    assert (labels == 9).all()
    s.overwrite = True
    assert s.commit() == 10
    assert (labels == 10).any()


def test_undo_click_then_commit_restores_exactly(session):
    three_clicks(session)
    before_negative = session.current.probability.copy()
    session.add_click((180, 230), negative=True)
    assert session.points("negative") == [(180.0, 230.0)]
    assert session.undo() == "click"
    np.testing.assert_array_equal(session.current.probability, before_negative)
    session.commit()
    assert session.undo() == "commit"
    assert not session.labels.any() and session.next_id == 1
    assert session.undo() is None


def test_ids_are_not_reused_after_a_deletion(session):
    three_clicks(session)
    session.commit()
    session.labels[session.labels == 1] = 0  # the user erases object 1 by hand
    three_clicks(session)
    assert session.commit() == 2


def test_bad_clicks_leave_the_session_unchanged(session):
    with pytest.raises(G.ClickError, match="outside the image"):
        session.add_click((500, 10))
    session.add_click((55, 65))
    with pytest.raises(G.ClickError, match="only 1 x"):
        session.add_click((55, 200))
    assert session.clicks == [("corner", (55.0, 65.0))]
    session.add_click((185, 235))
    with pytest.raises(G.ClickError, match="outside the box"):
        session.add_click((200, 10))
    with pytest.raises(G.ClickError, match="inside the object before"):
        session.add_click((120, 150), role="negative")
    assert len(session.clicks) == 2 and session.current is None and not session.labels.any()
    with pytest.raises(ValueError, match="no object"):
        session.commit()


def test_a_slice_of_a_stack_is_written_alone(predictor):
    image, _ = synthetic_scene()
    stack = np.zeros((3,) + image.shape[:2], np.uint32)
    s = AnnotationSession(predictor, image, stack[1])
    three_clicks(s)
    s.commit()
    assert stack[1].any() and not stack[0].any() and not stack[2].any()


def test_labels_must_match_the_image(predictor):
    image, _ = synthetic_scene()
    with pytest.raises(ValueError, match="differ in size"):
        AnnotationSession(predictor, image, np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        AnnotationSession(predictor, image, np.zeros(image.shape[:2], np.float32))


def test_a_stack_annotated_by_plane_changes_only_that_plane(predictor):
    image, _ = synthetic_scene()
    images = np.stack([image, image, image])
    stack = np.zeros((3,) + image.shape[:2], np.uint32)
    s = AnnotationSession(predictor, images, stack)
    s.add_click((55, 65), plane=(2,))
    with pytest.raises(G.ClickError, match="on plane \\(2,\\)"):
        s.add_click((185, 235), plane=(1,))
    s.add_click((185, 235), plane=(2,))
    s.add_click((120, 150), plane=(2,))
    assert s.commit() == 1
    assert stack[2].any() and not stack[:2].any()
    assert s.last_commit[1] == (2,)
    s.undo()
    assert not stack.any()
    with pytest.raises(G.ClickError, match="not a plane"):
        s.add_click((55, 65), plane=(3,))


def test_a_stale_prediction_is_dropped(session):
    session.add_click((55, 65))
    session.add_click((185, 235))
    session.add_click((120, 150), predict=False)
    version, task = session.request()
    session.add_click((180, 230), negative=True, predict=False)  # a click arrives meanwhile
    assert not session.accept(version, task())
    assert session.current is None and not session.up_to_date
    version, task = session.request()
    assert session.accept(version, task()) and session.up_to_date
    assert session.current.clicks["negative"] == [(180.0, 230.0)]


def test_commit_refuses_a_prediction_older_than_the_clicks(session):
    three_clicks(session)
    session.add_click((180, 230), negative=True, predict=False)
    with pytest.raises(ValueError, match="not finished"):
        session.commit()
    assert not session.labels.any()
    session.update()
    assert session.commit() == 1


def test_set_clicks_replaces_the_object_or_changes_nothing(session):
    three_clicks(session)
    before = list(session.clicks)
    with pytest.raises(G.ClickError, match="outside the box"):
        session.set_clicks([("corner", (55, 65)), ("corner", (185, 235)), ("inside", (20, 20))])
    assert session.clicks == before
    session.set_clicks([("corner", (60, 70)), ("corner", (185, 235)), ("inside", (120, 150))])
    assert session.current.box.as_tuple() == (60, 70, 185, 235)


def test_extreme_points_mode_for_dextr():
    image, _ = synthetic_scene()
    dextr = IOGPredictor(build_model("dextr-resnet101", seed=0), device="cpu", precision="float32",
                         warmup=False)
    # untrained weights: a low threshold so that the object is not empty
    s = AnnotationSession(dextr, image, np.zeros(image.shape[:2], np.uint8), predict_options={"threshold": 1e-3})
    assert s.mode == "extreme" and s.next_role() == "extreme"
    with pytest.raises(G.ClickError, match="extreme points only"):
        s.add_click((60, 150), role="corner")
    for p in [(60, 150), (180, 150), (120, 70), (120, 230)]:
        s.add_click(p)
    assert s.current is not None and s.current.box.as_tuple() == (60, 70, 180, 230)
    with pytest.raises(G.ClickError, match="four extreme points are set"):
        s.add_click((100, 100))
    s.commit()
    assert s.labels.any()


def test_redo_brings_back_an_undone_click_and_an_undone_commit_exactly(session):
    three_clicks(session)
    session.add_click((180, 230), negative=True)
    with_negative = session.current.probability.copy()
    assert session.undo() == "click" and session.can_redo
    assert session.redo() == "click"
    assert session.points("negative") == [(180.0, 230.0)]
    np.testing.assert_array_equal(session.current.probability, with_negative)
    assert session.redo() is None                       # nothing more to redo
    label_id = session.commit()
    committed = session.labels.copy()
    assert session.undo() == "commit" and not session.labels.any()
    assert session.redo() == "commit"
    np.testing.assert_array_equal(session.labels, committed)
    assert session.next_id == label_id + 1              # the redone object keeps its id


def test_a_new_click_or_commit_ends_what_can_be_redone(session):
    three_clicks(session)
    session.undo()
    session.add_click((120, 150))                       # a new inside click instead
    assert not session.can_redo and session.redo() is None
    session.commit()
    session.undo()
    three_clicks(session)
    assert not session.can_redo


def test_redo_never_overwrites_labels_changed_since_the_undo(session):
    three_clicks(session)
    session.commit()
    session.undo()
    session.labels[120, 150] = 7                        # the user painted there meanwhile
    with pytest.raises(ValueError, match="labels were changed"):
        session.redo()
    assert session.labels[120, 150] == 7 and (session.labels != 7).sum() == session.labels.size - 1


def test_a_new_predictor_predicts_the_object_in_progress_again(session, predictor):
    first = three_clicks(session)
    other = IOGPredictor(build_model("iog-resnet18", seed=9), device="cpu", precision="float32", warmup=False)
    version = session.version
    session.use_predictor(other)
    assert session.predictor is other and session.version > version and not session.up_to_date
    assert [r for r, _ in session.clicks] == ["corner", "corner", "inside"]
    again = session.update()
    assert not np.array_equal(again.probability, first.probability)
    session.use_predictor(predictor)
