"""The package installs as a napari plugin and its core stays free of napari and Qt."""

import subprocess
import sys

import numpy as np
import pytest


def test_manifest_validates_with_npe2():
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-iog"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_npe2_lists_the_plugin():
    listing = subprocess.run([sys.executable, "-m", "npe2", "list"], capture_output=True, text=True)
    assert "napari-iog" in listing.stdout

    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover()
    assert "napari-iog" in {m.name for m in pm.iter_manifests()}
    manifest = pm.get_manifest("napari-iog")
    assert {s.key for s in manifest.contributions.sample_data} == {"photo", "microscopy"}


def test_core_imports_without_napari_or_qt():
    code = ("import sys, napari_iog, napari_iog.models; "
            "bad = [m for m in ('napari', 'qtpy', 'PyQt6', 'PySide6', 'magicgui') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sample_data_functions_return_images():
    from napari_iog._napari import sample_data as _sample_data

    (rgb, meta), = _sample_data.photo()
    assert rgb.ndim == 3 and rgb.shape[-1] == 3 and meta["rgb"]
    (gray, _), = _sample_data.microscopy()
    assert gray.ndim == 2 and gray.dtype == np.uint8


@pytest.mark.napari
def test_napari_opens_the_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-iog", "photo")
    assert viewer.layers[-1].rgb and viewer.layers[-1].data.shape == (512, 512, 3)
