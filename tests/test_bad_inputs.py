"""Bad input through every door: each gets a message that names the problem (and what to do),
and nothing is written or changed."""

import json

import numpy as np
import pytest
import tifffile
from conftest import ThresholdPredictor
from hypothesis import example, given, settings
from hypothesis import strategies as st

from napari_iog import IOGPredictor, build_model, save_model
from napari_iog.cli import main as cli
from napari_iog.models import CheckpointError


def labels():
    array = np.zeros((20, 30), np.uint32)
    array[2:8, 3:9] = 1
    return array


def coco(tmp_path, images=None, annotations=()):
    path = tmp_path / "objects.json"
    path.write_text(json.dumps({"images": images or [{"id": 1, "height": 20, "width": 30}],
                                "annotations": list(annotations)}))
    return path


def mixed_tiff(tmp_path):
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.zeros((10, 10), np.uint16))
        tif.write(np.zeros((20, 30), np.uint16))
    return path


def written(path, content: bytes):
    path.write_bytes(content)
    return path


def saved(tmp_path, name, array):
    np.save(tmp_path / name, array)
    return tmp_path / name


LABEL_FILES = {
    "float labels": (lambda t: saved(t, "f.npy", labels().astype(np.float32)), "float32 values, not integer labels"),
    "negative labels": (lambda t: saved(t, "n.npy", labels().astype(np.int32) - 1), "negative values"),
    "a colour image": (lambda t: saved(t, "rgb.npy", np.zeros((20, 30, 3), np.uint8)), "colour image"),
    "an empty file": (lambda t: written(t / "empty.png", b""), "empty (0 bytes)"),
    "pages of two sizes": (mixed_tiff, "2 images of different sizes"),
    "a COCO image without a size": (lambda t: coco(t, images=[{"id": 1}]), "needs a 'height' and a 'width'"),
    "a COCO file without images": (lambda t: written(t / "x.json", b"{}"), "'images' list"),
    "a broken RLE": (lambda t: coco(t, annotations=[{"id": 4, "image_id": 1, "segmentation":
                                                    {"size": [20, 30], "counts": "zz!!"}}]), "annotation 4"),
    "RLE counts too large": (lambda t: coco(t, annotations=[{"id": 9, "image_id": 1, "segmentation":
                                                             {"size": [20, 30], "counts": [10 ** 30, 5]}}]),
                             "annotation 9: COCO RLE counts must lie in 0..600"),
    "RLE counts of fractions": (lambda t: coco(t, annotations=[{"id": 10, "image_id": 1, "segmentation":
                                                                {"size": [20, 30], "counts": [600.5]}}]),
                                "annotation 10: COCO RLE counts must be whole numbers"),
    "RLE counts of another size": (lambda t: coco(t, annotations=[{"id": 5, "image_id": 1, "segmentation":
                                                                   {"size": [20, 30], "counts": [5, 9]}}]),
                                   "add up to 14, not 20 x 30"),
    "a polygon of words": (lambda t: coco(t, annotations=[{"id": 6, "image_id": 1, "segmentation": [[1, 2, "x", 4]]}]),
                           "annotation 6: a polygon is not a list of x, y numbers"),
    "a polygon point 1e19 px away": (lambda t: coco(t, annotations=[{"id": 8, "image_id": 1,
                                                                     "segmentation": [[9.2e18, 0, 5, 5, 0, 5]]}]),
                                     "annotation 8: a polygon has a point that is not a coordinate"),
    "an annotation of a missing image": (lambda t: coco(t, annotations=[{"id": 7, "image_id": 9, "segmentation": []}]),
                                         "names image 9"),
}


