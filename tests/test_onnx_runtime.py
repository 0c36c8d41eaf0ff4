"""The ONNX Runtime backend: the same masks as the exact network, a cached export, and the
choice (faster here and agreeing, else torch) made at warm-up."""

import logging
import os
import shutil

import numpy as np
import pytest
from conftest import calibrate, synthetic_scene

from napari_iog import predictor as predictor_module
from napari_iog import zoo
from napari_iog.models import build_model, onnx_runtime, precision
from napari_iog.predictor import IOGPredictor

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CORNERS, INSIDE = ((55, 65), (185, 235)), (120, 150)


@pytest.fixture(autouse=True)
def float32_cpu(monkeypatch):
    """Choose as a CPU without fast bf16 does (ONNX Runtime competes with float32 only)."""
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)


@pytest.fixture(scope="module")
def network():
    return calibrate(build_model("iog-resnet18", seed=3))


@pytest.fixture(scope="module")
def exported_cache(network, tmp_path_factory):
    """A cache folder holding the network's export (made once: an export takes seconds)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(zoo.CACHE_ENV, str(cache))
        IOGPredictor(network, device="cpu", backend="onnxruntime", warmup=False)
    return cache


@pytest.fixture
def cache(exported_cache, tmp_path, monkeypatch):
    """A private copy of the cache with the export in it."""
    copy = shutil.copytree(exported_cache, tmp_path / "cache")
    monkeypatch.setenv(zoo.CACHE_ENV, str(copy))
    return copy


def exports(cache):
    return sorted((cache / onnx_runtime.CACHE_SUBDIR).glob("*.onnx"))


@pytest.fixture
def quick_export(exported_cache, monkeypatch):
    """The cache's bookkeeping without an export's seconds: "exporting" gives the graph already
    made (what the exporter makes is checked in the tests above and below)."""
    (made,) = exports(exported_cache)
    graph = made.read_bytes()
    monkeypatch.setattr(onnx_runtime, "export_onnx", lambda model, example: graph)


def test_onnx_runtime_gives_the_exact_networks_masks(network, cache):
    image, _ = synthetic_scene()
    exact = IOGPredictor(network, device="cpu", precision="float32", postprocess=False)
    ort = IOGPredictor(network, device="cpu", backend="onnxruntime", postprocess=False)
    assert ort.backend == "onnxruntime" and exact.backend == "torch" and ort.precision == "float32"
    a = ort.predict(image, corners=CORNERS, inside=INSIDE)
    b = exact.predict(image, corners=CORNERS, inside=INSIDE)
    assert 0 < a.mask.sum() < a.mask.size and np.abs(a.probability - b.probability).max() < 1e-3
    assert (a.mask ^ b.mask).sum() <= 0.001 * b.mask.sum()
    # a free batch size: three objects in one call are the three single predictions
    prompts = [dict(corners=CORNERS, inside=INSIDE), dict(corners=((10, 10), (100, 120)), inside=(50, 60)),
               dict(corners=((150, 200), (230, 310)), inside=(190, 250), negative=[(160, 300)])]
    for batched, prompt in zip(ort.predict_batch(image, prompts, batch_size=3), prompts):
        single = ort.predict(image, **prompt)
        np.testing.assert_allclose(batched.probability, single.probability, atol=1e-4)


def test_a_second_start_loads_the_cached_export(network, cache, monkeypatch):
    before = exports(cache)
    monkeypatch.setattr(onnx_runtime, "export_onnx", lambda *a: pytest.fail("exported again"))
    p = IOGPredictor(network, device="cpu", backend="onnxruntime", warmup=False)
    assert p.backend == "onnxruntime" and exports(cache) == before and len(before) == 1


def test_a_changed_network_gets_its_own_export(network, cache, quick_export):
    other = calibrate(build_model("iog-resnet18", seed=4))
    IOGPredictor(other, device="cpu", backend="onnxruntime", warmup=False)
    assert len(exports(cache)) == 2


def test_the_cache_keeps_the_most_recently_used_exports(network, cache, quick_export):
    folder = cache / onnx_runtime.CACHE_SUBDIR
    (used,) = exports(cache)
    for i in range(onnx_runtime.MAX_CACHED_EXPORTS + 2):
        old = folder / f"iog-resnet18-old{i}.onnx"
        old.write_bytes(b"an export of a network fine-tuned long ago")
        os.utime(old, (1e9 + i, 1e9 + i))
    os.utime(used, (1e9, 1e9))                # older than all of them, but loaded now
    IOGPredictor(network, device="cpu", backend="onnxruntime", warmup=False)
    other = calibrate(build_model("iog-resnet18", seed=5))
    IOGPredictor(other, device="cpu", backend="onnxruntime", warmup=False)     # a new export: prunes
    left = exports(cache)
    assert len(left) == onnx_runtime.MAX_CACHED_EXPORTS and used in left
    assert not (folder / "iog-resnet18-old0.onnx").exists() and (folder / "iog-resnet18-old7.onnx").exists()


def test_a_damaged_cached_export_is_made_again(network, cache, quick_export, caplog):
    (path,) = exports(cache)
    path.write_bytes(b"not an onnx file")
    image, _ = synthetic_scene()
    with caplog.at_level(logging.WARNING):
        p = IOGPredictor(network, device="cpu", backend="onnxruntime", warmup=False)
    assert "does not load" in caplog.text and path.stat().st_size > 1000
    assert p.predict(image, corners=CORNERS, inside=INSIDE).probability.std() > 0.01


class FakeClock:
    """The warm-up's clock: it moves only when a call said to be slow runs, so which backend
    wins is decided by the test, not by how busy the machine is."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def slow(self, call, seconds=0.3):
        def wrapped(*args, **kwargs):
            self.now += seconds
            return call(*args, **kwargs)
        return wrapped


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(predictor_module, "warmup_clock", fake)
    return fake


