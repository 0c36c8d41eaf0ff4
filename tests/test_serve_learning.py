"""`napari-iog serve --learn`: objects committed by several annotators teach one model on the
server, a better model becomes the next version without changing under an object, and the
annotator's learning sends its commits and undos there. A real uvicorn server on a free
loopback port, stopped by each test."""

import copy
import functools
import json
import time

import conftest
import numpy as np
import pytest
from conftest import calibrate, synthetic_scene
from local_server import Server

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from napari_iog import build_model, zoo  # noqa: E402
from napari_iog.learning.background import BackgroundLearner, LearnedWeights  # noqa: E402
from napari_iog.learning.learner import LearnReport, LearnSettings  # noqa: E402
from napari_iog.learning.pool import LearnedObject  # noqa: E402
from napari_iog.models import load_model  # noqa: E402
from napari_iog.predictor import IOGPredictor  # noqa: E402
from napari_iog.remote import RemoteError, RemotePredictor  # noqa: E402
from napari_iog.remote_codec import encode_array, encode_mask  # noqa: E402
from napari_iog.serve import make_app  # noqa: E402
from napari_iog.serve.learning import ServerLearning  # noqa: E402

TOKEN = "a-test-token-of-some-length"
CORNERS, INSIDE = ((55, 65), (185, 235)), (120, 150)


class RecordingLearner(conftest.RecordingLearner):
    """``better()`` hands the server a model whose last bias is +1; ``instances``: those made."""

    instances: list = []

    def __init__(self, network, settings):
        super().__init__(network, settings)
        RecordingLearner.instances.append(self)

    def better(self):
        state = copy.deepcopy(self.network.state_dict())
        name = [k for k in state if k.endswith("bias")][-1]
        state[name] = state[name] + 1.0
        report = LearnReport(len(self.objects), len(self.objects), 2, 0.7, 0.9, 0.9, True, 8, 1)
        self.news.append(LearnedWeights(1, state, report))


