"""The model that ships inside the package: present, intact, used wherever no model is named."""

import numpy as np
import pytest
import tifffile
from conftest import synthetic_scene

from napari_iog import IOGPredictor, zoo
from napari_iog.cli import main as cli
from napari_iog.evaluation import iou
from napari_iog.models.checkpoint import read_checkpoint


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "empty-cache"))
    return tmp_path / "empty-cache"


@pytest.fixture(scope="module")
def default_predictor():
    return IOGPredictor(device="cpu", precision="float32")


def test_the_default_model_ships_whole_with_its_card(empty_cache):
    entry = zoo.WEIGHTS[zoo.DEFAULT_MODEL]
    path = zoo.resolve(zoo.DEFAULT_MODEL)
    assert path.parent == zoo.BUNDLED_DIR and entry.bundled
    # the real file (not a Git LFS pointer, not truncated), within the 12 MB the default may take
    assert 1e6 < path.stat().st_size <= 12e6
    assert zoo.sha256_of(path) == entry.sha256
    assert zoo.verify(zoo.DEFAULT_MODEL)["status"] == "sha256 matches"
    checkpoint = read_checkpoint(path)
    assert checkpoint["arch"] == entry.arch == "iog-mobilenetv2"
    card = checkpoint["card"]
    licences = " ".join(card["trained_on"])
    for name in ("CC BY-NC-SA", "BSDS", "CVPPP", "COCO", "Data Science Bowl", "Clothing", "Pet"):
        assert name in licences
    for dataset in ("grabcut", "berkeley"):
        assert {"miou@3", "noc85", "noc90"} <= set(card["evaluation"][dataset])
    assert (zoo.BUNDLED_DIR / "README.md").is_file()     # the model card for people


def test_nothing_is_downloaded_and_the_cache_is_not_needed(empty_cache, capsys):
    assert zoo.fetch(zoo.DEFAULT_MODEL) == zoo.resolve(zoo.DEFAULT_MODEL)
    assert not empty_cache.exists()
    row = next(r for r in zoo.list_weights() if r["name"] == zoo.DEFAULT_MODEL)
    assert row["present"] and row["bundled"] and row["source"] == "bundled with napari-iog"
    assert cli(["weights", "list"]) == 0
    assert "bundled" in capsys.readouterr().out


def test_a_lost_bundled_file_says_to_reinstall(empty_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path / "nothing-here")
    with pytest.raises(FileNotFoundError, match="reinstall"):
        zoo.resolve(zoo.DEFAULT_MODEL)
    with pytest.raises(FileNotFoundError, match="reinstall"):
        IOGPredictor(device="cpu", warmup=False)


def test_the_predictor_without_a_model_segments_an_object(default_predictor):
    assert default_predictor.arch == "iog-mobilenetv2"
    image, truth = synthetic_scene()
    rows, cols = np.nonzero(truth)
    corners = [(rows.min() - 4, cols.min() - 4), (rows.max() + 4, cols.max() + 4)]
    mask = default_predictor.predict(image, corners, (120, 150)).mask
    # the ellipse fills pi/4 = 0.785 of its box: a box-shaped guess cannot pass
    assert iou(mask, truth) > 0.85


def test_cli_predict_and_train_default_to_it(tmp_path, empty_cache):
    image, truth = synthetic_scene()
    tifffile.imwrite(tmp_path / "scene.tif", image)
    rows, cols = np.nonzero(truth)
    (tmp_path / "boxes.csv").write_text(
        f"x0,y0,x1,y1\n{cols.min() - 4},{rows.min() - 4},{cols.max() + 4},{rows.max() + 4}\n")
    assert cli(["predict", str(tmp_path / "scene.tif"), "--boxes", str(tmp_path / "boxes.csv"),
                "--out", str(tmp_path / "labels.tif"), "--device", "cpu"]) == 0
    assert iou(tifffile.imread(tmp_path / "labels.tif") == 1, truth) > 0.85
    from napari_iog.cli import build_parser

    args = build_parser().parse_args(["train", "--images", "i", "--labels", "l", "--out", "o.pt"])
    assert args.base == zoo.DEFAULT_MODEL


@pytest.mark.parametrize("image_name, corners, inside", [
    ("astronaut", ((12, 150), (215, 322)), (130, 240)),        # her head
    ("coffee", ((20, 40), (380, 560)), (200, 300)),             # the cup
])
def test_correction_clicks_are_respected_on_real_images(default_predictor, image_name, corners, inside):
    """After a positive click the pixel under it is in the mask, after a negative click it is
    not, whatever the network made of the click (the bundled model on scikit-image's photos)."""
    from scipy import ndimage
    from skimage import data

    image = getattr(data, image_name)()
    first = default_predictor.predict(image, corners=corners, inside=inside)
    box = np.zeros(first.mask.shape, bool)
    box[corners[0][0]:corners[1][0] + 1, corners[0][1]:corners[1][1] + 1] = True
    missed = box & ~ndimage.binary_dilation(first.mask, iterations=6)        # well off the mask, in the box
    taken = ndimage.binary_erosion(first.mask, iterations=6)                  # well inside the mask
    taken[max(inside[0] - 10, 0):inside[0] + 10, max(inside[1] - 10, 0):inside[1] + 10] = False
    assert missed.any() and taken.any()
    positive = tuple(int(v) for v in np.argwhere(missed)[len(np.argwhere(missed)) // 2])
    negative = tuple(int(v) for v in np.argwhere(taken)[len(np.argwhere(taken)) // 2])
    corrected = default_predictor.predict(image, corners=corners, inside=inside, positive=[positive],
                                          negative=[negative])
    assert corrected.mask[positive] and not corrected.mask[negative]
    assert iou(corrected.mask, first.mask) > 0.5                 # a correction, not a new object
