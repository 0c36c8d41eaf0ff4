"""IOGPredictor: the published protocol, the images users have, corrections, bad input."""

import copy

import numpy as np
import opencv_protocol as ref
import pytest
import torch
from conftest import synthetic_scene
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from napari_iog import geometry as G
from napari_iog.models import build_model, save_model
from napari_iog.predictor import IOGPredictor

CASES = [
    # (image shape, corners, inside): upsampled, reversed diagonal, whole image, downsampled, tiny
    ((240, 320), ((55, 65), (185, 235)), (120, 150)),
    ((240, 320), ((235, 300), (5, 3)), (100, 100)),
    ((240, 320), ((0, 0), (239, 319)), (120, 160)),
    ((1000, 1400), ((100, 200), (900, 1300)), (500, 700)),
    ((60, 80), ((3, 5), (30, 40)), (17, 20)),
]


@pytest.fixture(scope="module")
def exact(calibrated_iog18):
    """The published protocol: the network's raw thresholded output, no clean-up."""
    return IOGPredictor(calibrated_iog18, device="cpu", precision="float32", warmup=False, postprocess=False)


@pytest.mark.parametrize("shape,corners,inside", CASES)
def test_matches_opencv_reimplementation_of_published_protocol(exact, calibrated_iog18, shape, corners, inside):
    image, _ = synthetic_scene(*shape, seed=shape[0])
    res = exact.predict(image, corners=corners, inside=inside)
    theirs, _ = ref.reference_probability(calibrated_iog18, image, corners, inside)
    x, _, crop = exact.network_input(image, corners, inside)
    x_ref, _ = ref.reference_input(image, corners, inside)
    np.testing.assert_allclose(x.numpy(), x_ref, atol=1e-3)  # same network input, every channel
    window = crop.clip(shape).slices()
    ours_mask, their_mask = res.mask, theirs > 0.5
    iou = (ours_mask & their_mask).sum() / max((ours_mask | their_mask).sum(), 1)
    assert iou >= 0.97
    assert np.abs(res.probability[window] - theirs[window]).mean() <= 0.02
    outside = np.ones(shape, bool)
    outside[window] = False
    assert not res.probability[outside].any() and not res.mask[outside].any()


def test_result_fields(exact, scene):
    image, _ = scene
    res = exact.predict(image, corners=((55, 65), (185, 235)), inside=(120, 150))
    assert res.mask.shape == image.shape[:2] and res.mask.dtype == bool
    assert res.probability.dtype == np.float32 and 0 <= res.probability.min() and res.probability.max() <= 1
    assert res.box == G.Box(55, 65, 185, 235)
    assert res.crop_box == G.Box(25, 35, 215, 265)
    assert {"read", "prepare", "forward", "paste", "total"} <= set(res.timings)
    assert np.array_equal(res.mask, res.probability > 0.5)
    labels = np.zeros(image.shape[:2], np.uint16)
    labels[res.window.slices()][res.window_mask()] = 7
    assert np.array_equal(labels == 7, res.mask)


def test_corner_order_and_diagonal_do_not_matter(exact, scene):
    image, _ = scene
    a = exact.predict(image, corners=((55, 65), (185, 235)), inside=(120, 150))
    b = exact.predict(image, corners=((185, 235), (55, 65)), inside=(120, 150))
    c = exact.predict(image, corners=((55, 235), (185, 65)), inside=(120, 150))
    assert np.array_equal(a.probability, b.probability) and np.array_equal(a.probability, c.probability)


def test_float_clicks_are_napari_pixels(exact, scene):
    image, _ = scene
    a = exact.predict(image, corners=((55, 65), (185, 235)), inside=(120, 150))
    b = exact.predict(image, corners=((54.6, 65.4), (185.2, 234.51)), inside=(120.3, 149.7))
    assert np.array_equal(a.probability, b.probability)


def test_threshold_is_configurable(exact, scene):
    image, _ = scene
    res = exact.predict(image, corners=((55, 65), (185, 235)), inside=(120, 150), threshold=0.9)
    assert np.array_equal(res.mask, res.probability > 0.9)


# --- images users have --------------------------------------------------------------------

def test_grayscale_is_replicated_to_rgb(exact, scene):
    image, _ = scene
    gray = image[..., 1]
    a = exact.predict(gray, corners=((55, 65), (185, 235)), inside=(120, 150))
    b = exact.predict(np.repeat(gray[..., None], 3, -1), corners=((55, 65), (185, 235)), inside=(120, 150))
    assert np.array_equal(a.probability, b.probability)


