"""Loading the authors' files and our own, and every way a file can be wrong."""

import os
import pickle
import stat
from collections import OrderedDict

import pytest
import torch

import napari_iog
from napari_iog.models import ARCHITECTURES, CheckpointError, build_model, load_model, save_model


def _official_state_dict(model, prefix="", drop_batches_tracked=False):
    """A state_dict as the authors' scripts saved it (OrderedDict of tensors)."""
    out = OrderedDict()
    for k, v in model.state_dict().items():
        if drop_batches_tracked and k.endswith("num_batches_tracked"):
            continue
        out[prefix + k] = v.clone()
    return out


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def _small_input(model, size=64):
    channels = 4 if "dextr" in model.arch else 5
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, channels, size, size, generator=g) * 255


@pytest.fixture(scope="module")
def resnet101_models():
    return {arch: build_model(arch, seed=1) for arch in ("iog-resnet101", "iog-refine-resnet101", "dextr-resnet101")}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_own_format_round_trip_for_every_architecture(arch, tmp_path, resnet101_models):
    model = resnet101_models.get(arch) or build_model(arch, seed=2)
    card = {"trained_on": "synthetic", "licence": "BSD-3-Clause", "metrics": {"miou@3": 0.5}}
    path = save_model(model, tmp_path / f"{arch}.pt", card=card)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"arch", "config", "state_dict", "card"}
    loaded = load_model(path)
    assert loaded.arch == arch and not loaded.training
    assert _same_weights(model, loaded)
    assert loaded.card["trained_on"] == "synthetic" and loaded.card["metrics"] == {"miou@3": 0.5}
    x = _small_input(model)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_official_state_dict_round_trip_detects_architecture(arch, tmp_path, resnet101_models):
    model = resnet101_models.get(arch) or build_model(arch, seed=3)
    path = tmp_path / "official.pth"
    torch.save(_official_state_dict(model), path)
    loaded = load_model(path)
    assert loaded.arch == arch
    assert _same_weights(model, loaded)


@pytest.mark.parametrize("prefix,drop,legacy", [
    ("module.", False, False),
    ("", True, False),
    ("module.", True, True),  # DataParallel copy saved by PyTorch < 1.6 without num_batches_tracked
])
def test_official_file_variants(prefix, drop, legacy, tmp_path, resnet101_models):
    model = resnet101_models["iog-resnet101"]
    path = tmp_path / "IOG_PASCAL_SBD.pth"
    torch.save(_official_state_dict(model, prefix, drop), path,
               _use_new_zipfile_serialization=not legacy)
    loaded = load_model(path)
    assert loaded.arch == "iog-resnet101"
    expected = {k: v for k, v in model.state_dict().items() if not (drop and k.endswith("num_batches_tracked"))}
    got = loaded.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())


def test_half_precision_file_loads_into_float32_model(tmp_path):
    model = build_model("iog-resnet18", seed=4)
    full = save_model(model, tmp_path / "full.pt")
    half = save_model(model, tmp_path / "half.pt", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_model(half)
    assert loaded.backbone.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.backbone.conv1.weight, model.backbone.conv1.weight, atol=1e-3, rtol=1e-3)


def test_load_model_passes_through_a_module():
    model = build_model("iog-resnet18").train()
    assert load_model(model) is model and not model.training


def test_top_level_api_is_exported():
    assert napari_iog.load_model is load_model and napari_iog.save_model is save_model


# --- errors a user can cause -------------------------------------------------------------

def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        load_model(tmp_path / "nothere.pth")


@pytest.mark.parametrize("content", [b"", b"this is a text file\n", b"PK\x03\x04garbage" * 10])
def test_file_that_is_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "notes.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="notes.pth"):
        load_model(path)


def test_truncated_checkpoint(tmp_path):
    path = save_model(build_model("iog-resnet18"), tmp_path / "model.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.pt"):
        load_model(path)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    _Payload.marker = marker
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": _Payload()}, f)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_model(path)
    assert not marker.exists()
    # The same inside a zip-format torch file.
    torch.save({"state": _Payload()}, tmp_path / "evil2.pth")
    assert not marker.exists()  # saving does not run it; loading must not either
    with pytest.raises(CheckpointError, match="arbitrary code"):
        load_model(tmp_path / "evil2.pth")
    assert not marker.exists()


def test_unknown_architecture(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match=r"vgg.pth.*features.0.weight"):
        load_model(path)


def test_shape_mismatch_names_the_key(tmp_path):
    state = _official_state_dict(build_model("iog-resnet18"))
    state["Fine_net.final_predict.1.weight"] = torch.zeros(2, 128, 3, 3)
    path = tmp_path / "bad_shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"bad_shape.pth.*Fine_net.final_predict.1.weight"):
        load_model(path)


def test_missing_and_unexpected_keys_name_the_key(tmp_path):
    state = _official_state_dict(build_model("iog-resnet18"))
    del state["Coarse_net.predict.2.3.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "incomplete.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"Coarse_net.predict.2.3.weight.*extra.weight"):
        load_model(path)


def test_own_format_with_unknown_architecture(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"arch": "iog-vit-huge", "config": {}, "state_dict": {"a": torch.zeros(1)}, "card": {}}, path)
    with pytest.raises(CheckpointError, match="iog-vit-huge"):
        load_model(path)


def test_card_must_be_plain_data(tmp_path):
    with pytest.raises(TypeError, match="card"):
        save_model(build_model("iog-resnet18"), tmp_path / "x.pt", card={"when": object()})
    assert not list(tmp_path.iterdir())


def test_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    model = build_model("iog-resnet18", seed=5)
    path = save_model(model, tmp_path / "model.pt", card={"version": 1})
    before = path.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(build_model("iog-resnet18", seed=6), path, card={"version": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no half-written temporary left


def test_unknown_device_is_a_clear_error(tmp_path):
    path = save_model(build_model("iog-resnet18"), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="unknown device"):
        load_model(path, device="tpu9")


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(path)


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_written_files_get_the_users_usual_mode(tmp_path):
    from napari_iog.io import atomic_write

    path = atomic_write(tmp_path / "labels.json", lambda f: f.write("{}"), mode="w")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_average_checkpoints_writes_the_mean_and_refuses_different_networks(tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "average_checkpoints.py"
    spec = importlib.util.spec_from_file_location("average_checkpoints", script)
    averaging = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(averaging)
    small = {"psp_channels": 32, "head_channels": 16}
    paths = []
    for seed in (0, 1):
        paths.append(tmp_path / f"m{seed}.pt")
        save_model(build_model("iog-resnet18", small, seed=seed), paths[-1], {"seed": seed})
    assert averaging.main([str(p) for p in paths] + ["--out", str(tmp_path / "mean.pt")]) == 0
    first, second, mean = (load_model(p).state_dict() for p in (*paths, tmp_path / "mean.pt"))
    for key, value in mean.items():
        expected = (first[key] + second[key]) / 2 if value.is_floating_point() else second[key]
        torch.testing.assert_close(value, expected)
    assert load_model(tmp_path / "mean.pt").card["averaged"] == [str(p) for p in paths]
    other = tmp_path / "other.pt"
    save_model(build_model("iog-resnet18", {"psp_channels": 16, "head_channels": 16}, seed=0), other)
    with pytest.raises(SystemExit, match="not the same network"):
        averaging.main([str(paths[0]), str(other), "--out", str(tmp_path / "bad.pt")])
    assert not (tmp_path / "bad.pt").exists()