def tiny_predictor():
    network = calibrate(build_model("iog-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=3))
    network.card = {"name": "tiny (test)"}
    return IOGPredictor(network, device="cpu", precision="float32", backend="torch", warmup=False)


def committed_object(key="1"):
    image, mask = synthetic_scene(120, 140, seed=1, center=(60, 70), radii=(25, 35))
    clicks = {"corners": [(35, 35), (85, 105)], "inside": [(60, 70)], "positive": [(50, 50)], "negative": []}
    return LearnedObject(key, image, mask, clicks)


@pytest.fixture
def learning_server(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    RecordingLearner.instances.clear()
    local = tiny_predictor()
    learning = ServerLearning(local, learner_factory=RecordingLearner, poll_seconds=0.02)
    running = Server(make_app(local, TOKEN, learning=learning))
    yield running, local, RecordingLearner.instances[-1]
    running.stop()
    learning.close()


def wait_for(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_two_annotators_teach_one_model_which_never_changes_under_an_object(learning_server):
    running, local, learner = learning_server
    image, _ = synthetic_scene()
    ann_a, ann_b = (RemotePredictor(running.url, token=TOKEN) for _ in range(2))
    assert ann_a.learns and ann_a.model_version == 0
    assert ann_a.learn(committed_object(), "a:1")["objects"] == 1
    assert ann_b.learn(committed_object(), "b:1")["objects"] == 2            # one pool for the project
    sent = learner.objects["b:1"]
    np.testing.assert_array_equal(sent.mask, committed_object().mask)
    assert sent.clicks["positive"] == [(50.0, 50.0)] and sent.rgb.dtype == np.uint8
    assert ann_a.forget("a:1")["removed"] and set(learner.objects) == {"b:1"}   # an undo takes only its own
    assert not ann_a.forget("a:1")["removed"]

    first = ann_a.predict(image, corners=CORNERS, inside=INSIDE)            # annotator A starts an object
    assert ann_a.model_version == 0
    learner.better()                                                          # the server learns meanwhile
    wait_for(lambda: ann_b.learning_status()["model_version"] == 1)
    corrected = ann_a.predict(image, corners=CORNERS, inside=INSIDE, negative=[(175, 225)])
    assert ann_a.model_version == 0                                           # A's object: the same model
    same = local.predict(image, corners=CORNERS, inside=INSIDE, negative=[(175, 225)])
    np.testing.assert_array_equal(corrected.mask, same.mask)
    fresh = ann_b.predict(image, corners=CORNERS, inside=INSIDE)              # a new object: the new model
    assert ann_b.model_version == 1 and (fresh.mask ^ first.mask).any()
    ann_a.predict(image, corners=CORNERS, inside=INSIDE)                      # A's next object too
    assert ann_a.model_version == 1

    status = ann_b.learning_status()
    assert status["objects"] == 1 and status["report"]["learned_from"] == 1 and "learned from 1" in status["text"]
    path = ann_a.save_learned()                                               # saved on the server
    card = load_model(path).card
    assert card["base"] == "tiny (test)" and card["learned_while_annotating"]["objects"] == 1
    assert str(zoo.finetuned_dir()) in path


@pytest.mark.parametrize("change, said", [
    (lambda b: b.update(mask=encode_mask(np.ones((10, 10), bool))), "packed bits"),
    (lambda b: b.update(mask=encode_mask(np.zeros((120, 140), bool))), "no pixel"),
    (lambda b: b.update(rgb=encode_array(np.zeros((120, 140), np.uint8))), "RGB uint8"),
    (lambda b: b.update(inside=[[900, 10]]), "the clicks"),
    (lambda b: b.update(corners=[[35, 35]]), "two corners"),
    (lambda b: b.update(corners=[]), "two corners"),
    (lambda b: b.update(key=""), "key"),
    (lambda b: b.update(key="k" * 201), "key"),
    (lambda b: b.update(negative=[[60, 60]] * 65), "more than 64"),
])
def test_a_learning_server_refuses_bad_objects_with_a_clear_4xx(learning_server, change, said):
    running, _, learner = learning_server
    obj = committed_object()
    body = {"key": "a:1", "rgb": encode_array(obj.rgb), "mask": encode_mask(obj.mask), "corners": [[35, 35], [85, 105]],
            "inside": [[60, 70]]}
    change(body)
    remote = RemotePredictor(running.url, token=TOKEN)
    with pytest.raises(RemoteError, match="answered 4") as raised:
        remote._call("POST", "/learn", body)
    assert said in str(raised.value) and not learner.objects
    with pytest.raises(RemoteError, match="refused the token"):
        RemotePredictor(running.url, token="wrong").learn(obj, "a:1")
    assert not learner.objects


def test_a_server_that_does_not_learn_says_how_to_start_one():
    running = Server(make_app(tiny_predictor(), TOKEN))
    try:
        remote = RemotePredictor(running.url, token=TOKEN)
        assert not remote.learns
        with pytest.raises(RemoteError, match="409.*--learn"):
            remote.learn(committed_object(), "a:1")
    finally:
        running.stop()


def test_the_servers_learner_process_trains_on_the_objects_sent():
    local = tiny_predictor()
    settings = LearnSettings(batch_size=2, lr=1e-3, min_held_out=2, min_gain=0.0, seconds_per_object=0.2)
    # the real learner process, at priority 0: at nice 19 a busy CI machine can starve it for minutes
    learning = ServerLearning(local, settings, poll_seconds=0.1,
                              learner_factory=functools.partial(BackgroundLearner, priority=0))
    running = Server(make_app(local, TOKEN, learning=learning))
    try:
        remote = RemotePredictor(running.url, token=TOKEN)
        for key in range(4):
            remote.learn(committed_object(), f"a:{key}")
        wait_for(lambda: (remote.learning_status()["report"] or {}).get("steps", 0) > 0, seconds=300)
        status = remote.learning_status()
        assert status["objects"] == 4 and status["error"] is None
    finally:
        running.stop()
        learning.close()
    assert not learning.learner.alive


def test_the_annotators_commits_and_undos_reach_the_servers_learner(learning_server, monkeypatch):
    pytest.importorskip("napari")
    from napari.components import ViewerModel

    from napari_iog import Annotator
    from napari_iog._napari.learning import AnnotatorLearning
    from napari_iog.remote_learning import RemoteLearner

    running, _, learner = learning_server
    monkeypatch.setattr(RemoteLearner, "__init__", _quick_remote_learner(RemoteLearner.__init__))
    viewer = ViewerModel()
    layer = viewer.add_image(synthetic_scene()[0])
    ann = Annotator(viewer, layer, RemotePredictor(running.url, token=TOKEN))
    said = []
    learning = AnnotatorLearning(ann)
    learning.status_changed.connect(said.append)
    assert learning.start() is None
    ann.segment(CORNERS, INSIDE)
    label = ann.commit()
    wait_for(lambda: any(key.endswith(f":{label}") for key in learner.objects))
    (key,) = learner.objects
    assert learner.objects[key].mask.sum() == (ann.labels_layer.data == label).sum()
    ann.undo()
    wait_for(lambda: not learner.objects)
    ann.redo()
    wait_for(lambda: set(learner.objects) == {key})
    learner.better()
    wait_for(lambda: learning.poll() is not None and learning.in_use is not None)
    assert said[-1].startswith("on the server: learned from 1 objects") and "project's objects" in said[-1]
    path = learning.save()
    assert load_model(str(path)).card["learned_while_annotating"]["objects"] == 1
    assert not ann.labels_layer.data[0, 0]                  # the learner never wrote a label
    learning.stop()


def _quick_remote_learner(init):
    def quick(self, remote, client=None, status_seconds=0.05):
        init(self, remote, client, status_seconds)
    return quick


def test_a_learner_whose_server_is_away_keeps_the_objects_until_it_is_back(learning_server):
    from napari_iog.remote_learning import RemoteLearner

    running, local, learner = learning_server
    remote = RemotePredictor(running.url, token=TOKEN)
    client = RemoteLearner(remote, client="me", status_seconds=0.05)
    try:
        running.stop()
        client.add(committed_object("1"))
        client.add(committed_object("2"))
        wait_for(lambda: client.error is not None)
        assert "cannot be reached" in client.error and not learner.objects
        client.remove("2")                                  # undone while away: never sent
        back = Server(running.server.config.app)
        remote.url = back.url
        wait_for(lambda: set(learner.objects) == {"me:1"})
        wait_for(lambda: client.error is None and client.report is not None)
        assert json.dumps(client.report.to_dict())
        back.stop()
    finally:
        client.close()
    assert not client.alive


@pytest.mark.napari
def test_in_the_viewer_objects_go_to_a_learning_server_and_its_learned_model_is_saved_there(
        make_napari_viewer, learning_server, qtbot, monkeypatch):
    pytest.importorskip("napari")
    from gui_input import mouse_click, press_key, show_all, world_of

    from napari_iog.remote_learning import RemoteLearner

    running, _, learner = learning_server
    monkeypatch.setenv("NAPARI_IOG_TOKEN", TOKEN)
    monkeypatch.setattr(RemoteLearner, "__init__", _quick_remote_learner(RemoteLearner.__init__))
    viewer = make_napari_viewer(show=True)
    viewer.add_image(synthetic_scene()[0], name="scene")
    _, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
    show_all(viewer)
    widget.model.value = "(a server)"
    widget.server.value = running.url
    widget.start()
    qtbot.waitUntil(lambda: widget.annotator is not None, timeout=30_000)
    ann, controls = widget.annotator, widget.learning
    assert controls.toggle.enabled and controls.toggle.value           # the server learns: so can you
    for point in (*CORNERS, INSIDE):
        mouse_click(viewer, world_of(ann.image_layer, point))
    ann.wait()
    assert "learning (model v0)" in widget.status.value
    press_key(viewer, "Enter")
    qtbot.waitUntil(lambda: len(learner.objects) == 1, timeout=30_000)
    qtbot.waitUntil(lambda: controls.status.value.startswith("on the server"), timeout=30_000)
    learner.better()
    qtbot.waitUntil(lambda: "learned from 1" in controls.status.value, timeout=30_000)
    assert controls.save_button.enabled
    for point in (*CORNERS, INSIDE):                                    # the next object: the new model
        mouse_click(viewer, world_of(ann.image_layer, point))
    ann.wait()
    assert "learning (model v1)" in widget.status.value
    press_key(viewer, "Escape")
    path = controls.save()
    assert path is not None and load_model(str(path)).card["learned_while_annotating"]["objects"] == 1
    press_key(viewer, "U")                                             # the undo reaches the server too
    qtbot.waitUntil(lambda: not learner.objects, timeout=30_000)
