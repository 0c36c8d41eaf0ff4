"""`napari-iog annotate [IMAGE]`: the README's one line that opens the main job, run headless."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("napari")
pytestmark = pytest.mark.napari


def annotate(*args):
    return subprocess.run([sys.executable, "-m", "napari_iog", "annotate", *args, "--check"],
                          capture_output=True, text=True, timeout=300)


def test_annotate_opens_an_image_with_the_annotator_started(tmp_path):
    image = tmp_path / "cells.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(image)
    done = annotate(str(image))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "napari-iog default" in done.stdout           # the bundled model runs on the image


def test_annotate_without_an_image_opens_the_sample_and_a_missing_file_is_one_line():
    assert annotate().returncode == 0
    missing = annotate("nowhere.tif")
    assert missing.returncode == 1 and "nowhere.tif: no such file" in missing.stderr
    assert "Traceback" not in missing.stderr
