"""Training: data from arrays/folders/datasets, samples as the predictor sees them, the loop
(loss goes down, checkpoints load and predict, resume, cancel), the CLI and 2-process DDP."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from napari_iog import geometry as G
from napari_iog.evaluation import initial_clicks, next_click
from napari_iog.models import build_model, load_model, save_model
from napari_iog.predictor import IOGPredictor
from napari_iog.training import (
    InstanceDataset,
    TrainConfig,
    TrainingError,
    cvppp_pairs,
    iog_loss,
    lr_factor,
    pairs_from_arrays,
    pairs_from_folders,
    split_pairs,
    sstem_pairs,
    state_path,
    train,
    validation_instances,
)
from napari_iog.training.corrections import add_corrections, add_guidance_corrections
from napari_iog.training.events import StepDone, TrainingStarted, from_json
from napari_iog.training.loop import validate, weights_digest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shapes_scene(seed, size=160, objects=3):
    """Bright ellipses and rectangles on a textured background, with instance labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = 60 + 25 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 9.0)[..., None] + rng.normal(0, 10, (size, size, 3))
    labels = np.zeros((size, size), np.int32)
    for k in range(objects):
        cy, cx = rng.integers(35, size - 35, 2)
        ry, rx = rng.integers(12, 28, 2)
        if k % 2:
            mask = (abs(yy - cy) < ry) & (abs(xx - cx) < rx)
        else:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        labels[mask] = k + 1
        image[mask] = rng.uniform(150, 240, 3) + rng.normal(0, 10, (int(mask.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8), labels


def scenes(n, start=0):
    pairs = []
    for seed in range(start, start + n):
        pairs += pairs_from_arrays(*shapes_scene(seed), name=f"scene{seed}")
    return pairs


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A small IOG (ResNet-18 trunk, narrow heads) saved in the project's format."""
    path = tmp_path_factory.mktemp("base") / "tiny.pt"
    save_model(build_model("iog-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=0), path,
               {"trained_on": "nothing (test)"})
    return path


def quick_config(base, out, **overrides):
    values = dict(base=str(base), out=str(out), steps=4, batch_size=2, lr=1e-3, freeze_backbone=True,
                  val_objects=3, warmup_steps=0)
    values.update(overrides)
    return TrainConfig(**values)


# --- data ------------------------------------------------------------------------------------------

def test_sample_is_what_the_predictor_feeds_the_network():
    image, labels = shapes_scene(3)
    dataset = InstanceDataset(pairs_from_arrays(image, labels), augment=False, jitter=False)
    predictor = IOGPredictor(build_model("iog-resnet18"), device="cpu", precision="float32", warmup=False)
    for index, (_, label_id, _) in enumerate(dataset.objects):
        clicks = initial_clicks(labels == label_id)
        x, _, crop = predictor.network_input(image, clicks["corners"], clicks["inside"])
        sample = dataset[index]
        assert torch.equal(sample["x"], x)
        expected = G.resize_bilinear(torch.from_numpy(G.pad_to_crop(
            (labels[crop.clip(labels.shape).slices()] == label_id)[..., None].astype(np.float32),
            crop.clip(labels.shape), crop))[None, None, ..., 0], (G.FRAME, G.FRAME))[0] >= 0.5
        assert torch.equal(sample["target"].bool(), expected)


def test_objects_small_touching_border_and_empty_images_are_counted():
    labels = np.zeros((100, 100), np.int32)
    labels[40:60, 40:70] = 1          # kept
    labels[0:30, 0:20] = 2            # touches the border: kept
    labels[90:93, 50:53] = 3          # 9 px: skipped
    image = np.full((100, 100), 128, np.uint8)
    pairs = pairs_from_arrays(image, labels) + [
        pairs_from_arrays(image, labels)[0].__class__("empty", np.zeros((50, 50, 3), np.uint8),
                                                      np.zeros((50, 50), np.int32))]
    dataset = InstanceDataset(pairs, min_area=64)
    assert dataset.stats.to_dict() | {"sources": []} == {
        "images": 2, "empty_images": 1, "objects": 2, "skipped_small": 1, "touching_border": 1, "sources": []}
    for i in range(len(dataset)):          # a border object gives a valid sample too
        sample = dataset[i]
        assert sample["target"].sum() > 0 and sample["x"].shape == (5, G.FRAME, G.FRAME)


def test_augmentation_is_random_per_epoch_reproducible_and_keeps_the_object():
    dataset = InstanceDataset(scenes(1), refine=True, seed=7)
    first = [dataset[i] for i in range(len(dataset))]
    again = [dataset[i] for i in range(len(dataset))]
    dataset.set_epoch(1)
    other = [dataset[i] for i in range(len(dataset))]
    for a, b, c in zip(first, again, other):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["target"], b["target"])
        assert not torch.equal(a["x"], c["x"])
        inside = a["x"][3]
        r, col = np.unravel_index(int(inside.argmax()), inside.shape)
        assert a["target"][0, r, col] == 1           # the inside click is on the object
        assert a["clicks"].shape == (2, G.FRAME, G.FRAME)
        assert 0.02 < float(a["target"].mean()) < 0.9


def test_stacks_give_their_labelled_planes_only():
    image = np.random.default_rng(0).integers(0, 4000, (4, 64, 64)).astype(np.uint16)
    labels = np.zeros((4, 64, 64), np.int32)
    labels[1, 10:30, 10:30] = 5
    labels[3, 20:40, 5:50] = 2
    pairs = pairs_from_arrays(image, labels, name="stack")
    assert [p.name for p in pairs] == ["stack[1]", "stack[3]"]
    assert pairs[0].rgb.dtype == np.uint8 and pairs[0].rgb.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="do not match"):
        pairs_from_arrays(image, labels[:, :32])


def test_folders_are_matched_by_name(tmp_path):
    (tmp_path / "img").mkdir(), (tmp_path / "lab").mkdir()
    image, labels = shapes_scene(1)
    Image.fromarray(image).save(tmp_path / "img" / "a.png")
    tifffile.imwrite(tmp_path / "lab" / "a.tif", labels.astype(np.uint16))
    palette = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette.putpalette([0, 0, 0] + [255, 0, 0] * 255)    # every leaf the same colour: ids must come from indices
    Image.fromarray(image).save(tmp_path / "img" / "b.jpg")
    palette.save(tmp_path / "lab" / "b.png")
    Image.fromarray(image).save(tmp_path / "img" / "unlabelled.png")
    pairs = pairs_from_folders(tmp_path / "img", tmp_path / "lab")
    assert [p.name for p in pairs] == ["a", "b"]
    for p in pairs:
        np.testing.assert_array_equal(p.labels, labels)
    with pytest.raises(FileNotFoundError, match="labels folder"):
        pairs_from_folders(tmp_path / "img", tmp_path / "missing")


def test_split_holds_out_whole_images_or_objects_of_a_single_image():
    pairs = scenes(5)
    train_pairs, val_pairs, how = split_pairs(pairs, 0.4, seed=1)
    assert how == "images" and len(val_pairs) == 2 and len(train_pairs) == 3
    assert not {p.name for p in train_pairs} & {p.name for p in val_pairs}
    (single,) = scenes(1)
    train_pairs, val_pairs, how = split_pairs([single], 0.34)
    assert how == "objects"
    assert not (train_pairs[0].labels.astype(bool) & val_pairs[0].labels.astype(bool)).any()
    np.testing.assert_array_equal(train_pairs[0].labels + val_pairs[0].labels, single.labels)


@pytest.mark.skipif(not (DATA / "sstem_vnc").is_dir() or not (DATA / "cvppp_a1").is_dir(),
                    reason="needs ../shared/data")
def test_real_dataset_loaders():
    (slice0,) = sstem_pairs(DATA / "sstem_vnc", [0])
    ids = np.unique(slice0.labels)
    assert slice0.rgb.shape == (1024, 1024, 3) and 150 < len(ids) < 300
    areas = np.bincount(slice0.labels.ravel())[1:]
    assert areas[areas > 0].min() >= 200
    (plant,) = cvppp_pairs(DATA / "cvppp_a1", [1])
    assert 5 < len(np.unique(plant.labels)) < 30 and "CVPPP" in plant.source


# --- the loop --------------------------------------------------------------------------------------------

def test_loss_and_schedule_are_as_published():
    target = torch.zeros(2, 1, 16, 16)
    logits = torch.zeros(2, 1, 16, 16)
    # BCE of logit 0 is ln 2 per pixel; five outputs, summed over pixels, divided by the batch
    assert float(iog_loss(logits, [logits] * 4, target)) == pytest.approx(5 * 256 * np.log(2), rel=1e-6)
    # a fine-tune may weigh the coarse outputs down: 0 scores the fine output alone
    assert float(iog_loss(logits, [logits] * 4, target, coarse_weight=0.25)) == pytest.approx(2 * 256 * np.log(2))
    assert float(iog_loss(logits, [logits + 1e3] * 4, target, coarse_weight=0)) == pytest.approx(256 * np.log(2))
    assert lr_factor(0, 100, 10) == pytest.approx(0.1) and lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5) and lr_factor(100, 100, 10) == pytest.approx(0.0)


