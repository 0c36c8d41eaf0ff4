"""Segmenting boxes from CSV/COCO files (`napari-iog predict`) and `napari-iog export`."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import tifffile
from conftest import ThresholdPredictor, calibrate

from napari_iog import batch, io
from napari_iog.cli import main
from napari_iog.models import build_model, save_model


def two_objects_image():
    """Two bright rectangles on black, RGB, and their masks."""
    image = np.zeros((80, 120, 3), np.uint8)
    image[10:30, 10:40] = 200
    image[40:70, 60:110] = 220
    return image


def write_csv(path, rows, header="x0,y0,x1,y1,x,y,plane,label"):
    path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in row) for row in rows) + "\n")
    return path


def test_boxes_from_csv_become_objects_with_the_preserve_rule(tmp_path):
    image = two_objects_image()
    boxes = write_csv(tmp_path / "b.csv", [(8, 8, 42, 32, "", "", "", ""), (58, 38, 112, 72, 80, 50, "", 9),
                                           (5, 5, 45, 35, "", "", "", "")], )
    prompts = batch.read_box_file(boxes)
    assert prompts[0].corners == ((8.0, 8.0), (32.0, 42.0)) and prompts[0].inside is None
    assert prompts[1].inside == (50.0, 80.0) and prompts[1].label_id == 9
    labels, report = batch.segment_boxes(ThresholdPredictor(), image, prompts)
    assert (labels == 1).sum() == 20 * 30 and (labels[10:30, 10:40] == 1).all()
    assert (labels == 9).sum() == 30 * 50
    assert report.written == 2 and report.empty == [f"{boxes.name} line 4"]   # covered by the first


def test_coco_boxes_and_stack_planes(tmp_path):
    image = np.stack([two_objects_image()[..., 0], np.zeros((80, 120), np.uint8), two_objects_image()[..., 0]])
    coco = {"images": [{"id": 1, "plane": [0]}, {"id": 2, "plane": [2]}],
            "annotations": [{"id": 1, "image_id": 1, "bbox": [10, 10, 30, 20]},
                            {"id": 2, "image_id": 2, "bbox": [60, 40, 50, 30], "inside": [85, 55]}]}
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(coco))
    prompts = batch.read_box_file(path)
    assert prompts[0].corners == ((10.0, 10.0), (29.0, 39.0)) and prompts[1].plane == (2,)
    labels, report = batch.segment_boxes(ThresholdPredictor(), image, prompts)
    assert labels.shape == (3, 80, 120) and report.written == 2
    assert (labels[0, 10:30, 10:40] == 1).all() and (labels[2, 40:70, 60:110] == 2).all()
    assert not labels[1].any()


def test_a_bad_box_is_named_and_nothing_is_written(tmp_path):
    image = two_objects_image()
    boxes = write_csv(tmp_path / "b.csv", [(8, 8, 42, 32), (500, 500, 600, 600)], header="xmin,ymin,xmax,ymax")
    labels = np.zeros(image.shape[:2], np.uint32)
    with pytest.raises(batch.BoxFileError, match="b.csv line 3"):
        batch.segment_boxes(ThresholdPredictor(), image, batch.read_box_file(boxes), labels)
    assert not labels.any()
    (tmp_path / "c.csv").write_text("a,b\n1,2\n")
    with pytest.raises(batch.BoxFileError, match="x0,y0,x1,y1"):
        batch.read_box_file(tmp_path / "c.csv")
    stack = np.zeros((3, 80, 120), np.uint8)
    with pytest.raises(batch.BoxFileError, match="plane"):
        batch.segment_boxes(ThresholdPredictor(), stack[..., None][..., [0, 0]], batch.read_box_file(boxes))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "r18.pt"
    save_model(calibrate(build_model("iog-resnet18", seed=0)), path, {"name": "calibrated test model"})
    return path


def test_cli_predict_writes_tif_and_coco_then_export_round_trips(tmp_path, model_file):
    image = two_objects_image()
    tifffile.imwrite(tmp_path / "img.tif", image)
    boxes = write_csv(tmp_path / "b.csv", [(8, 8, 42, 32), (58, 38, 112, 72)], header="x0,y0,x1,y1")
    assert main(["predict", str(tmp_path / "img.tif"), "--boxes", str(boxes), "--model", str(model_file),
                 "--out", str(tmp_path / "labels.tif"), "--device", "cpu"]) == 0
    labels = tifffile.imread(tmp_path / "labels.tif")
    assert labels.shape == (80, 120) and set(np.unique(labels)) <= {0, 1, 2}
    assert main(["predict", str(tmp_path / "img.tif"), "--boxes", str(boxes), "--model", str(model_file),
                 "--out", str(tmp_path / "objects.json"), "--device", "cpu"]) == 0
    np.testing.assert_array_equal(io.read_labels(tmp_path / "objects.json"), labels)
    # export: tif -> COCO -> tif, identical
    assert main(["export", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "again.json")]) == 0
    assert main(["export", str(tmp_path / "again.json"), "--out", str(tmp_path / "again.tif")]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "again.tif"), labels)
    assert main(["export", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "x.png")]) == 1


def test_cli_export_reads_a_zarr_folder(tmp_path):
    zarr = pytest.importorskip("zarr")
    z = zarr.open(str(tmp_path / "labels.zarr"), mode="w", shape=(300, 400), chunks=(128, 128), dtype="uint16")
    z[100:150, 200:260] = 4
    assert main(["export", str(tmp_path / "labels.zarr"), "--out", str(tmp_path / "o.json")]) == 0
    coco = json.loads((tmp_path / "o.json").read_text())
    assert [(a["label_id"], a["bbox"], a["area"]) for a in coco["annotations"]] == [(4, [200, 100, 60, 50], 3000)]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="needs torchrun")
def test_torchrun_two_processes_predict_what_one_does(tmp_path, model_file):
    image = two_objects_image()
    np.save(tmp_path / "img.npy", image)
    boxes = write_csv(tmp_path / "b.csv", [(8, 8, 42, 32), (58, 38, 112, 72), (20, 20, 70, 60)], header="x0,y0,x1,y1")
    common = [str(tmp_path / "img.npy"), "--boxes", str(boxes), "--model", str(model_file), "--device", "cpu"]
    assert main(["predict", *common, "--out", str(tmp_path / "one.tif")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "napari_iog", "predict",
                             *common, "--out", str(tmp_path / "two.tif")],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "two.tif"), tifffile.imread(tmp_path / "one.tif"))


def test_a_stopped_batch_writes_what_it_finished(tmp_path):
    image = two_objects_image()
    prompts = [batch.BoxPrompt(((8, 8), (32, 42)), source="a"), batch.BoxPrompt(((38, 58), (72, 112)), source="b")]
    polls = iter([False, True])
    labels, report = batch.segment_boxes(ThresholdPredictor(), image, prompts, batch_size=1,
                                         should_stop=lambda: next(polls))
    assert report.cancelled and report.written == 1
    assert (labels[10:30, 10:40] == 1).all() and not labels[40:70, 60:110].any()
