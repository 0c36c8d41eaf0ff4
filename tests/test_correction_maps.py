"""Networks that also read the corrections as maps (the first mask and click disks): widening a
plain network changes nothing until it learns, the predictor feeds the maps (and keeps each
object's first mask), training can teach those weights alone without touching first clicks."""

import copy
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import SMALL_MOBILE, calibrate, synthetic_scene

from napari_iog import geometry as G
from napari_iog.correction_maps import DISK_RADIUS, complete_inputs, correction_maps, disks, takes_correction_maps
from napari_iog.models import build_model, load_model, save_model
from napari_iog.models.mobilenet import (
    IOGMobileNetwork,
    corrected_rows,
    with_correction_input_size,
    with_correction_maps,
)
from napari_iog.models.onnx_runtime import OnnxRuntimeNetwork, weights_digest
from napari_iog.predictor import IOGPredictor, _ImageReader
from napari_iog.prompt import Prompt
from napari_iog.training import TrainConfig, TrainingError, pairs_from_arrays, train
from napari_iog.training.corrections import add_guidance_corrections, batch_sizes
from napari_iog.training.data import InstanceDataset
from napari_iog.training.loop import batch_loss, iog_loss

CORNERS, INSIDE = [(55, 65), (185, 235)], (120, 150)


@pytest.fixture(scope="module")
def small_mobile():
    return calibrate(build_model("iog-mobilenetv2", SMALL_MOBILE, seed=0))


def _learned_maps(model, seed=0):
    """``model`` with random weights on its correction maps, as if it had learned them."""
    learned = copy.deepcopy(model)
    with torch.no_grad():
        weight = learned.backbone.features[0][0].weight
        weight[:, 5:] = torch.randn(weight[:, 5:].shape, generator=torch.Generator().manual_seed(seed)) * 0.5
    return learned


def test_disks_and_maps():
    d = disks(np.array([[100.0, 200.0]]))
    assert d[100, 200] == 255 and d[100, 200 + int(DISK_RADIUS)] == 255 and d[100, 200 + int(DISK_RADIUS) + 1] == 0
    assert d.sum() / 255 == pytest.approx(np.pi * DISK_RADIUS**2, rel=0.1)
    first = torch.full((G.FRAME, G.FRAME), 0.25)
    none = np.zeros((0, 2))
    assert not correction_maps(first, none, none).any()          # first clicks: all zero
    maps = correction_maps(first, none, np.array([[10.0, 20.0]]))
    assert maps[0].max() == maps[0].min() == pytest.approx(63.75) and maps[1].max() == 0 and maps[2, 10, 20] == 255


def test_a_widened_network_answers_as_before_and_round_trips(small_mobile, tmp_path):
    wide = with_correction_maps(small_mobile)
    assert takes_correction_maps(wide) and not takes_correction_maps(small_mobile)
    x = torch.rand(2, 5, 128, 128) * 255
    maps = torch.rand(2, 3, 128, 128) * 255
    with torch.no_grad():
        plain = small_mobile(x)
        assert torch.equal(wide(torch.cat([x, maps], 1)), plain)
    with pytest.raises(ValueError, match=r"\[B, 8, H, W\]"):
        wide(x)
    save_model(wide, tmp_path / "wide.pt")
    loaded = load_model(tmp_path / "wide.pt")
    assert takes_correction_maps(loaded)
    with torch.no_grad():
        assert torch.equal(loaded(torch.cat([x, maps], 1)), plain)


def test_the_correction_head_is_silent_for_first_clicks_only(small_mobile, tmp_path):
    wide = with_correction_maps(small_mobile, head=True)
    x = torch.rand(2, 5, 128, 128) * 255
    maps = torch.zeros(2, 3, 128, 128)
    maps[1, 0] = 200.0
    maps[1, 2, 60:70, 60:70] = 255.0                           # sample 1 has a negative correction
    with torch.no_grad():
        assert torch.equal(wide(torch.cat([x, maps], 1)), small_mobile(x))      # it starts as its base
        torch.nn.init.normal_(wide.correction_head.out.weight)
        out = wide(torch.cat([x, maps], 1))
        plain = small_mobile(x)
    assert torch.equal(out[0], plain[0]) and not torch.equal(out[1], plain[1])
    save_model(wide, tmp_path / "head.pt")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "head.pt")(torch.cat([x, maps], 1)), out)
    with pytest.raises(ValueError, match="needs correction_maps"):
        build_model("iog-mobilenetv2", {**SMALL_MOBILE, "correction_head": True})