def test_the_normalised_focal_loss_gives_the_pixels_still_wrong_the_gradient():
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 4:12] = 1
    undecided = torch.zeros(2, 1, 16, 16)       # every pixel as wrong as every other: plain BCE
    assert float(iog_loss(undecided, [undecided] * 4, target, loss="nfl")) == pytest.approx(
        float(iog_loss(undecided, [undecided] * 4, target)), rel=1e-6)
    logits = ((2 * target - 1) * 6).requires_grad_(True)     # right everywhere by a margin ...
    wrong = (0, 0, 0, 0)
    with torch.no_grad():
        logits[wrong] = 6.0                                   # ... but one background pixel
    gradients = {}
    for loss in ("bce", "nfl", "bce+nfl"):
        logits.grad = None
        iog_loss(logits, [], target, coarse_weight=0, loss=loss).backward()
        gradients[loss] = logits.grad.clone()
    right = (0, 0, 8, 8)
    # the wrong pixel's pull grows by orders of magnitude, the settled pixels' all but vanishes
    assert gradients["nfl"][wrong] > 50 * gradients["bce"][wrong] > 0
    assert abs(gradients["nfl"][right]) < 0.01 * abs(gradients["bce"][right])
    # the mean of the two keeps half of BCE's pull on the settled pixels
    assert torch.allclose(gradients["bce+nfl"], (gradients["bce"] + gradients["nfl"]) / 2, rtol=1e-5, atol=1e-12)
    # a pixel to leave out (-1) stays out
    unknown = target.clone()
    unknown[wrong] = -1
    logits.grad = None
    iog_loss(logits, [], unknown, coarse_weight=0, loss="nfl").backward()
    assert logits.grad[wrong] == 0