def test_rgba_drops_alpha(exact, scene):
    image, _ = scene
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 17, np.uint8)], -1)
    a = exact.predict(rgba, corners=((55, 65), (185, 235)), inside=(120, 150))
    b = exact.predict(image, corners=((55, 65), (185, 235)), inside=(120, 150))
    assert np.array_equal(a.probability, b.probability)


def test_uint16_with_contrast_limits_equals_the_uint8_view(exact, scene):
    image, _ = scene
    wide = image.astype(np.uint16) * 200 + 1000
    a = exact.predict(wide, corners=((55, 65), (185, 235)), inside=(120, 150), contrast_limits=(1000, 1000 + 255 * 200))
    b = exact.predict(image, corners=((55, 65), (185, 235)), inside=(120, 150))
    np.testing.assert_allclose(a.probability, b.probability, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32, np.float64])
def test_other_dtypes_are_normalised(exact, scene, dtype):
    image, _ = scene
    data = (image.astype(np.float64) / 255.0 * 3000 - 500).astype(dtype)
    res = exact.predict(data, corners=((55, 65), (185, 235)), inside=(120, 150))
    assert res.mask.any() and np.isfinite(res.probability).all()


def test_multichannel_needs_and_uses_a_channel_choice(exact, scene):
    image, _ = scene
    five = np.concatenate([image, image[..., :2]], -1)
    with pytest.raises(ValueError, match="channels"):
        exact.predict(five, corners=((55, 65), (185, 235)), inside=(120, 150))
    a = exact.predict(five, corners=((55, 65), (185, 235)), inside=(120, 150), channels=(0, 1, 2))
    b = exact.predict(image, corners=((55, 65), (185, 235)), inside=(120, 150))
    assert np.array_equal(a.probability, b.probability)


