"""Shared fixtures: synthetic images and small networks made in the test session."""

import os

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from napari_iog import geometry as G
from napari_iog.models import build_model
from napari_iog.predictor import IOGPredictor, Prediction
from napari_iog.prompt import Prompt


def pytest_configure(config):
    # Predictors stay on torch unless a test asks for ONNX Runtime: its first start exports each
    # new network (seconds), which every test with a fresh network would pay. (A hook, not an
    # import-time line: the benchmark scripts import this file's helpers.)
    os.environ.setdefault("NAPARI_IOG_BACKEND", "torch")


def synthetic_scene(height=240, width=320, seed=0, center=(120, 150), radii=(60, 80)):
    """A textured RGB background with one bright ellipse; returns (image uint8, object mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    texture = np.sin(xx / 7.0)[..., None] * np.cos(yy / 11.0)[..., None]
    background = 90 + 30 * texture + rng.normal(0, 8, (height, width, 3))
    mask = ((yy - center[0]) / radii[0]) ** 2 + ((xx - center[1]) / radii[1]) ** 2 < 1
    image = background.copy()
    image[mask] = [220, 180, 60] + rng.normal(0, 8, (int(mask.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def calibrate(model, seed=0, batches=3, size=256):
    """Give a random network realistic BatchNorm statistics (cumulative averages over synthetic
    IOG inputs), so that its logits vary over the image like a trained network's do."""
    g = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            xs = []
            for _ in range(2):
                image, mask = synthetic_scene(size, size, seed=int(g.integers(1 << 30)),
                                              center=(size // 2, size // 2), radii=(size // 4, size // 3))
                box = G.mask_box(mask)
                crop = G.Box(0, 0, size - 1, size - 1)
                inside = G.to_frame([G.most_interior_point(mask)], crop, size)
                maps = G.guidance_maps(inside, G.outside_points(box, crop, size), size)
                xs.append(np.concatenate([image.transpose(2, 0, 1).astype(np.float32), maps]))
            model(torch.from_numpy(np.stack(xs)))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    return model.eval()


@pytest.fixture(scope="session")
def calibrated_iog18():
    return calibrate(build_model("iog-resnet18", seed=0))


@pytest.fixture(scope="session")
def calibrated_refine18():
    return calibrate(build_model("iog-refine-resnet18", seed=1))


#: a small MobileNetV2 IOG (the default's architecture) for tests that export or train one
SMALL_MOBILE = {"psp_channels": 16, "head_channels": 8, "input_size": 128}


@pytest.fixture(scope="session")
def corrections_network():
    """Like the default: the small MobileNetV2 reading the corrections' maps, with a correction
    head whose output weights do work."""
    from napari_iog.models.mobilenet import with_correction_maps

    torch.manual_seed(0)
    wide = with_correction_maps(calibrate(build_model("iog-mobilenetv2", SMALL_MOBILE, seed=0)), head=True)
    with torch.no_grad():
        torch.nn.init.normal_(wide.correction_head.out.weight, std=0.5)
    return wide


@pytest.fixture(scope="session")
def corrections_network_exports(corrections_network, tmp_path_factory):
    """A cache folder holding ``corrections_network``'s two ONNX graphs (an export takes seconds:
    the tests that need them copy this folder)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from napari_iog import zoo

    cache = tmp_path_factory.mktemp("exports")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(zoo.CACHE_ENV, str(cache))
        IOGPredictor(corrections_network, device="cpu", precision="float32", backend="onnxruntime", warmup=False)
    return cache


@pytest.fixture
def scene():
    return synthetic_scene()


class ThresholdPredictor(IOGPredictor):
    """A stand-in for the network that segments the bright region (> 128) at the inside click: rules
    built on predictions (propagation, batch prediction) are then checked against objects
    known exactly. Takes the clicks exactly as IOGPredictor does."""

    def __init__(self):
        self.model = torch.nn.Identity()
        self.model.card = {"name": "threshold (test)"}
        self.arch, self.device, self.precision = "iog-resnet18", torch.device("cpu"), "float32"
        self.is_dextr = self.is_refine = False
        self.threshold = 0.5
        self.calls = []

    def predict(self, image, corners=None, inside=None, positive=(), negative=(), *, prompt=None,
                threshold=None, **options):
        job = prompt or Prompt.check(image.shape[:2], corners, inside)
        crop = job.crop
        self.calls.append((job.box, job.inside[0]))
        window_data, window = G.read_crop(image, crop, image.shape[:2])
        gray = window_data if window_data.ndim == 2 else window_data[..., 0]
        bright = G.pad_to_crop((gray > 128)[..., None], window, crop)[..., 0]
        parts, _ = ndimage.label(bright)
        r, c = job.inside[0]
        probability = (parts == parts[r - crop.r0, c - crop.c0]) & bright
        probability = probability.astype(np.float32)
        return Prediction(probability, crop, job.box, tuple(image.shape[:2]), 0.5, {})

    def predict_batch(self, image, prompts, **options):
        return [self.predict(image, prompt=p, **options) if isinstance(p, Prompt)
                else self.predict(image, **p, **options) for p in prompts]


class GuidanceFollower(nn.Module):
    """logit = (inside map - outside map) / 20 - 0.5, one fixed 1x1 convolution."""

    arch = "iog-resnet18"   # it takes IOG's 5-channel input and returns IOG's output shape

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(5, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0, 0, 0, 1 / 20, -1 / 20]).view(1, 5, 1, 1))
            self.conv.bias.fill_(-0.5)
        self.card = {"name": "guidance follower (test)"}

    def forward(self, x):
        return self.conv(x)


class RecordingLearner:
    """The learner's interface (``BackgroundLearner``'s) for tests: keeps what it is sent, and
    ``poll`` hands over what a test put in ``news`` (weights, or an error to raise)."""

    def __init__(self, network, settings):
        self.network, self.objects, self.report, self.closed = network, {}, None, False
        self.news: list = []

    def add(self, obj):
        self.objects[obj.key] = obj

    def remove(self, key):
        self.objects.pop(key, None)

    def poll(self, timeout=0.0):
        item = self.news.pop(0) if self.news else None
        if isinstance(item, Exception):
            raise item
        if item is not None:
            self.report = item.report
        return item

    def close(self):
        self.closed = True