def test_corrections_run_at_their_own_size_and_first_clicks_stay_exact(small_mobile, tmp_path):
    wide = with_correction_maps(small_mobile, head=True).eval()
    with torch.no_grad():
        torch.nn.init.normal_(wide.correction_head.out.weight)
    larger = with_correction_input_size(wide, 384)
    x = torch.rand(3, 8, 128, 128) * 255
    x[:, 5:] = 0
    x[1:, 6, 50:60, 50:60] = 255.0                              # samples 1 and 2: a positive correction
    same_size_everywhere = IOGMobileNetwork(replace(wide.config, input_size=384))
    same_size_everywhere.load_state_dict(wide.state_dict())
    same_size_everywhere.eval()
    yes, no = torch.tensor([True]), torch.tensor([False])
    with torch.no_grad():
        mixed = larger(x, larger_corrections=torch.tensor([True, True, True]))
        alone = [larger(x[i:i + 1], larger_corrections=yes)[0] for i in range(3)]
        assert torch.equal(alone[0], wide(x[:1])[0])            # a first click: as before, exactly
        assert torch.equal(alone[1], same_size_everywhere(x[1:2])[0])      # a correction: the larger pass
        assert not torch.equal(alone[1], wide(x[1:2])[0])
        assert torch.equal(larger(x[2:], larger_corrections=no)[0], wide(x[2:])[0])   # told no: as before
        assert torch.equal(larger(x), wide(x))                  # told nothing (training): as trained
        fine, coarse = larger(x, return_coarse=True, larger_corrections=torch.tensor([True, True, True]))
        told = larger(x, larger_corrections=torch.tensor([True, True, False]))   # sample 2: a small crop
    for i in range(3):                                          # a batch answers as each sample alone
        torch.testing.assert_close(mixed[i], alone[i], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fine, mixed)
    torch.testing.assert_close(told[:2], mixed[:2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(told[2], wide(x[2:])[0].detach(), atol=1e-4, rtol=1e-4)
    assert [c.shape for c in coarse] == [c.shape for c in wide(x, return_coarse=True)[1]]
    save_model(larger, tmp_path / "larger.pt")
    assert load_model(tmp_path / "larger.pt").config.correction_input_size == 384
    assert weights_digest(larger) != weights_digest(wide)      # the same weights export another graph
    with pytest.raises(ValueError, match="needs correction_head"):
        build_model("iog-mobilenetv2", {**SMALL_MOBILE, "correction_input_size": 384})


def test_training_runs_a_large_crops_correction_at_the_size_it_will_run_at(small_mobile):
    wide = with_correction_maps(small_mobile, head=True).eval()
    with torch.no_grad():
        torch.nn.init.normal_(wide.correction_head.out.weight)
    larger = with_correction_input_size(wide, 256)
    pairs = []
    for center, radii in (((150, 150), (100, 110)), ((150, 150), (20, 25))):    # crops of 279 and 109 px
        image, mask = synthetic_scene(300, 300, center=center, radii=radii)
        pairs += pairs_from_arrays(image, mask.astype(np.int32))
    dataset = InstanceDataset(pairs, augment=False, jitter=False)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    assert batch["crop_side"].tolist() == [2 * 110 - 1 + 2 * G.RELAX, 2 * 25 - 1 + 2 * G.RELAX]   # the boxes' widths
    batch["x"] = add_guidance_corrections(larger, batch, np.random.default_rng(0), max_rounds=1)
    assert corrected_rows(batch["x"], 5).all()
    with torch.no_grad():
        loss = batch_loss(larger, batch, refine=False, coarse_weight=0.0)
        as_predicted = larger(batch["x"], larger_corrections=torch.tensor([True, False]))
        as_first_clicks = larger(batch["x"])
    assert torch.equal(loss, iog_loss(as_predicted, [], batch["target"], 0.0))
    assert not torch.equal(loss, iog_loss(as_first_clicks, [], batch["target"], 0.0))
    assert batch_sizes(wide, batch) == {}                       # a network without the size: as before


def test_the_predictor_runs_larger_corrections_on_crops_it_would_shrink(small_mobile):
    wide = with_correction_maps(small_mobile, head=True).eval()
    with torch.no_grad():
        torch.nn.init.normal_(wide.correction_head.out.weight)
    sized = IOGPredictor(with_correction_input_size(wide, 384), precision="float32", backend="torch", warmup=False)
    plain = IOGPredictor(wide, precision="float32", backend="torch", warmup=False)
    everywhere = with_correction_input_size(wide, 384)
    image = np.random.default_rng(0).integers(0, 255, (700, 700, 3)).astype(np.uint8)
    for corners, inside, negative, large in (([(20, 20), (640, 600)], (300, 300), (100, 100), True),
                                             ([(330, 330), (350, 355)], (340, 342), (333, 333), False)):
        first = sized.predict(image, corners=corners, inside=inside, postprocess=False)
        np.testing.assert_array_equal(first.crop_probability, plain.predict(
            image, corners=corners, inside=inside, postprocess=False).crop_probability)
        corrected = sized.predict(image, corners=corners, inside=inside, negative=[negative], postprocess=False)
        crop_side = max(corrected.crop_box.height, corrected.crop_box.width)   # against the first clicks' size:
        assert (crop_side > sized.network.config.input_size) == large           # 128 in this small network
        if large:
            item = sized._prepare(_ImageReader.of(image, None, None), Prompt.check(image.shape[:2], corners, inside,
                                                                                  (), [negative]))
            complete_inputs([item], sized._first_masks, sized._forward, 1)
            with torch.no_grad():
                expected = sized._to_crop(everywhere(item.x[None], larger_corrections=torch.tensor([True]))[0],
                                          item.prompt.crop)
        else:
            expected = plain.predict(image, corners=corners, inside=inside, negative=[negative],
                                     postprocess=False).crop_probability
        np.testing.assert_allclose(corrected.crop_probability, expected, atol=1e-5)


def test_onnx_runtime_sends_each_sample_to_its_graph():
    class Graph(OnnxRuntimeNetwork):            # a session that answers its name, no export needed
        def __init__(self, value, **graphs):
            self.value, self.first_clicks, self.smaller_corrections = value, None, None
            self.clicks_from = 6
            for name, graph in graphs.items():
                setattr(self, name, graph)
            self.session = self

        def run(self, _, feeds):
            return [np.full((len(feeds["x"]), 1, 4, 4), self.value, np.float32)]

    headless = Graph(3.0)
    network = Graph(1.0, first_clicks=headless, smaller_corrections=Graph(2.0, first_clicks=headless))
    x = torch.zeros(3, 8, 4, 4)
    x[1:, 7, 1, 1] = 255.0                                      # 0: a first click; 1, 2: negative corrections
    assert network(x)[:, 0, 0, 0].tolist() == [3.0, 2.0, 2.0]
    assert network(x, larger_corrections=torch.tensor([True, False, True]))[:, 0, 0, 0].tolist() == [3.0, 2.0, 1.0]
    assert network(x[1:], larger_corrections=torch.tensor([False, False]))[:, 0, 0, 0].tolist() == [2.0, 2.0]


def test_the_predictor_feeds_the_maps_and_keeps_first_masks(small_mobile):
    image, _ = synthetic_scene()
    base = IOGPredictor(small_mobile, precision="float32")
    learned = IOGPredictor(_learned_maps(with_correction_maps(small_mobile)), precision="float32")
    fed = []
    forward = learned._forward
    learned._forward = lambda x, clicks=None: fed.append(x.clone()) or forward(x, clicks)
    first = learned.predict(image, corners=CORNERS, inside=INSIDE)
    np.testing.assert_array_equal(first.crop_probability, base.predict(image, corners=CORNERS, inside=INSIDE)
                                  .crop_probability)     # first clicks: the maps are zero
    assert len(fed) == 1 and fed[0].shape[1] == 8 and not fed[0][:, 5:].any()
    corrected = learned.predict(image, corners=CORNERS, inside=INSIDE, negative=[(120, 200)])
    assert len(fed) == 2                                   # the object's first mask was kept
    maps = fed[1][0, 5:]
    prob = torch.sigmoid(forward(fed[0]))[0, 0]
    np.testing.assert_allclose(maps[0].numpy(), 255 * prob.numpy(), atol=1e-3)
    r, c = G.to_frame([(120, 200)], first.crop_box)[0]
    assert maps[1].max() == 0 and maps[2, int(round(r)), int(round(c))] == 255
    plain = base.predict(image, corners=CORNERS, inside=INSIDE, negative=[(120, 200)])
    assert not np.array_equal(corrected.crop_probability, plain.crop_probability)
    # a correction whose object was never seen first (a batch, a fresh predictor) gets the same answer
    fresh = IOGPredictor(learned.network, precision="float32")
    again = fresh.predict_batch(image, [{"corners": CORNERS, "inside": INSIDE, "negative": [(120, 200)]}])[0]
    np.testing.assert_allclose(again.crop_probability, corrected.crop_probability, atol=1e-5)


def _scenes(n):
    pairs = []
    for seed in range(n):
        image, mask = synthetic_scene(160, 200, seed=seed, center=(80, 100), radii=(40, 55))
        pairs += pairs_from_arrays(image, mask.astype(np.int32))
    return pairs


@pytest.mark.parametrize("head", [False, True])
def test_training_only_the_correction_maps_leaves_first_clicks_exactly(small_mobile, tmp_path, head):
    base = tmp_path / "base.pt"
    save_model(small_mobile, base)
    out = tmp_path / "out.pt"
    config = TrainConfig(base=str(base), out=str(out), steps=3, batch_size=2, lr=1e-2, val_objects=0,
                         warmup_steps=0, correction_prob=1.0, correction_rounds=1, correction_maps=True,
                         correction_head=head, correction_maps_only=True,
                         freeze_bn=False)     # BN stays frozen all the same
    assert train(config, _scenes(2))["status"] == "complete"
    trained = load_model(out)
    assert takes_correction_maps(trained) and (trained.correction_head is not None) == head
    weight = trained.backbone.features[0][0].weight
    assert weight[:, 5:].abs().sum() > 0                     # it learned from the corrections
    if head:
        assert trained.correction_head.out.weight.abs().sum() > 0
    image, _ = synthetic_scene()
    first = IOGPredictor(trained, precision="float32").predict(image, corners=CORNERS, inside=INSIDE)
    before = IOGPredictor(small_mobile, precision="float32").predict(image, corners=CORNERS, inside=INSIDE)
    np.testing.assert_allclose(first.crop_probability, before.crop_probability, atol=1e-4)


def test_correction_maps_are_refused_where_they_cannot_be(tmp_path):
    base = tmp_path / "r18.pt"
    save_model(build_model("iog-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=0), base)
    with pytest.raises(TrainingError, match="iog-mobilenetv2"):
        train(TrainConfig(base=str(base), out=str(tmp_path / "x.pt"), steps=1, batch_size=2, val_objects=0,
                          correction_maps=True), _scenes(1))
    for name in ("correction_maps_only", "correction_head"):
        with pytest.raises(TrainingError, match="needs correction_maps"):
            TrainConfig(base=str(base), out=str(tmp_path / "x.pt"), **{name: True}).check()
    assert not (tmp_path / "x.pt").exists()


def test_onnx_runtime_keeps_the_correction_head_that_first_clicks_skip(
        small_mobile, corrections_network, corrections_network_exports, tmp_path, monkeypatch):
    from napari_iog import zoo

    monkeypatch.setenv(zoo.CACHE_ENV, str(shutil.copytree(corrections_network_exports, tmp_path / "cache")))
    wide = corrections_network
    image, _ = synthetic_scene()
    exact = IOGPredictor(wide, device="cpu", precision="float32", backend="torch", warmup=False)
    ort = IOGPredictor(wide, device="cpu", precision="float32", backend="onnxruntime", warmup=False)
    assert ort.backend == "onnxruntime"
    for negative in ([], [(120, 200)]):         # the export is made from a first click: the head stays in it
        here = exact.predict(image, corners=CORNERS, inside=INSIDE, negative=negative, postprocess=False)
        there = ort.predict(image, corners=CORNERS, inside=INSIDE, negative=negative, postprocess=False)
        np.testing.assert_allclose(there.crop_probability, here.crop_probability, atol=1e-4)
    x = torch.rand(1, 8, 512, 512) * 255                       # the exported graph, on a correction
    x[:, 5:] = 0
    x[0, 7, 240:280, 240:280] = 255.0
    with torch.no_grad():
        torch_logits, base_logits = wide(x), small_mobile(x[:, :5])
    ort_logits = torch.as_tensor(np.asarray(ort.model(x)))
    assert (ort_logits - torch_logits).abs().max() < 0.02              # logits of tens: float32 rounding
    assert (torch_logits - base_logits).abs().max() > 0.2              # the head did work there