def test_a_few_steps_lower_the_loss_and_the_checkpoint_loads_and_predicts(tiny_base, tmp_path):
    events = []
    out = tmp_path / "tuned.pt"
    summary = train(quick_config(tiny_base, out, steps=8, freeze_backbone=False, correction_prob=0.0), scenes(4),
                    scenes(1, 10),
                    on_event=events.append)
    losses = [e.loss for e in events if isinstance(e, StepDone)]
    assert len(losses) == 8 and np.mean(losses[-2:]) < 0.6 * np.mean(losses[:2])
    assert summary["status"] == "complete" and summary["val_miou_before"] is not None
    model = load_model(out)
    card = model.card
    assert card["status"] == "complete" and card["steps"] == 8
    assert card["objects"] == summary["objects"] == len(InstanceDataset(scenes(4)))
    assert card["base_path"] == str(tiny_base) and card["val_miou_before"] == summary["val_miou_before"]
    assert card["val_miou_after"] == summary["val_miou_after"] and card["validation_objects"] == 3
    # trained channels_last for speed, saved in the ordinary layout that any loader (and .view) expects
    saved = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    assert all(value.is_contiguous() for value in saved.values())
    image, labels = shapes_scene(20)
    clicks = initial_clicks(labels == 1)
    prediction = IOGPredictor(out, device="cpu", warmup=False).predict(image, clicks["corners"], clicks["inside"])
    assert prediction.mask.shape == labels.shape and prediction.mask.dtype == bool


