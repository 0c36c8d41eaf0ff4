"""precision="int8": the network quantized for CPUs, its masks close to float32's, made once and
cached, refused clearly where it cannot run, and a failure that leaves nothing half-written."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_scene

from napari_iog import int8_calibration, zoo
from napari_iog.models import int8 as int8_module
from napari_iog.models import onnx_runtime, precision
from napari_iog.predictor import IOGPredictor

pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("onnxscript")

CORNERS, INSIDE = ((55, 65), (185, 235)), (120, 150)


@pytest.fixture(autouse=True)
def few_pictures(monkeypatch):
    """Calibrate on two pictures (the full set takes seconds a graph)."""
    monkeypatch.setattr(int8_calibration, "CALIBRATION_PICTURES", ("coins", "astronaut"))
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)


@pytest.fixture(scope="module")
def int8_exports(corrections_network, corrections_network_exports, tmp_path_factory):
    """The float32 exports and their int8 graphs, made once for this file."""
    cache = shutil.copytree(corrections_network_exports, tmp_path_factory.mktemp("int8") / "cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(int8_calibration, "CALIBRATION_PICTURES", ("coins", "astronaut"))
        patch.setenv(zoo.CACHE_ENV, str(cache))
        IOGPredictor(corrections_network, device="cpu", precision="int8", warmup=False)
    return cache


def _use_cache(source, tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(shutil.copytree(source, tmp_path / "cache")))


def _graphs(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache" / onnx_runtime.CACHE_SUBDIR).glob("*.onnx"))


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_int8_masks_follow_float32_for_first_clicks_and_corrections(corrections_network, int8_exports, tmp_path,
                                                                     monkeypatch):
    _use_cache(int8_exports, tmp_path, monkeypatch)
    image, _ = synthetic_scene()
    exact = IOGPredictor(corrections_network, device="cpu", precision="float32", backend="torch", warmup=False)
    fast = IOGPredictor(corrections_network, device="cpu", precision="int8", warmup=False)
    assert (fast.backend, fast.precision) == ("onnxruntime", "int8")
    int8_graphs = [name for name in _graphs(tmp_path) if "-int8" in name]
    assert len(int8_graphs) == 2          # first clicks (no correction head) and corrections
    assert fast.model.first_clicks is not None and "-int8" in fast.model.first_clicks.path.name
    for negative in ([], [(120, 200)]):
        here = exact.predict(image, corners=CORNERS, inside=INSIDE, negative=negative, postprocess=False)
        there = fast.predict(image, corners=CORNERS, inside=INSIDE, negative=negative, postprocess=False)
        assert _iou(here.crop_mask, there.crop_mask) > 0.9
        assert np.abs(here.crop_probability - there.crop_probability).mean() < 0.05


def test_int8_graphs_are_made_once(corrections_network, int8_exports, tmp_path, monkeypatch):
    _use_cache(int8_exports, tmp_path, monkeypatch)
    made = _graphs(tmp_path)

    def no_second_calibration(*args, **kwargs):
        raise AssertionError("calibrated again although the int8 graphs are cached")

    monkeypatch.setattr(int8_calibration, "calibration_inputs", no_second_calibration)
    monkeypatch.setattr("napari_iog.predictor.calibration_inputs", no_second_calibration)
    again = IOGPredictor(corrections_network, device="cpu", precision="int8", warmup=False)
    assert again.precision == "int8" and _graphs(tmp_path) == made


def test_a_failed_quantization_says_why_and_leaves_no_int8_file(corrections_network, corrections_network_exports,
                                                                 tmp_path, monkeypatch):
    import onnxruntime.quantization as quantization

    _use_cache(corrections_network_exports, tmp_path, monkeypatch)

    def refuses(*args, **kwargs):
        raise RuntimeError("no kernel for this graph")

    monkeypatch.setattr(quantization, "quantize_static", refuses)
    with pytest.raises(onnx_runtime.BackendUnavailable, match="int8 network could not be made.*no kernel"):
        IOGPredictor(corrections_network, device="cpu", precision="int8", warmup=False)
    assert not [name for name in _graphs(tmp_path) if "-int8" in name]
    leftovers = [p for p in (tmp_path / "cache" / onnx_runtime.CACHE_SUBDIR).iterdir() if p.is_dir()]
    assert not leftovers


def test_int8_is_refused_where_it_cannot_run(corrections_network):
    with pytest.raises(ValueError, match="int8.*CPU"):
        precision.choose_precision("int8", torch.device("cuda"))
    with pytest.raises(ValueError, match="int8.*ONNX Runtime.*torch"):
        IOGPredictor(corrections_network, device="cpu", precision="int8", backend="torch", warmup=False)


def test_calibration_inputs_are_first_clicks_and_corrections_as_the_predictor_feeds_them():
    maps_of_first = []
    inputs = int8_calibration.calibration_inputs(8, lambda x: maps_of_first.append(x) or torch.full((512, 512), 0.5))
    assert len(inputs) >= 4 and len(inputs) % 2 == 0 and len(maps_of_first) == len(inputs) // 2
    for first, corrected in zip(inputs[::2], inputs[1::2]):
        assert first.shape == corrected.shape == (1, 8, 512, 512) and first.dtype == np.float32
        assert not first[0, 5:].any()                     # first clicks: no correction maps
        assert corrected[0, 5].max() == pytest.approx(127.5) and corrected[0, 6].max() == corrected[0, 7].max() == 255
        np.testing.assert_array_equal(first[0, :3], corrected[0, :3])      # the same crop
    plain = int8_calibration.calibration_inputs(5, corrections=False)
    assert len(plain) == len(inputs) // 2 and plain[0].shape == (1, 5, 512, 512)
    assert int8_module.quantized_path(Path("/c/net.onnx")).name.startswith("net-int8")