class RecordingArray:
    """An array-like that records what is read from it, like a lazy dask/zarr array."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.data[key]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole image was loaded")


def test_reads_only_the_crop_of_a_lazy_array(exact, scene):
    image, _ = scene
    lazy = RecordingArray(image)
    res = exact.predict(lazy, corners=((55, 65), (185, 235)), inside=(120, 150))
    assert lazy.reads == [(slice(25, 216), slice(35, 266))]
    same = exact.predict(image, corners=((55, 65), (185, 235)), inside=(120, 150))
    assert np.array_equal(res.probability, same.probability)


def test_dask_array(exact, scene):
    da = pytest.importorskip("dask.array")
    image, _ = scene
    res = exact.predict(da.from_array(image, chunks=(64, 64, 3)), corners=((55, 65), (185, 235)), inside=(120, 150))
    same = exact.predict(image, corners=((55, 65), (185, 235)), inside=(120, 150))
    assert np.array_equal(res.probability, same.probability)


# --- corrections and batches ----------------------------------------------------------------

def test_corrections_are_drawn_into_the_guidance_maps(exact, scene):
    image, _ = scene
    corners, inside = ((55, 65), (185, 235)), (120, 150)
    x0, _, crop = exact.network_input(image, corners, inside)
    x1, _, _ = exact.network_input(image, corners, inside, positive=[(70, 100)], negative=[(180, 230)])
    assert torch.equal(x0[:3], x1[:3])
    (pr, pc), = G.to_frame([(70, 100)], crop).astype(int)
    (nr, nc), = G.to_frame([(180, 230)], crop).astype(int)
    assert x1[3, pr, pc] == pytest.approx(255) and x0[3, pr, pc] < 1
    assert x1[4, nr, nc] == pytest.approx(255) and x0[4, nr, nc] < 1
    res = exact.predict(image, corners=corners, inside=inside, negative=[(180, 230)])
    assert res.clicks["negative"] == [(180, 230)]


def test_predict_batch_equals_single_predictions(exact, scene):
    image, _ = scene
    prompts = [dict(corners=((55, 65), (185, 235)), inside=(120, 150)),
               dict(corners=((10, 10), (100, 120)), inside=(50, 60), negative=[(20, 20)]),
               dict(corners=((150, 200), (230, 310)), inside=(190, 250))]
    batch = exact.predict_batch(image, prompts, batch_size=2)
    for prompt, res in zip(prompts, batch):
        single = exact.predict(image, **prompt)
        np.testing.assert_allclose(res.probability, single.probability, atol=1e-5)


def test_refinement_caches_backbone_and_matches_full_network(calibrated_refine18, scene, monkeypatch):
    image, _ = scene
    p = IOGPredictor(calibrated_refine18, device="cpu", precision="float32", warmup=False)
    encodes = []
    original = p.model.encode
    monkeypatch.setattr(p.model, "encode", lambda x: encodes.append(1) or original(x))
    sides, side_maps = [], p.model.Coarse_net.side_maps
    monkeypatch.setattr(p.model.Coarse_net, "side_maps", lambda f: sides.append(1) or side_maps(f))
    corners, inside = ((55, 65), (185, 235)), (120, 150)
    first = p.predict(image, corners=corners, inside=inside)
    second = p.predict(image, corners=corners, inside=inside, positive=[(70, 100)])
    third = p.predict(image, corners=corners, inside=inside, positive=[(70, 100)], negative=[(190, 240)])
    assert len(encodes) == 1  # the backbone ran for the first click only
    assert len(sides) == 1    # and so did the decoder's click-independent maps
    x, clicks, _ = p.network_input(image, corners, inside, positive=[(70, 100)], negative=[(190, 240)])
    with torch.no_grad():
        full = torch.sigmoid(calibrated_refine18(x[None], clicks[None]))
    fresh = p.predict_batch(image, [dict(corners=corners, inside=inside, positive=[(70, 100)],
                                         negative=[(190, 240)])])[0]  # no cache: whole network
    np.testing.assert_allclose(third.probability, fresh.probability, atol=1e-5)
    assert not np.array_equal(first.probability, second.probability)
    assert full.shape == (1, 1, 512, 512)
    # Corrections went to the click maps only; the backbone input holds the three clicks.
    x0, clicks0, _ = p.network_input(image, corners, inside)
    assert torch.equal(x, x0) and torch.equal(clicks0, x0[3:5]) and not torch.equal(clicks, clicks0)
    # Another object (another box) runs the backbone again; the same object again does not.
    before = len(encodes)
    p.predict(image, corners=((10, 10), (100, 120)), inside=(50, 60))
    p.predict(image, corners=((10, 10), (100, 120)), inside=(50, 60), negative=[(90, 110)])
    assert len(encodes) == before + 1


def test_dextr_extreme_points(scene):
    image, mask = scene
    p = IOGPredictor(build_model("dextr-resnet101", seed=0), device="cpu", precision="float32", warmup=False)
    res = p.predict_extreme(image, [(120, 70), (120, 230), (60, 150), (180, 150)])
    assert res.threshold == 0.8 and res.box == G.Box(60, 70, 180, 230) and res.crop_box == res.box.grow(50)
    outside_box = np.ones(image.shape[:2], bool)
    outside_box[res.box.slices()] = False
    assert not res.probability[outside_box].any()
    with pytest.raises(ValueError, match="predict_extreme"):
        p.predict(image, corners=((55, 65), (185, 235)), inside=(120, 150))
    with pytest.raises(ValueError, match="four"):
        p.predict_extreme(image, [(120, 70), (120, 230), (60, 150)])


def test_iog_model_refuses_extreme_points(exact, scene):
    with pytest.raises(ValueError, match="IOG model"):
        exact.predict_extreme(scene[0], [(120, 70), (120, 230), (60, 150), (180, 150)])


# --- device, precision, loading ---------------------------------------------------------------

def test_loads_a_checkpoint_path_and_warms_up(tmp_path, calibrated_iog18, scene):
    path = save_model(calibrated_iog18, tmp_path / "m.pt")
    p = IOGPredictor(path, device="cpu")  # precision auto, warm-up on
    assert p.precision in ("float32", "bfloat16")
    res = p.predict(scene[0], corners=((55, 65), (185, 235)), inside=(120, 150))
    exact = IOGPredictor(path, device="cpu", precision="float32", warmup=False)
    ref_mask = exact.predict(scene[0], corners=((55, 65), (185, 235)), inside=(120, 150)).mask
    iou = (res.mask & ref_mask).sum() / max((res.mask | ref_mask).sum(), 1)
    assert iou >= 0.95


@pytest.mark.parametrize("kwargs,match", [
    (dict(device="quantum"), "unknown device"),
    (dict(precision="int4"), "precision"),
    (dict(threshold=1.5), "threshold"),
])
def test_bad_settings(calibrated_iog18, kwargs, match):
    with pytest.raises(ValueError, match=match):
        IOGPredictor(calibrated_iog18, warmup=False, **kwargs)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        IOGPredictor(tmp_path / "nope.pth")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_matches_cpu(calibrated_iog18, scene):
    image, _ = scene
    cpu = IOGPredictor(calibrated_iog18, device="cpu", precision="float32", warmup=False)
    gpu = IOGPredictor(build_model("iog-resnet18"), device="cuda", warmup=True)
    gpu.model.load_state_dict(calibrated_iog18.state_dict())
    a = cpu.predict(image, corners=((55, 65), (185, 235)), inside=(120, 150)).mask
    b = gpu.predict(image, corners=((55, 65), (185, 235)), inside=(120, 150)).mask
    assert (a & b).sum() / max((a | b).sum(), 1) >= 0.97


# --- bad input: a clear ValueError, never a crash deep in torch ------------------------------------

@pytest.mark.parametrize("corners,inside,extra,match", [
    (((55, 65), (185, 400)), (120, 150), {}, "outside the image"),
    (((-3, 65), (185, 235)), (120, 150), {}, "outside the image"),
    (((55, 65), (55, 235)), (55, 150), {}, "only 1 x 171"),
    (((55, 65), (185, 65)), (120, 65), {}, "131 x 1 pixels"),
    (((55, 65), (185, 235)), (200, 150), {}, "inside click .* outside the box"),
    (((55, 65), (185, 235)), (120, 150), {"negative": [(5, 5)]}, "negative click .* outside the region"),
    (((55, 65), (185, 235)), (120, 150), {"positive": [(120, 500)]}, "outside the image"),
    (((55, 65),), (120, 150), {}, "two corner"),
    (((55, 65), (185, float("nan"))), (120, 150), {}, "finite"),
    (((55, 65), (185, 235)), "centre", {}, "row, col"),
])
def test_bad_clicks(exact, scene, corners, inside, extra, match):
    with pytest.raises(G.ClickError, match=match):
        exact.predict(scene[0], corners=corners, inside=inside, **extra)


@pytest.mark.parametrize("image,match", [
    (np.zeros((0, 0, 3), np.uint8), "too small"),
    (np.zeros((5, 64, 64, 3), np.uint8), "2D plane"),
    (np.zeros((30, 64, 64), np.uint8), "3D stack"),
    (np.zeros((64, 64), complex), "numeric"),
    (np.array([["a"] * 8] * 8), "numeric"),
])
def test_bad_images(exact, image, match):
    with pytest.raises(ValueError, match=match):
        exact.predict(image, corners=((1, 1), (6, 6)), inside=(3, 3))


def test_nan_pixels_in_the_crop(exact, scene):
    image = scene[0].astype(np.float32)
    image[100, 100] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        exact.predict(image, corners=((55, 65), (185, 235)), inside=(120, 150))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(2, 90), width=st.integers(2, 90),
    dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.float64, np.bool_]),
    channels=st.sampled_from([0, 1, 3, 4]),
    clicks=st.lists(st.tuples(st.one_of(st.floats(-20, 110), st.just(float("nan"))), st.floats(-20, 110)),
                    min_size=3, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_random_clicks_give_a_mask_or_a_clear_error(exact, height, width, dtype, channels, clicks, seed):
    rng = np.random.default_rng(seed)
    shape = (height, width) + ((channels,) if channels else ())
    image = (rng.random(shape) * 300).astype(dtype)
    corners, inside, negative = clicks[:2], clicks[2], clicks[3:]
    try:
        res = exact.predict(image, corners=corners, inside=inside, negative=negative)
    except ValueError:
        return  # a clear error (ClickError is a ValueError): fine
    assert res.mask.shape == (height, width) and res.mask.dtype == bool
    assert np.isfinite(res.probability).all() and res.probability.min() >= 0 and res.probability.max() <= 1
    outside = np.ones((height, width), bool)
    outside[res.window.slices()] = False
    assert not res.mask[outside].any()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.integers(3, 120), width=st.integers(3, 120), data=st.data())
def test_valid_clicks_always_give_a_mask(exact, height, width, data):
    r0 = data.draw(st.integers(0, height - 2))
    r1 = data.draw(st.integers(r0 + 1, height - 1))
    c0 = data.draw(st.integers(0, width - 2))
    c1 = data.draw(st.integers(c0 + 1, width - 1))
    inside = (data.draw(st.integers(r0, r1)), data.draw(st.integers(c0, c1)))
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    res = exact.predict(image, corners=((r1, c0), (r0, c1)), inside=inside)
    assert res.mask.shape == (height, width)


def test_folded_batchnorm_computes_the_same_function(calibrated_refine18):
    from napari_iog.models.precision import fuse_conv_bn

    fused = fuse_conv_bn(calibrated_refine18)
    # Only the four coarse heads keep a BN(1): it follows an upsample, not a convolution.
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules()) == 4
    x = torch.rand(1, 5, 128, 128) * 255
    with torch.no_grad():
        a, b = calibrated_refine18(x), fused(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


@pytest.mark.parametrize("fold", [False, True])
def test_finenet_projecting_before_upsampling_computes_the_same_function(calibrated_refine18, fold):
    from napari_iog.models.precision import fast_copy, fuse_conv_bn

    model = fast_copy(calibrated_refine18) if fold else copy.deepcopy(calibrated_refine18)
    assert model.Fine_net.project_before_upsampling == fold
    model.Fine_net.project_before_upsampling = True
    reference = fuse_conv_bn(calibrated_refine18) if fold else calibrated_refine18
    assert not reference.Fine_net.project_before_upsampling
    x = torch.rand(2, 5, 128, 128) * 255
    with torch.no_grad():
        a, b = reference(x), model(x.contiguous(memory_format=torch.channels_last) if fold else x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


def test_fast_path_leaves_the_callers_model_alone(calibrated_iog18):
    before = {k: v.clone() for k, v in calibrated_iog18.state_dict().items()}
    p = IOGPredictor(calibrated_iog18, device="cpu", precision="auto")
    after = calibrated_iog18.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert p.model is not calibrated_iog18 or p.precision == "float32"


def test_warmup_falls_back_to_float32_when_the_fast_path_disagrees(calibrated_iog18, monkeypatch, scene):
    import napari_iog.predictor as predictor_module

    def broken_fusion(model):
        broken = build_model("iog-resnet18", init="zeros")  # a different function entirely
        with torch.no_grad():
            broken.Fine_net.final_predict[2].bias.fill_(-5)
        return broken

    monkeypatch.setattr(predictor_module, "fast_copy", broken_fusion)
    p = IOGPredictor(calibrated_iog18, device="cpu", precision="auto")
    assert p.warmup_check["kept"] is False and p.precision == "float32" and p.model is calibrated_iog18
    exact = IOGPredictor(calibrated_iog18, device="cpu", precision="float32", warmup=False)
    corners, inside = ((55, 65), (185, 235)), (120, 150)
    assert np.array_equal(p.predict(scene[0], corners=corners, inside=inside).probability,
                          exact.predict(scene[0], corners=corners, inside=inside).probability)


class StrayPieces(torch.nn.Module):
    """A fixed 512-frame output: the object (a disc at the centre), a 1-px line along the frame's
    edge (outside the clicked box, as crop-edge artefacts are) and a second blob inside the box."""

    arch = "iog-resnet18"

    def forward(self, x):
        yy, xx = torch.meshgrid(torch.arange(512.0), torch.arange(512.0), indexing="ij")
        disc = (yy - 256) ** 2 + (xx - 256) ** 2 < 90 ** 2
        blob = (yy - 150) ** 2 + (xx - 420) ** 2 < 25 ** 2
        edge = torch.zeros(512, 512, dtype=torch.bool)
        edge[3, :] = edge[:, 3] = True
        logit = torch.where(disc | blob | edge, 5.0, -5.0)
        return logit.expand(x.shape[0], 1, 512, 512)


def test_masks_keep_only_the_clicked_object_inside_the_box():
    """The user said the object is in the box: stray lines outside it and pieces away from the
    clicks are dropped; a positive click on a piece keeps it; postprocess=False is the raw output."""
    image = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    corners, inside = ((60, 60), (240, 240)), (150, 150)
    p = IOGPredictor(StrayPieces(), device="cpu", precision="float32", warmup=False)
    res = p.predict(image, corners=corners, inside=inside)
    box = np.zeros(image.shape[:2], bool)
    box[60:241, 60:241] = True
    assert res.mask.any() and not (res.mask & ~box).any()
    assert ndimage.label(res.mask, structure=np.ones((3, 3)))[1] == 1 and res.mask[inside]
    raw = p.predict(image, corners=corners, inside=inside, postprocess=False)
    assert (raw.mask & ~box).sum() > 100                          # the crop-edge line
    assert ndimage.label(raw.mask & box, structure=np.ones((3, 3)))[1] == 2
    # the second blob's centre in image pixels: frame (150, 420) -> crop of 241 px from 30
    blob = (round(30 + 150 * 240 / 511), round(30 + 420 * 240 / 511))
    assert raw.mask[blob] and not res.mask[blob]
    kept = p.predict(image, corners=corners, inside=inside, positive=[blob])
    assert kept.mask[blob] and kept.mask[inside] and not (kept.mask & ~box).any()
    off = IOGPredictor(StrayPieces(), device="cpu", precision="float32", warmup=False, postprocess=False)
    np.testing.assert_array_equal(off.predict(image, corners=corners, inside=inside).mask, raw.mask)