def test_a_fine_tune_of_trained_weights_uses_the_measured_rate_and_loss_unless_told(tiny_base, tmp_path):
    """From trained weights: AdamW 1e-4 and the coarse outputs at 0.1 (docs/benchmarks.md); from
    random weights the published loss; a value given is used as given. The card says which."""
    def card_of(base, **overrides):
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}.pt"
        values = {**dict(lr=None, val_objects=0, steps=1), **overrides}
        train(quick_config(base, out, **values), scenes(2))
        return load_model(out).card

    tuned = card_of(tiny_base)
    assert tuned["lr"] == 1e-4 and tuned["coarse_weight"] == 0.1 and tuned["blend"] == 0.5
    from_random = card_of("iog-resnet18", batch_size=2)
    assert from_random["lr"] == 1e-4 and from_random["coarse_weight"] == 1.0 and from_random["blend"] == 1.0
    told = card_of(tiny_base, lr=5e-5, coarse_weight=1.0, blend=1.0)
    assert told["lr"] == 5e-5 and told["coarse_weight"] == 1.0 and told["blend"] == 1.0


@pytest.mark.parametrize("before, rate", [(0.45, 1e-3), (0.75, 1e-4)])
def test_a_fine_tune_trains_faster_where_the_base_has_not_learnt_the_domain(tiny_base, tmp_path, monkeypatch,
                                                                            before, rate):
    """The base's held-out mIoU@3 before training sets a fine-tune's rate: below 0.6 (CWFID's field
    plants scored 0.46, the domains the default trained on 0.80-0.88) AdamW at 1e-3, else 1e-4; a
    rate given is used as given. The optimizer steps at it, and the start event and card say it."""
    from napari_iog.training import loop

    monkeypatch.setattr(loop, "validate", lambda model, instances, device: before)
    events = []
    out = tmp_path / "run.pt"
    summary = train(quick_config(tiny_base, out, lr=None, steps=2, correction_prob=0.0), scenes(2), scenes(1, 10),
                    on_event=events.append)
    started = [e for e in events if isinstance(e, TrainingStarted)]
    first_step = next(e for e in events if isinstance(e, StepDone))
    assert summary["val_miou_before"] == before
    assert started[0].lr == load_model(out).card["lr"] == summary["lr"] == rate
    assert first_step.lr == pytest.approx(rate * loop.lr_factor(1, 2, 0))
    told = tmp_path / "told.pt"
    train(quick_config(tiny_base, told, lr=5e-5, steps=1, correction_prob=0.0), scenes(2), scenes(1, 10))
    assert load_model(told).card["lr"] == 5e-5


def test_a_fine_tune_saves_the_weights_halfway_between_the_base_and_the_trained_ones(tiny_base, tmp_path):
    """WiSE-FT: the saved model is base + 0.5 x (trained - base), and validation scores that model."""
    def weights(out, **overrides):
        summary = train(quick_config(tiny_base, out, steps=2, lr=1e-3, correction_prob=0.0, **overrides),
                        scenes(2), scenes(1, 10))
        return load_model(out).state_dict(), summary

    whole, _ = weights(tmp_path / "whole.pt", blend=1.0)
    half, summary = weights(tmp_path / "half.pt", blend=0.5)
    base = load_model(tiny_base).state_dict()
    moved = [k for k, v in base.items() if v.is_floating_point() and not torch.equal(v, whole[k])]
    assert moved
    for key in moved:
        torch.testing.assert_close(half[key], (base[key] + whole[key]) / 2)
    held_out = validation_instances(scenes(1, 10), limit=3)
    assert summary["val_miou_after"] == pytest.approx(validate(load_model(tmp_path / "half.pt"), held_out, "cpu"))