def test_auto_keeps_onnx_runtime_only_where_it_is_faster(network, cache, clock, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(IOGPredictor, "_forward", clock.slow(IOGPredictor._forward))
        faster = IOGPredictor(network, device="cpu", backend="auto")
    report = faster.warmup_check["onnxruntime"]
    assert faster.backend == "onnxruntime" and report["kept"] and report["torch_s"] > report["onnxruntime_s"]
    assert report["iou"] > 0.99
    monkeypatch.setattr(onnx_runtime.OnnxRuntimeNetwork, "__call__",
                        clock.slow(onnx_runtime.OnnxRuntimeNetwork.__call__))
    slower = IOGPredictor(network, device="cpu", backend="auto")
    report = slower.warmup_check["onnxruntime"]
    assert slower.backend == "torch" and not report["kept"] and report["onnxruntime_s"] > report["torch_s"]


def test_auto_drops_an_export_whose_masks_differ(network, cache, clock, monkeypatch):
    call = onnx_runtime.OnnxRuntimeNetwork.__call__
    monkeypatch.setattr(onnx_runtime.OnnxRuntimeNetwork, "__call__", lambda self, x: -call(self, x))
    monkeypatch.setattr(IOGPredictor, "_forward", clock.slow(IOGPredictor._forward))
    p = IOGPredictor(network, device="cpu", backend="auto")
    assert p.backend == "torch" and p.warmup_check["onnxruntime"]["iou"] < 0.5
    image, _ = synthetic_scene()
    exact = IOGPredictor(network, device="cpu", precision="float32")
    np.testing.assert_array_equal(p.predict(image, corners=CORNERS, inside=INSIDE).mask,
                                  exact.predict(image, corners=CORNERS, inside=INSIDE).mask)


def test_a_network_that_cannot_be_exported_stays_on_torch(network, tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))

    def fails(*args):
        raise RuntimeError("unsupported operator")
    monkeypatch.setattr(onnx_runtime, "export_onnx", fails)
    p = IOGPredictor(network, device="cpu", backend="auto")
    assert p.backend == "torch" and "could not be exported" in p.warmup_check["onnxruntime"]["reason"]
    with pytest.raises(onnx_runtime.BackendUnavailable, match="unsupported operator"):
        IOGPredictor(network, device="cpu", backend="onnxruntime")
    assert not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob("*.part"))


