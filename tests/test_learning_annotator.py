"""The annotator's learning without Qt (a ``ViewerModel``): what reaches the learner (commits,
undos, brush fixes), when a better model is put in use (between objects only), saving it, and
what happens when a model cannot learn or the learner fails."""

import copy

import conftest
import numpy as np
import pytest
import torch
from conftest import GuidanceFollower, synthetic_scene

from napari_iog import Annotator, zoo
from napari_iog import geometry as G
from napari_iog._napari.learning import AnnotatorLearning
from napari_iog.learning.background import LearnedWeights
from napari_iog.learning.learner import LearnReport
from napari_iog.learning.pool import object_region
from napari_iog.models import build_model, load_model
from napari_iog.predictor import IOGPredictor

napari = pytest.importorskip("napari")
from napari.components import ViewerModel  # noqa: E402

BOX, INSIDE = ((55, 65), (185, 235)), (120, 150)


class RecordingLearner(conftest.RecordingLearner):
    def better(self):
        state = copy.deepcopy(self.network.state_dict())
        name = next(k for k in state if k.endswith("bias"))
        state[name] = state[name] + 1.0
        self.news.append(LearnedWeights(1, state, LearnReport(len(self.objects), 2, 4, 0.7, 0.9, 0.9, True, 8, 1)))
        return name


@pytest.fixture
def learning(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    viewer = ViewerModel()
    layer = viewer.add_image(synthetic_scene()[0])
    network = build_model("iog-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=0).eval()
    network.card = {"name": "tiny (test)"}
    ann = Annotator(viewer, layer, IOGPredictor(network, device="cpu", precision="float32", warmup=False))
    ann.overwrite = True
    learning = AnnotatorLearning(ann, learner_factory=RecordingLearner)
    assert learning.start() is None
    return ann, learning


def commit(ann):
    ann.segment(BOX, INSIDE)
    return ann.commit()


def test_commits_undos_and_brush_fixes_reach_the_learner(learning):
    ann, learning = learning
    assert learning.learner is None                          # the process starts with the first commit
    first = commit(ann)
    learner = learning.learner
    obj = learner.objects[first]
    assert obj.mask.sum() == (ann.labels_layer.data == first).sum()
    assert obj.clicks["corners"] and obj.clicks["inside"]
    ann.labels_layer.paint((10, 10), first, refresh=False)   # the user's brush adds to object 1 ...
    learning.poll()                                          # (what the annotator's timer runs)
    fixed = learner.objects[first]
    assert fixed.mask.sum() == (ann.labels_layer.data == first).sum() > obj.mask.sum()
    second = commit(ann)
    assert set(learner.objects) == {first, second}
    ann.undo()                                               # an undone commit leaves the pool
    assert set(learner.objects) == {first}
    ann.redo()
    assert set(learner.objects) == {first, second}


def test_a_better_model_is_put_in_use_between_objects_only_and_saved(learning):
    ann, learning = learning
    base = ann.predictor
    commit(ann)
    bias = learning.learner.better()
    ann.segment(BOX, INSIDE)                                 # an object in progress
    learning.poll()
    assert ann.predictor is base and learning.pending is not None
    with pytest.raises(ValueError, match="nothing learned yet"):
        learning.save()
    ann.commit()                                             # between objects: now
    assert ann.predictor is not base
    assert torch.allclose(ann.predictor.network.state_dict()[bias], base.network.state_dict()[bias] + 1.0)
    assert not ann.labels_layer.data[0, 0]                   # the learner never wrote a label
    path = learning.save()
    assert path.parent == zoo.finetuned_dir() and path.name.startswith("tiny-test-learned-")
    card = load_model(path).card
    assert card["base"] == "tiny (test)"
    assert card["learned_while_annotating"]["objects"] == 2
    assert card["learned_while_annotating"]["miou@3_base"] == 0.7
    learning.learner.news.append(LearnedWeights(2, base.network.state_dict(),              # the base does
                                                LearnReport(2, 0, 4, 0.9, 0.9, 0.8, True, 9, 2)))  # better again
    learning.poll()
    assert ann.predictor is base                             # the very predictor the user started with
    with pytest.raises(ValueError, match="nothing learned yet"):
        learning.save()


def test_a_model_that_cannot_learn_says_why_and_a_failing_learner_stops_learning_only(tmp_path):
    viewer = ViewerModel()
    layer = viewer.add_image(synthetic_scene()[0])
    ann = Annotator(viewer, layer, IOGPredictor(GuidanceFollower(), device="cpu", precision="float32",
                                                warmup=False))
    said = []
    learning = AnnotatorLearning(ann, learner_factory=RecordingLearner)
    learning.status_changed.connect(said.append)
    assert "cannot learn" in learning.start() and not learning.on
    commit(ann)
    assert learning.learner is None and said and "cannot learn" in said[-1]

    network = build_model("iog-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=0).eval()
    ann.use_predictor(IOGPredictor(network, device="cpu", precision="float32", warmup=False))
    problems = []
    ann.notified.connect(problems.append)
    assert learning.start() is None
    ann.overwrite = True
    commit(ann)
    learner = learning.learner
    learner.news.append(RuntimeError("the learner stopped: MemoryError"))
    learning.poll()
    assert learner.closed and learning.learner is None and not learning.on
    assert problems and "annotating goes on" in problems[-1]
    label_id = commit(ann)                                   # annotating goes on
    assert (ann.labels_layer.data == label_id).any()
    assert np.unique(ann.labels_layer.data).size >= 2


def test_objects_of_any_slice_of_a_stack_reach_the_learner(tmp_path):
    image, _ = synthetic_scene()
    stack = np.stack([np.roll(image, 20 * k, axis=1) for k in range(3)])
    viewer = ViewerModel()
    layer = viewer.add_image(stack, rgb=True)
    network = build_model("iog-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=0).eval()
    ann = Annotator(viewer, layer, IOGPredictor(network, device="cpu", precision="float32", warmup=False))
    learning = AnnotatorLearning(ann, learner_factory=RecordingLearner)
    learning.start()
    ann.segment(BOX, INSIDE, plane=(2,))
    label_id = ann.commit()
    obj = learning.learner.objects[label_id]
    assert (ann.labels_layer.data[2] == label_id).sum() == obj.mask.sum() > 0
    assert not (ann.labels_layer.data[:2] == label_id).any()
    plane = ann.labels_layer.data[2] == label_id
    region = object_region(G.Box(0, 0, *[n - 1 for n in plane.shape]), plane)
    assert np.array_equal(obj.rgb, G.crop_padded(stack[2], region))      # slice 2's pixels, not slice 0's