@pytest.mark.parametrize("all_kept_does_better", [True, False])
def test_a_fine_tune_keeps_all_its_change_only_where_its_held_out_objects_say_so(tiny_base, tmp_path, monkeypatch,
                                                                                all_kept_does_better):
    """By default the end scores the trained weights against halfway on the held-out objects and
    saves the trained ones only where they do better by the margin (an unseen domain), else halfway.
    The stand-in score rises (or falls) with how far a model's weights moved from the base's."""
    from napari_iog.training import loop
    from napari_iog.training.events import blend_in_words

    base = load_model(tiny_base).state_dict()

    def moved(model):
        return sum(float((v.float() - base[k].float()).norm()) for k, v in model.state_dict().items()
                   if v.is_floating_point())

    direction = 1.0 if all_kept_does_better else -1.0
    monkeypatch.setattr(loop, "validate", lambda model, instances, device: 0.5 + direction * 10 * moved(model))
    run = lambda out, **given: train(quick_config(tiny_base, out, steps=2, lr=1e-3, correction_prob=0.0, **given),
                                     scenes(2), scenes(1, 10))
    summary = run(tmp_path / "chosen.pt")
    saved = load_model(tmp_path / "chosen.pt")
    scores = summary["blend_scores"]
    assert set(scores) == {"0.5", "1"} and saved.card["blend_scores"] == scores
    assert (scores["1"] > scores["0.5"] + 0.01) is all_kept_does_better
    expected = 1.0 if all_kept_does_better else 0.5
    assert summary["blend"] == saved.card["blend"] == expected
    assert summary["val_miou_after"] == scores["1" if all_kept_does_better else "0.5"]
    # what it said it saved, it saved: the saved weights score what the chosen share scored
    assert 0.5 + direction * 10 * moved(saved) == pytest.approx(summary["val_miou_after"], rel=1e-4)
    said = blend_in_words(summary["blend"], summary["blend_scores"])
    assert ("all of training's change kept" in said) is all_kept_does_better
    if all_kept_does_better:        # a blend given is used as given, even where keeping all scores better
        told = run(tmp_path / "told.pt", blend=0.5)
        assert told["blend"] == 0.5 and not told["blend_scores"]


def test_cancel_keeps_a_valid_checkpoint_and_resume_continues_to_the_same_weights(tiny_base, tmp_path):
    pairs = scenes(4)
    reference = train(quick_config(tiny_base, tmp_path / "straight.pt", steps=4, val_objects=0), pairs)

    steps_seen = []

    def stop_after_two():
        return len(steps_seen) >= 2

    out = tmp_path / "run.pt"
    cancelled = train(quick_config(tiny_base, out, steps=4, val_objects=0), pairs,
                      on_event=lambda e: isinstance(e, StepDone) and steps_seen.append(e.step),
                      should_stop=stop_after_two)
    assert cancelled["status"] == "cancelled" and cancelled["steps"] == 2
    assert load_model(out).card["status"] == "cancelled at step 2 of 4"     # mid-epoch, loadable
    assert state_path(out).is_file()
    resumed = train(quick_config(tiny_base, out, steps=4, val_objects=0, resume=True), pairs)
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 4 and resumed["status"] == "complete"
    assert resumed["rank_digests"] == reference["rank_digests"]
    assert weights_digest(load_model(out)) == weights_digest(load_model(tmp_path / "straight.pt"))
    with pytest.raises(TrainingError, match="same settings"):
        train(quick_config(tiny_base, out, steps=9, val_objects=0, resume=True), pairs)


