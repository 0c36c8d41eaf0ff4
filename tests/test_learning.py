"""Learning while annotating, without napari: the pool of committed objects, the learner that
trains a copy and replaces the model in use only when it does better on objects it has not
learned from, the learner's own process, and the simulated session of ``evaluate --learn``."""

import json

import numpy as np
import pytest
import torch
from conftest import synthetic_scene

from napari_iog import geometry as G
from napari_iog.cli import main as cli
from napari_iog.evaluation.datasets import Instance
from napari_iog.learning import (
    BackgroundLearner,
    LearnedObject,
    Learner,
    LearnSettings,
    ObjectPool,
    learned_object,
    simulate,
)
from napari_iog.models import build_model, save_model


def tiny_network():
    return build_model("iog-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=0).eval()


def scene_object(key, seed=0, corrected=True, size=120):
    """A committed object as the pool keeps it: an ellipse in a textured region."""
    image, mask = synthetic_scene(size, size, seed=seed, center=(size // 2, size // 2), radii=(25, 35))
    clicks = {"corners": [(35, 25), (85, 95)], "inside": [(60, 60)], "positive": [(50, 40)] if corrected else [],
              "negative": []}
    return LearnedObject(key, image, mask, clicks)


def quick_settings(**changes):
    values = dict(batch_size=2, lr=1e-3, correction_prob=0.5, min_held_out=2, min_gain=0.0)
    values.update(changes)
    return LearnSettings(**values)


def test_the_pool_holds_out_the_newest_corrected_objects_and_lets_an_undone_one_go():
    pool = ObjectPool(max_held_out=10, min_held_out=2)
    for key in range(6):
        pool.add(scene_object(key, corrected=key != 3))
    assert [o.key for o in pool.held_out()] == [4, 5]          # newest corrected, never the uncorrected 3
    assert [o.key for o in pool.learnable()] == [0, 1, 2, 3]
    for obj in pool.learnable():
        obj.trained = True
    assert pool.remove(5) and 5 not in pool and not pool.remove(5)
    assert [o.key for o in pool.held_out()] == [4]             # a learned-from object is never held out again
    assert [o.key for o in pool.learnable()] == [0, 1, 2, 3]


def test_a_committed_object_keeps_its_mask_where_it_was_written_even_at_the_image_edge():
    image = np.arange(100 * 80 * 3, dtype=np.uint8).reshape(100, 80, 3)
    plane = np.zeros((100, 80), bool)
    plane[2:30, 50:79] = True                                  # near the top right corner
    window = G.Box(0, 40, 39, 79)
    obj = learned_object(7, lambda region: G.crop_padded(image, region), (100, 80), window,
                         plane[window.slices()], {"corners": [(2, 50)], "inside": [(10, 60)]})
    region = G.mask_box(plane).grow(G.RELAX + int(0.25 * 29) + 2)
    assert obj.key == 7 and obj.mask.shape == obj.rgb.shape[:2] == (region.height, region.width)
    assert obj.mask.sum() == plane.sum()
    assert np.array_equal(obj.mask, G.crop_padded(plane, region))
    assert np.array_equal(obj.rgb, G.crop_padded(image, region))                 # zero outside the image
    assert obj.clicks["inside"] == [(10 - region.r0, 60 - region.c0)]            # in the region's pixels
    assert learned_object(8, lambda r: None, (100, 80), window, np.zeros((40, 40), bool)) is None


def test_the_candidate_replaces_the_model_in_use_only_when_it_scores_higher(monkeypatch):
    learner = Learner(tiny_network(), quick_settings(min_gain=0.01))
    for key in range(4):
        learner.add(scene_object(key, seed=key))
    scores = {"base": 0.80, "in use": 0.80, "candidate": 0.805}

    def fake_miou(cache, model, objects):
        kind = "candidate" if cache is None else ("base" if cache == "base" else "in use")
        return scores[kind] if objects else None

    monkeypatch.setattr(learner, "_miou", fake_miou)
    assert learner.train(steps=1) == 1
    before = {k: v.clone() for k, v in learner.in_use.state_dict().items()}
    report = learner.check()
    assert not report.swapped and report.version == 0          # better by less than min_gain: kept
    assert all(torch.equal(before[k], v) for k, v in learner.in_use.state_dict().items())
    scores["candidate"] = 0.90
    report = learner.check()
    assert report.swapped and report.version == 1 and report.in_use_miou == 0.90
    assert report.learned_from == 2 and report.held_out == 2
    assert "learned from 2 objects: 0.80 -> 0.90 on your objects" == report.text()
    changed = [k for k, v in learner.in_use.state_dict().items() if not torch.equal(before[k], v)]
    assert changed                                             # the candidate's weights are in use now
    scores["candidate"] = 0.50
    assert not learner.check().swapped                         # a worse candidate never replaces it
    scores.update({"base": 0.95, "candidate": 0.93})           # the base now does better on the newest objects:
    report = learner.check()                                   # it comes back, the candidate does not
    assert report.swapped and report.learned_from == 0 and report.in_use_miou == 0.95
    assert all(torch.equal(v, learner.base.state_dict()[k]) for k, v in learner.in_use.state_dict().items())
    assert report.text().startswith("back to the model you started with")
    scores["in use"] = 0.95
    assert not learner.check().swapped                         # a candidate must beat the base too


def test_a_blending_learner_swaps_in_the_weights_halfway_and_keeps_training_the_candidate(monkeypatch):
    learner = Learner(tiny_network(), quick_settings(blend=0.5))
    for key in range(4):
        learner.add(scene_object(key, seed=key))
    monkeypatch.setattr(learner, "_miou", lambda cache, model, objects: 0.9 if cache is None else 0.8)
    assert learner.train(steps=2) == 2
    trained = {k: v.clone() for k, v in learner.candidate.state_dict().items()}
    assert learner.check().swapped
    base, in_use = learner.base.state_dict(), learner.in_use.state_dict()
    moved = [k for k in trained if trained[k].is_floating_point() and not torch.equal(trained[k], base[k])]
    assert moved
    for k in moved:
        torch.testing.assert_close(in_use[k], (base[k] + trained[k]) / 2)
    assert all(torch.equal(v, learner.candidate.state_dict()[k]) for k, v in trained.items())   # not blended itself


def test_a_choosing_learner_offers_all_it_learned_only_where_that_scores_better_than_halfway(monkeypatch):
    learner = Learner(tiny_network(), quick_settings(blend=None, min_gain=0.01))
    for key in range(4):
        learner.add(scene_object(key, seed=key))
    assert learner.train(steps=1) == 1
    scores = {"base": 0.80, "in use": 0.80, 0.5: 0.86, 1.0: 0.865}
    offered = []

    def fake_offered(share):
        offered.append(share)
        return share                                           # the share stands in for the model

    def fake_miou(cache, model, objects):
        return scores["base" if cache == "base" else "in use"] if cache else scores[model]

    monkeypatch.setattr(learner, "_offered", fake_offered)
    monkeypatch.setattr(learner, "_miou", fake_miou)
    report = learner.check()                                   # all of it is better, by less than the margin
    assert offered == [0.5, 1.0] and report.swapped and learner.in_use == 0.5
    assert report.in_use_blend == 0.5 and report.candidate_miou == 0.86
    scores.update({"in use": 0.86, 1.0: 0.95})
    report = learner.check()
    assert report.swapped and learner.in_use == 1.0 and report.in_use_blend == 1.0 and report.in_use_miou == 0.95
    scores.update({"in use": 0.70, "base": 0.90, 0.5: 0.6, 1.0: 0.6})
    report = learner.check()                                   # back to the base: nothing learned in use
    assert report.swapped and report.in_use_blend == 0.0 and report.learned_from == 0
    learner.settings.blend = 0.5
    offered.clear()
    learner.check()
    assert offered == [0.5]                                    # a set blend is the only one scored
    learner.settings.blend = None
    offered.clear()
    learner.check()
    assert offered == [0.5, 1.0]                               # the base knows the domain: both scored
    scores["base"] = 0.45
    offered.clear()
    learner.check()
    assert offered == [1.0]                                    # it does not: all that was learned
    learner.settings.keep_all_where_unseen = False
    offered.clear()
    learner.check()
    assert offered == [0.5, 1.0]


def test_the_learner_trains_faster_while_the_base_scores_badly_on_the_newest_objects(monkeypatch):
    """A fine-tune's rate rule: 1e-3 while the base scores below 0.6 on the held-out objects (a
    domain it has not learnt), the usual rate once it scores above, and neither before there are
    enough objects to tell; the report says the rate the candidate trains at."""
    learner = Learner(tiny_network(), quick_settings(lr=1e-4, min_held_out=2))
    scores = {"base": 0.45}
    monkeypatch.setattr(learner, "_miou", lambda cache, model, objects: scores["base"] if objects else None)
    rate = lambda: learner.optimizer.param_groups[0]["lr"]
    learner.add(scene_object(0))
    assert learner.check().lr == rate() == 1e-4                # too few objects held out to judge the base
    for key in range(1, 4):
        learner.add(scene_object(key, seed=key))
    assert learner.check().lr == rate() == 1e-3
    scores["base"] = 0.85
    assert learner.check().lr == rate() == 1e-4
    learner.settings.unseen_lr, scores["base"] = None, 0.45
    assert learner.check().lr == rate() == 1e-4


def test_the_learner_trains_a_copy_and_leaves_the_base_and_the_model_in_use_alone():
    network = tiny_network()
    original = {k: v.clone() for k, v in network.state_dict().items()}
    learner = Learner(network, quick_settings())
    assert learner.train(steps=3) == 0                         # nothing committed yet
    for key in range(5):
        learner.add(scene_object(key, seed=key))
    assert learner.train(steps=2) == 2 and learner.steps == 2
    assert all(torch.equal(original[k], v) for k, v in network.state_dict().items())
    assert all(torch.equal(original[k], v) for k, v in learner.base.state_dict().items())
    candidate = learner.candidate.state_dict()
    assert any(not torch.equal(original[k], candidate[k]) for k in original if candidate[k].is_floating_point())
    bn = [k for k in original if "running_mean" in k]
    assert all(torch.equal(original[k], candidate[k]) for k in bn)          # BatchNorm frozen
    report = learner.check()
    assert report.held_out == 2 and report.objects == 5 and 0.0 <= report.base_miou <= 1.0
    assert report.candidate_miou is not None and report.steps == 2
    ticks = iter(range(100))
    assert learner.train(seconds=2.5, clock=lambda: float(next(ticks))) == 2     # clock 0, 1, 2: two steps in 2.5 s


def test_the_learner_process_learns_in_the_background_and_stops():
    # priority 0: at nice 19 a busy CI machine can starve the process for minutes (the niceness is
    # the annotator's choice, not what this test is about)
    learner = BackgroundLearner(tiny_network(), quick_settings(seconds_per_object=0.2), priority=0)
    try:
        for key in range(5):
            learner.add(scene_object(key, seed=key))
        learner.remove(4)
        report = None
        for _ in range(300):                                    # a bound: the process imports torch first
            learner.poll(timeout=1.0)
            report = learner.report
            if report is not None and report.steps > 0:
                break
        assert report is not None and report.steps > 0 and report.objects == 4
        assert learner.alive
    finally:
        learner.close()
    assert not learner.alive


def test_a_simulated_session_reports_blocks_with_and_without_learning():
    instances = []
    for seed in range(3):
        image, mask = synthetic_scene(120, 140, seed=seed, center=(60, 70), radii=(25, 35))
        instances.append(Instance(f"scene{seed}", image, mask))
    seen = []
    result = simulate(tiny_network(), instances, quick_settings(), learn_steps=1, max_clicks=5, warmup=1,
                      progress=lambda done, total, row: seen.append(done))
    assert seen == [1, 2, 3] and len(result["objects"]) == 3
    block = result["blocks"][0]
    assert block["objects"] == [0, 3] and set(block) == {"objects", "with", "without"}
    for which in ("with", "without"):
        assert set(block[which]) == {"objects", "miou@3", "noc@90"}
        assert result["after_warmup"][which]["objects"] == 2
    first = result["objects"][0]
    assert first["with"] == first["without"] and len(first["with"]) == 5     # nothing learned before object 1


def test_evaluate_learn_writes_the_session_json(tmp_path):
    from PIL import Image

    images, labels = tmp_path / "data" / "images", tmp_path / "data" / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for seed in range(2):
        image, mask = synthetic_scene(120, 140, seed=seed, center=(60, 70), radii=(25, 35))
        Image.fromarray(image).save(images / f"s{seed}.png")
        Image.fromarray(mask.astype(np.uint8)).save(labels / f"s{seed}.png")
    model = save_model(tiny_network(), tmp_path / "tiny.pt", {"trained_on": "nothing (test)"})
    code = cli(["evaluate", "--dataset", str(tmp_path / "data"), "--model", str(model), "--learn",
                "--learn-steps", "1", "--learn-warmup", "1", "--max-clicks", "4", "--out", str(tmp_path / "out")])
    assert code == 0
    result = json.loads((tmp_path / "out" / "data_learn.json").read_text())
    assert result["learn_steps"] == 1 and len(result["objects"]) == 2
    assert {"with", "without"} <= set(result["after_warmup"])
    assert result["blocks"][0]["with"]["objects"] == 2


@pytest.mark.parametrize("bad", [["--learn-steps", "0"], ["--learn-warmup", "-1"]])
def test_evaluate_learn_refuses_bad_budgets(bad, capsys):
    with pytest.raises(SystemExit):
        cli(["evaluate", "--dataset", "grabcut", "--learn", *bad])
    assert "must be at least" in capsys.readouterr().err