@pytest.mark.parametrize("case", LABEL_FILES)
def test_bad_label_files_are_refused_by_export_with_a_reason(case, tmp_path, capsys):
    make, message = LABEL_FILES[case]
    source, out = make(tmp_path), tmp_path / "out.json"
    assert cli(["export", str(source), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("napari-iog: ") and message in err and "Traceback" not in err
    assert not out.exists()


def test_polygons_reaching_outside_the_image_are_clipped_to_it(tmp_path):
    source = coco(tmp_path, annotations=[{"id": 1, "image_id": 1, "segmentation": [[-50, -50, 500, -50, 500, 500]]}])
    assert cli(["export", str(source), "--out", str(tmp_path / "o.tif")]) == 0
    assert tifffile.imread(tmp_path / "o.tif").shape == (20, 30)


BOX_FILES = {
    "NaN": ("x0,y0,x1,y1\nnan,1,10,10\n", "line 2: corner click (1.0, nan) is not a finite coordinate"),
    "an empty cell": ("x0,y0,x1,y1\n,,,\n", "line 2: the box column x0 is empty"),
    "words": ("x0,y0,x1,y1\na,1,10,10\n", "line 2: could not convert"),
    "a box of no width": ("x0,y0,x1,y1\n5,5,5,20\n", "line 2: the box covers only 16 x 1 pixels"),
    "a box off the image": ("x0,y0,x1,y1\n5,5,500,20\n", "line 2: corner click at (row 20, col 500) is outside"),
    "no box columns": ("a,b\n1,2\n", "the header needs box columns"),
    "nothing": ("", "the header needs box columns"),
    "only a header": ("x0,y0,x1,y1\n", "no boxes"),
}


@pytest.mark.parametrize("case", BOX_FILES)
def test_bad_box_files_are_refused_before_any_work(case, tmp_path, capsys, monkeypatch):
    import napari_iog.predictor

    text, message = BOX_FILES[case]
    (tmp_path / "boxes.csv").write_text(text)
    image = saved(tmp_path, "image.npy", np.zeros((40, 50, 3), np.uint8))
    monkeypatch.setattr(napari_iog.predictor, "IOGPredictor", lambda *a, **k: ThresholdPredictor())
    assert cli(["predict", str(image), "--boxes", str(tmp_path / "boxes.csv"), "--out", str(tmp_path / "o.tif")]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "o.tif").exists()


def test_a_reversed_box_is_the_same_box(tmp_path, monkeypatch):
    """Corners come in any order, as with clicks: x0 > x1 is no error."""
    import napari_iog.predictor

    (tmp_path / "boxes.csv").write_text("x0,y0,x1,y1\n30,25,5,5\n")
    image = np.zeros((40, 50), np.uint8)
    image[8:22, 8:28] = 200
    monkeypatch.setattr(napari_iog.predictor, "IOGPredictor", lambda *a, **k: ThresholdPredictor())
    assert cli(["predict", str(saved(tmp_path, "i.npy", image)), "--boxes", str(tmp_path / "boxes.csv"),
                "--out", str(tmp_path / "o.tif")]) == 0
    assert (tifffile.imread(tmp_path / "o.tif") == 1).sum() == 14 * 20


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((0, 0, 3), np.uint8), r"too small \(or empty\)"),
    (np.zeros((2, 2, 2, 8, 8), np.uint8), "must be 2D"),
    (np.full((40, 50), np.nan, np.float32), "no finite pixel values"),
])
def test_bad_images_are_refused_by_the_predictor(image, message):
    predictor = IOGPredictor(build_model("iog-resnet18", seed=0), device="cpu", warmup=False)
    with pytest.raises(ValueError, match=message):
        predictor.predict(image, corners=((0, 0), (1, 1)), inside=(0, 0))


def test_a_model_file_that_is_gone_or_cut_short_is_named(tmp_path):
    path = save_model(build_model("iog-resnet18", seed=0), tmp_path / "model.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="cut.pt"):
        IOGPredictor(cut, device="cpu", warmup=False)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        IOGPredictor(path, device="cpu", warmup=False)


@pytest.mark.napari
def test_removing_the_image_while_a_prediction_runs_stops_annotating(make_napari_viewer):
    from gui_stress import SlowThreshold

    from napari_iog._napari.annotator import Annotator

    viewer = make_napari_viewer()
    image = np.zeros((80, 100), np.uint8)
    image[20:50, 30:70] = 200
    layer = viewer.add_image(image, name="cells")
    ann = Annotator(viewer, layer, SlowThreshold(), asynchronous=True)
    messages, stopped = [], []
    ann.notified.connect(messages.append)
    ann.stopped.connect(stopped.append)
    for point in ((15, 25), (55, 75), (35, 50)):
        ann.clicks_layer.add(np.array(point, float))
    viewer.layers.remove(layer)                       # while the slow prediction runs
    ann.wait()
    assert stopped and "'cells' was removed" in messages[0] and "labels are kept" in messages[0]
    assert [lay.name for lay in viewer.layers] == ["cells labels"]          # the helper layers went
    assert ann.act("commit") is None and not ann.labels_layer.data.any()    # nothing written after


cell = st.one_of(st.text(max_size=6), st.floats(allow_nan=True, allow_infinity=True), st.integers(-20, 400))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(cell, min_size=4, max_size=4), max_size=6))
def test_any_boxes_csv_is_read_or_refused_with_a_box_file_error(rows):
    import csv
    import tempfile
    from pathlib import Path

    from napari_iog import batch

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "boxes.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["x0", "y0", "x1", "y1"])
            writer.writerows(rows)
        try:
            batch.check_boxes((40, 50), batch.read_box_file(path))
        except batch.BoxFileError as err:
            assert "boxes.csv" in str(err)


segmentation = st.one_of(
    st.none(), st.integers(), st.text(max_size=8),
    st.lists(st.lists(st.one_of(st.floats(allow_nan=True), st.integers(-50, 80), st.text(max_size=3)), max_size=8),
             max_size=3),
    st.fixed_dictionaries({"size": st.one_of(st.just([20, 30]), st.lists(st.integers(-2, 40), max_size=3)),
                           "counts": st.one_of(st.text(max_size=10), st.lists(
                               st.one_of(st.integers(-5, 700), st.integers(), st.floats()), max_size=6))}))


@settings(max_examples=80, deadline=None)
@example(segmentations=[[[9.223372036854776e18, 0.0]]])       # found by CI: overflowed the rasteriser
@given(segmentations=st.lists(segmentation, min_size=1, max_size=3))
def test_any_coco_segmentation_is_read_or_refused_with_a_labels_file_error(segmentations):
    from napari_iog.io import LabelsFileError, coco_to_labels

    data = {"images": [{"id": 1, "height": 20, "width": 30}],
            "annotations": [{"id": n, "image_id": 1, "segmentation": s} for n, s in enumerate(segmentations)]}
    try:
        labels = coco_to_labels(data)
    except LabelsFileError as err:
        assert "annotation" in str(err)
    else:
        assert labels.shape == (20, 30)