def test_refinement_models_learn_with_simulated_corrections(tmp_path):
    base = tmp_path / "refine.pt"
    save_model(build_model("iog-refine-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=0), base)
    summary = train(quick_config(base, tmp_path / "out.pt", steps=2, correction_prob=1.0, val_objects=0), scenes(2))
    assert summary["status"] == "complete" and np.isfinite(summary["final_loss"])


class _ConstantDecoder(torch.nn.Module):
    def __init__(self, logit):
        super().__init__()
        self.logit = logit

    def encode(self, x):
        return x

    def decode(self, features, clicks):
        return torch.full_like(clicks[:, :1], self.logit)


@pytest.mark.parametrize("logit, channel", [(-5.0, 0), (5.0, 1)])
def test_simulated_corrections_have_the_right_sign(logit, channel):
    target = torch.zeros(1, 1, G.FRAME, G.FRAME)
    target[:, :, 100:300, 150:350] = 1
    batch = {"x": torch.zeros(1, 5, G.FRAME, G.FRAME), "target": target,
             "clicks": torch.zeros(1, 2, G.FRAME, G.FRAME)}
    clicks = add_corrections(_ConstantDecoder(logit), batch, np.random.default_rng(0), max_rounds=1)
    r, c = np.unravel_index(int(clicks[0, channel].argmax()), (G.FRAME, G.FRAME))
    assert clicks[0, channel].max() == 255 and clicks[0, 1 - channel].max() == 0
    # missed object -> a positive click in the object; everything predicted -> a negative one outside
    assert bool(target[0, 0, r, c]) == (channel == 0)


class _ConstantNetwork(torch.nn.Module):
    """A plain IOG network that predicts everywhere the same, and records what it was fed."""

    def __init__(self, logit):
        super().__init__()
        self.logit, self.seen = logit, []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.full_like(x[:, :1], self.logit)


@pytest.mark.parametrize("logit, positive", [(-5.0, True), (5.0, False)])
def test_plain_iog_networks_get_corrections_drawn_as_the_predictor_draws_them(logit, positive, monkeypatch):
    """A missed object gets a positive click inside it, drawn with the inside click; a mask
    that spills everywhere gets a negative one outside, drawn with the outside corners; both
    maps scaled together, as ``geometry.frame_input`` draws a correction for the predictor."""
    from napari_iog.training import corrections

    monkeypatch.setattr(corrections, "RANDOM_CLICK_PROB", 0.0)
    target = torch.zeros(1, 1, G.FRAME, G.FRAME)
    target[:, :, 100:300, 150:350] = 1
    inside, outside = np.array([[200.0, 250.0]]), np.array([[60.0, 110.0], [60, 390], [340, 110], [340, 390]])
    x = torch.zeros(1, 5, G.FRAME, G.FRAME)
    x[0, 3:5] = torch.from_numpy(G.guidance_maps(inside, outside))
    batch = {"x": x, "target": target, "inside": torch.tensor(inside[None], dtype=torch.float32),
             "outside": torch.tensor(outside[None], dtype=torch.float32)}
    network = _ConstantNetwork(logit)
    new = add_guidance_corrections(network, batch, np.random.default_rng(0), max_rounds=1)
    assert torch.equal(network.seen[0], x) and torch.equal(batch["x"], x)      # the batch is not changed
    added = (new[0, 3:5] - x[0, 3:5]).abs().sum(dim=(1, 2))
    assert (added[0] > 0) == positive and (added[1] > 0) == (not positive)
    truth = target[0, 0].numpy() > 0.5
    (r, c), sign = next_click(np.full(truth.shape, not positive), truth)     # the evaluation's own next click
    assert sign == positive and truth[r, c] == positive
    points_in = np.concatenate([inside, [[r, c]]]) if positive else inside
    points_out = outside if positive else np.concatenate([outside, [[r, c]]])
    np.testing.assert_allclose(new[0, 3:5].numpy(), G.guidance_maps(points_in, points_out), atol=1e-3)


def test_plain_iog_networks_learn_with_simulated_corrections(tiny_base, tmp_path):
    """(with the normalised focal loss, which the other runs here leave at BCE)"""
    summary = train(quick_config(tiny_base, tmp_path / "out.pt", steps=2, correction_prob=1.0,
                                 correction_rounds=2, val_objects=0, loss="nfl"), scenes(2))
    assert summary["status"] == "complete" and np.isfinite(summary["final_loss"])
    assert load_model(tmp_path / "out.pt").card["config"]["loss"] == "nfl"


def test_bad_inputs_are_refused_clearly(tiny_base, tmp_path):
    speck = np.zeros((50, 50), np.int32)
    speck[20:23, 20:23] = 1
    with pytest.raises(TrainingError, match="no objects to train on"):
        train(quick_config(tiny_base, tmp_path / "x.pt"), pairs_from_arrays(np.zeros((50, 50), np.uint8), speck))
    with pytest.raises(TrainingError, match="base model"):
        train(quick_config("no-such-model", tmp_path / "x.pt"), scenes(1))
    with pytest.raises(TrainingError, match="optimizer"):
        train(quick_config(tiny_base, tmp_path / "x.pt", optimizer="adam"), scenes(1))
    with pytest.raises(TrainingError, match="loss must be one of"):
        train(quick_config(tiny_base, tmp_path / "x.pt", loss="focal"), scenes(1))
    assert not (tmp_path / "x.pt").exists()


# --- command line, DDP -----------------------------------------------------------------------------

def write_folders(root, n=3, start=0):
    (root / "images").mkdir(parents=True), (root / "labels").mkdir()
    for seed in range(start, start + n):
        image, labels = shapes_scene(seed)
        Image.fromarray(image).save(root / "images" / f"s{seed}.png")
        tifffile.imwrite(root / "labels" / f"s{seed}.tif", labels.astype(np.uint16))
    return root / "images", root / "labels"


def run_cli(args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "napari_iog", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_trains_from_folders_with_json_progress_and_a_summary(tiny_base, tmp_path):
    images, labels = write_folders(tmp_path, n=3)
    out, summary_path = tmp_path / "model.pt", tmp_path / "summary.json"
    result = run_cli(["train", "--images", str(images), "--labels", str(labels), "--base", str(tiny_base),
                      "--out", str(out), "--steps", "2", "--batch-size", "2", "--freeze-backbone", "--val-fraction",
                      "0.34", "--val-objects", "2", "--progress", "json", "--summary", str(summary_path)])
    assert result.returncode == 0, result.stderr
    events = [from_json(line) for line in result.stdout.splitlines()]
    assert [e.kind for e in events if e.kind != "checkpoint"] == [
        "start", "validation", "step", "step", "validation", "end"]
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "complete" and summary["objects"] >= 4 and load_model(out).card["steps"] == 2


def test_cli_refuses_benchmarks_and_missing_folders(tmp_path):
    result = run_cli(["train", "--dataset", "grabcut", "--base", "iog-resnet18", "--out", str(tmp_path / "m.pt")])
    assert result.returncode == 1 and "evaluation benchmark" in result.stderr
    result = run_cli(["train", "--images", str(tmp_path / "nope"), "--labels", str(tmp_path),
                      "--base", "iog-resnet18", "--out", str(tmp_path / "m.pt")])
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="needs torchrun")
def test_torchrun_two_gloo_processes_train_the_same_weights(tiny_base, tmp_path):
    images, labels = write_folders(tmp_path, n=2)
    summary_path = tmp_path / "summary.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "napari_iog", "train", "--images", str(images),
         "--labels", str(labels), "--base", str(tiny_base), "--out", str(tmp_path / "ddp.pt"), "--steps", "2",
         "--batch-size", "1", "--device", "cpu", "--val-fraction", "0", "--summary", str(summary_path)],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    assert len(summary["rank_digests"]) == 2 and len(set(summary["rank_digests"])) == 1
    assert weights_digest(load_model(tmp_path / "ddp.pt")) == summary["rank_digests"][0]
    assert "weights identical on all 2 ranks: yes" in result.stdout


def test_every_training_option_reaches_the_command_line_and_back():
    """The CLI's options and the widget's subprocess arguments are derived from TrainConfig."""
    from dataclasses import fields

    from napari_iog.cli import build_parser

    config = TrainConfig(out="m.pt", base="iog-resnet18", steps=7, lr=3e-4, freeze_backbone=True, augment=False,
                         half=True, freeze_bn=False, val_fraction=0.3, warmup_steps=5, amp="off")
    args = build_parser().parse_args(["train", *config.to_argv()])
    assert TrainConfig.from_args(args) == config
    assert TrainConfig.from_args(build_parser().parse_args(["train", "--out", "m.pt"])) == TrainConfig(out="m.pt")
    assert all(f.metadata["help"] for f in fields(TrainConfig))

