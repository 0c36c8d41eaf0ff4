"""The networks: layout equal to the published checkpoints, forward equal to the spec."""

import json
from pathlib import Path

import functional_reference as ref
import pytest
import torch

from napari_iog.models import (
    ARCHITECTURES,
    IOGConfig,
    ResNet,
    UnknownArchitectureError,
    build_model,
    load_imagenet_weights,
    resolve_device,
)

SPEC = Path(__file__).parent / "spec"
PUBLISHED = {
    # arch: (key list, parameter count from the spec)
    "iog-resnet101": ("iog_keys.json", 52_124_106),
    "iog-refine-resnet101": ("iog_refine_keys.json", 53_433_546),
    "dextr-resnet101": ("dextr_keys.json", 48_800_385),
}


@pytest.fixture(scope="module")
def published_models():
    return {arch: build_model(arch, seed=0) for arch in PUBLISHED}


@pytest.mark.parametrize("arch", PUBLISHED)
def test_state_dict_equals_published_key_list(arch, published_models):
    keys_file, n_params = PUBLISHED[arch]
    expected = json.loads((SPEC / keys_file).read_text())
    model = published_models[arch]
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == expected  # same keys, same shapes, same order
    assert sum(p.numel() for p in model.parameters()) == n_params


def _randomise_statistics(model, seed=0):
    """Random BN statistics and affine parameters, so that a wrong order of operations shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def _input(channels, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, channels, 512, 512, generator=g) * 255
    return x


def _assert_same(ours, theirs):
    scale = float(theirs.abs().max())
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def test_iog_forward_equals_published_function(published_models):
    model = _randomise_statistics(published_models["iog-resnet101"])
    x = _input(5)
    with torch.no_grad():
        fine, coarse = model(x, return_coarse=True)
        ref_fine, ref_coarse = ref.iog_forward(x, model.state_dict())
    assert fine.shape == (1, 1, 512, 512)
    _assert_same(fine, ref_fine)
    for ours, theirs in zip(coarse, ref_coarse):
        _assert_same(ours, theirs)
    with torch.no_grad():
        assert torch.equal(model(x), fine)


def test_refinement_forward_equals_published_function(published_models):
    model = _randomise_statistics(published_models["iog-refine-resnet101"], seed=3)
    x = _input(5, seed=2)
    clicks = _input(2, seed=4)
    with torch.no_grad():
        features = model.encode(x)
        fine = model.decode(features, clicks)
        ref_fine, _ = ref.iog_refine_forward(x, clicks, model.state_dict())
        assert torch.equal(model(x, clicks), fine)
        # The first pass uses the input's own guidance maps.
        assert torch.equal(model(x), model.decode(features, x[:, 3:5]))
    assert fine.shape == (1, 1, 512, 512)
    _assert_same(fine, ref_fine)


def test_dextr_forward_equals_published_function(published_models):
    model = _randomise_statistics(published_models["dextr-resnet101"], seed=5)
    x = _input(4, seed=6)
    with torch.no_grad():
        out = model(x)
        theirs = ref.dextr_forward(x, model.state_dict())
    assert out.shape == (1, 1, 512, 512)
    _assert_same(out, theirs)


@pytest.mark.parametrize("arch", sorted(a for a in ARCHITECTURES if "101" not in a and "50" not in a))
def test_light_variants_forward_shapes(arch):
    model = build_model(arch, seed=0)
    x = _input(5)[:, :, :128, :128]
    with torch.no_grad():
        if "refine" in arch:
            features = model.encode(x)
            out = model.decode(features, x[:, 3:5])
        else:
            out = model(x)
        fine, coarse = model(x, return_coarse=True)
    assert out.shape == (1, 1, 128, 128)
    assert len(coarse) == 4 and all(c.shape == (1, 1, 128, 128) for c in coarse)
    assert torch.isfinite(fine).all()


def test_resnet50_variant_builds_with_published_head_widths():
    model = build_model("iog-resnet50")
    assert model.config == IOGConfig(trunk="resnet50")
    assert model.Coarse_net.laterals[1][0].in_channels == 1024


def test_forward_rejects_wrong_input_shape():
    model = build_model("iog-resnet18")
    with pytest.raises(ValueError, match=r"\[B, 5, H, W\]"):
        model(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.zeros(1, 5, 60, 64))


def test_build_model_unknown_name_lists_known_ones():
    with pytest.raises(UnknownArchitectureError, match="iog-resnet101"):
        build_model("iog-vgg16")


def test_build_model_zero_init_is_deterministic_and_finite():
    a = build_model("iog-resnet18", init="zeros")
    b = build_model("iog-resnet18", init="zeros")
    x = _input(5)[:, :, :64, :64]
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert torch.equal(ya, yb) and torch.isfinite(ya).all()


def test_build_model_seed_is_reproducible():
    a = build_model("iog-resnet18", seed=7).state_dict()
    b = build_model("iog-resnet18", seed=7).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_imagenet_weights_load_into_a_five_channel_trunk():
    imagenet = ResNet("resnet18", in_channels=3).state_dict()
    imagenet["fc.weight"] = torch.zeros(1000, 512)
    imagenet["fc.bias"] = torch.zeros(1000)
    model = build_model("iog-resnet18")
    load_imagenet_weights(model.backbone, imagenet)
    conv1 = model.backbone.conv1.weight
    assert torch.equal(conv1[:, :3], imagenet["conv1.weight"])
    assert not conv1[:, 3:].any()  # the guidance channels start at zero, as published
    assert torch.equal(model.backbone.layer4[1].conv2.weight, imagenet["layer4.1.conv2.weight"])


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