def test_a_cache_folder_that_cannot_be_written_leaves_the_model_on_torch(network, tmp_path, monkeypatch):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv(zoo.CACHE_ENV, str(blocked))
    p = IOGPredictor(network, device="cpu", backend="auto")
    assert p.backend == "torch" and "could not be cached" in p.warmup_check["onnxruntime"]["reason"]
    image, _ = synthetic_scene()
    assert p.predict(image, corners=CORNERS, inside=INSIDE).probability.std() > 0.01
    with pytest.raises(onnx_runtime.BackendUnavailable, match="could not be cached"):
        IOGPredictor(network, device="cpu", backend="onnxruntime", warmup=False)


def test_an_export_that_fails_to_run_leaves_the_model_on_torch(network, cache, monkeypatch):
    def fails(self, x):
        raise RuntimeError("ONNX Runtime could not run a node")
    monkeypatch.setattr(onnx_runtime.OnnxRuntimeNetwork, "__call__", fails)
    p = IOGPredictor(network, device="cpu", backend="auto")
    assert p.backend == "torch" and "could not run a node" in p.warmup_check["onnxruntime"]["reason"]


def test_without_onnx_runtime_installed(network, tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(onnx_runtime, "missing_packages", lambda: ["onnxruntime"])
    p = IOGPredictor(network, device="cpu", backend="auto")
    assert p.backend == "torch" and "napari-iog[fast]" in p.warmup_check["onnxruntime"]["reason"]
    with pytest.raises(onnx_runtime.BackendUnavailable, match=r"pip install \"napari-iog\[fast\]\""):
        IOGPredictor(network, device="cpu", backend="onnxruntime")


def test_the_backend_is_asked_for_by_name(network, monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of"):
        IOGPredictor(network, device="cpu", backend="tensorrt", warmup=False)
    with pytest.raises(ValueError, match="refinement model"):
        IOGPredictor(build_model("iog-refine-resnet18"), device="cpu", backend="onnxruntime", warmup=False)
    with pytest.raises(ValueError, match="runs float32"):
        IOGPredictor(network, device="cpu", precision="bfloat16", backend="onnxruntime", warmup=False)
    monkeypatch.setenv("NAPARI_IOG_BACKEND", "nope")
    with pytest.raises(ValueError, match="backend must be one of"):
        IOGPredictor(network, device="cpu", warmup=False)


def test_where_bf16_is_kept_onnx_runtime_is_not_exported(network, tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    p = IOGPredictor(network, device="cpu")
    assert p.precision == "bfloat16" and p.backend == "torch" and "onnxruntime" not in p.warmup_check
    assert not list(tmp_path.rglob("*.onnx"))


def test_first_clicks_run_a_graph_without_the_correction_head(corrections_network, corrections_network_exports,
                                                             tmp_path, monkeypatch):
    """A network with a correction head: a first click runs the smaller graph (which gives what
    the whole network gives without corrections) and a correction the whole one, each agreeing
    with the exact torch network."""
    monkeypatch.setenv(zoo.CACHE_ENV, str(shutil.copytree(corrections_network_exports, tmp_path / "cache")))
    wide = corrections_network
    image, _ = synthetic_scene()
    exact = IOGPredictor(wide, device="cpu", precision="float32", backend="torch", postprocess=False)
    ort = IOGPredictor(wide, device="cpu", backend="onnxruntime", postprocess=False)
    network = ort.model
    assert network.first_clicks is not None and len(exports(tmp_path / "cache")) == 2
    calls = {"whole": 0, "first clicks": 0}
    for name, session in (("whole", network.session), ("first clicks", network.first_clicks.session)):
        monkeypatch.setattr(session, "run", lambda *a, _run=session.run, _name=name:
                            (calls.__setitem__(_name, calls[_name] + 1), _run(*a))[1], raising=False)
    clicks = [dict(corners=CORNERS, inside=INSIDE), dict(corners=CORNERS, inside=INSIDE, negative=[(130, 160)])]
    for prompt, ran in zip(clicks, ({"whole": 0, "first clicks": 1}, {"whole": 1, "first clicks": 1})):
        a, b = ort.predict(image, **prompt), exact.predict(image, **prompt)
        assert np.abs(a.probability - b.probability).max() < 1e-3 and calls == ran
    first, corrected = (exact.predict(image, **prompt).probability for prompt in clicks)
    assert np.abs(first - corrected).max() > 0.01          # the head changed the answer
