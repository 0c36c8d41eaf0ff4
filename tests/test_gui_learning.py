"""Learning while annotating in a shown viewer, driven as a user drives it: objects committed
with real clicks and keys, the learned model put in use between objects (never during one), an
undone commit leaving the pool, the learned model saved, offered in the model list and loaded
back into the same annotator. A scripted learner stands in for the learner's process (tested on
its own in test_learning.py) so that when a better model arrives is up to the test."""

import copy

import pytest
import torch
from conftest import synthetic_scene

napari = pytest.importorskip("napari")

from gui_input import mouse_click, press_key, show_all, world_of  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402
from qtpy.QtTest import QTest  # noqa: E402

from napari_iog import zoo  # noqa: E402
from napari_iog._napari import learning as annotator_learning  # noqa: E402
from napari_iog.learning.background import LearnedWeights  # noqa: E402
from napari_iog.learning.learner import LearnReport  # noqa: E402
from napari_iog.models import build_model, load_model  # noqa: E402
from napari_iog.predictor import IOGPredictor  # noqa: E402

pytestmark = pytest.mark.napari

CORNERS, INSIDE = ((55, 65), (185, 235)), (120, 150)


class ScriptedLearner:
    """Keeps what it is sent; once ``release`` is set and it holds two objects, hands over a
    'better' model (the base with one bias changed)."""

    made: list["ScriptedLearner"] = []
    release = False

    def __init__(self, network, settings):
        self.network, self.keys, self.report, self.closed, self.delivered = network, [], None, False, False
        ScriptedLearner.made.append(self)

    def add(self, obj):
        assert obj.mask.any() and obj.rgb.shape[:2] == obj.mask.shape
        self.keys.append(obj.key)

    def remove(self, key):
        self.keys.remove(key)

    def poll(self, timeout=0.0):
        if not self.delivered:
            self.report = LearnReport(len(self.keys), 0, 0, None, None, None, False, 0, 0)
        if not (ScriptedLearner.release and len(self.keys) >= 2 and not self.delivered):
            return None
        self.delivered = True
        state = copy.deepcopy(self.network.state_dict())
        name = next(k for k in state if k.endswith("bias"))
        state[name] = state[name] + 1.0
        self.report = LearnReport(len(self.keys), 2, 4, 0.70, 0.85, 0.85, True, 12, 1)
        return LearnedWeights(1, state, self.report)

    def close(self):
        self.closed = True


@pytest.fixture
def annotating(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(annotator_learning, "BackgroundLearner", ScriptedLearner)
    monkeypatch.setattr(ScriptedLearner, "made", [])
    monkeypatch.setattr(ScriptedLearner, "release", False)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(synthetic_scene()[0], name="scene")
    _, finetune = viewer.window.add_plugin_dock_widget("napari-iog", "IOG fine-tune")
    _, dock = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
    show_all(viewer)
    network = build_model("iog-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=0).eval()
    network.card = {"name": "tiny (test)"}
    dock.start(IOGPredictor(network, device="cpu", precision="float32", warmup=False))
    return viewer, dock, finetune


def click_object(viewer, ann):
    for point in (*CORNERS, INSIDE):
        mouse_click(viewer, world_of(ann.image_layer, point))
    ann.wait()


def test_the_annotator_learns_swaps_between_objects_undoes_saves_and_reloads(annotating, qtbot):
    viewer, dock, finetune = annotating
    ann = dock.annotator
    controls = dock.learning
    assert controls.toggle.value and controls.learning.on                  # on by default for an IOG model
    assert "learning" in controls.status.value and not controls.save_button.enabled
    base = ann.predictor
    dock.overwrite.native.click()                                            # each object over the last one
    for _ in range(2):
        click_object(viewer, ann)
        press_key(viewer, "Enter")
    learner = ScriptedLearner.made[-1]
    assert learner.keys == [1, 2]                                            # both commits reached the learner
    click_object(viewer, ann)                                                # object 3 in progress ...
    ScriptedLearner.release = True                                           # ... when a better model arrives
    qtbot.wait(3 * annotator_learning.POLL_MS)
    assert ann.predictor is base and controls.learning.pending is not None  # not during an object
    press_key(viewer, "Enter")                                               # commit: between objects now
    assert ann.predictor is not base and dock.annotator is ann
    bias = next(k for k in base.network.state_dict() if k.endswith("bias"))
    assert torch.allclose(ann.predictor.network.state_dict()[bias], base.network.state_dict()[bias] + 1.0)
    qtbot.waitUntil(lambda: "0.70 -> 0.85" in controls.status.value, timeout=5_000)
    assert "learned from 2 objects" in controls.status.value and controls.save_button.enabled
    assert learner.keys == [1, 2, 3]
    press_key(viewer, "U")                                                   # undo the last commit ...
    assert learner.keys == [1, 2] and not (ann.labels_layer.data == 3).any()  # ... it leaves the pool

    QTest.mouseClick(controls.save_button.native, Qt.MouseButton.LeftButton)
    saved = zoo.list_finetuned()
    assert len(saved) == 1 and saved[0].name.startswith("tiny-test-learned-")
    card = load_model(saved[0]).card
    assert card["learned_while_annotating"]["objects"] == 2
    assert card["learned_while_annotating"]["miou@3_learned"] == 0.85
    dock.reset_choices()
    finetune.reset_choices()
    assert str(saved[0]) in [str(c) for c in dock.model.choices]            # both lists offer it
    assert str(saved[0]) in [str(c) for c in finetune.base.choices]

    finetune.out_path = saved[0]                                             # "Use this model", as after a run
    finetune.use_button.enabled = True
    QTest.mouseClick(finetune.use_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dock.loading.running and "learned_while_annotating" in ann.predictor.card,
                    timeout=60_000)
    assert dock.annotator is ann and len([la for la in viewer.layers if la.name.startswith("Labels")]) <= 1
    reloaded = ann.predictor.network.state_dict()
    assert torch.allclose(reloaded[bias], base.network.state_dict()[bias] + 1.0)
    click_object(viewer, ann)
    press_key(viewer, "Enter")
    assert ScriptedLearner.made[-1] is not learner and learner.closed        # learning goes on from the new model

    controls.toggle.native.click()                                           # off: the learner stops
    assert not controls.learning.on and ScriptedLearner.made[-1].closed
    assert "learning off" in controls.status.value
