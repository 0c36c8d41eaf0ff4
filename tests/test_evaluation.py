"""The simulated-user protocol on synthetic objects: clicks, IoU with ignore, NoC, datasets, CLI."""

import json

import numpy as np
import pytest
from conftest import synthetic_scene
from skimage import io

from napari_iog import IOGPredictor
from napari_iog import evaluation as E
from napari_iog.cli import main as cli


def rectangle(shape=(60, 80), box=(10, 20, 40, 60)):
    mask = np.zeros(shape, bool)
    mask[box[0]:box[2] + 1, box[1]:box[3] + 1] = True
    return mask


def test_first_clicks_are_the_tight_box_and_the_most_interior_pixel():
    mask = rectangle()
    clicks = E.initial_clicks(mask)
    assert clicks["corners"] == [(10, 20), (40, 60)]
    (r, c), = clicks["inside"]
    assert r == 25 and 35 <= c <= 45     # 15 px from the nearest edge: the farthest any pixel is


def test_extreme_points_are_on_the_object_boundary():
    _, mask = synthetic_scene()
    points = E.extreme_points(mask)
    rows, cols = np.nonzero(mask)
    (lr, lc), (rr, rc), (tr, tc), (br, bc) = points
    assert lc == cols.min() and rc == cols.max() and tr == rows.min() and br == rows.max()
    assert all(mask[p] for p in points)


def test_next_click_goes_to_the_larger_error_with_the_right_sign():
    truth = rectangle()
    missed = truth.copy()
    missed[10:41, 20:35] = False                     # a large false-negative strip
    point, positive = E.next_click(missed, truth)
    assert positive and truth[point] and not missed[point]
    assert point[1] == 27 and 17 <= point[0] <= 33   # the strip's most interior pixels (ties)
    grown = truth.copy()
    grown[45:58, 5:75] = True                        # a large false-positive block
    point, positive = E.next_click(grown, truth)
    assert not positive and grown[point] and not truth[point]
    assert E.next_click(truth, truth) is None


def test_ignored_pixels_count_neither_way():
    truth = rectangle()
    ignore = np.zeros_like(truth)
    ignore[8:43, 18:63] = True
    ignore[12:39, 22:59] = False                     # a band around the object's boundary
    prediction = rectangle(box=(9, 19, 41, 61))      # one pixel too large, inside the band
    assert E.iou(prediction, truth) < 1.0
    assert E.iou(prediction, truth, ignore) == 1.0
    assert E.next_click(prediction, truth, ignore) is None


def test_noc_counts_clicks_until_the_threshold():
    assert E.noc([0, 0, 0.8, 0.86, 0.91], 0.85) == 4
    assert E.noc([0, 0, 0.8, 0.86, 0.91], 0.90) == 5
    assert E.noc([0, 0, 0.5], 0.9, max_clicks=20) == 20


def test_box_baseline_on_a_box_shaped_object_is_perfect():
    image = np.zeros((60, 80, 3), np.uint8)
    result = E.evaluate(E.BoxBaseline(), [E.Instance("r", image, rectangle())], max_clicks=5)
    assert result["instances"][0]["ious"] == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert result["summary"]["noc85"] == 2 and result["summary"]["miou@3"] == 1.0


def test_grabcut_baseline_segments_a_clear_object():
    pytest.importorskip("cv2")
    image, mask = synthetic_scene()
    result = E.evaluate_instance(E.GrabCutBaseline(), E.Instance("scene", image, mask), max_clicks=4)
    assert result["ious"][2] > 0.8


class CountingPredictor(IOGPredictor):
    calls = 0

    def predict(self, *args, **kwargs):
        CountingPredictor.calls += 1
        return super().predict(*args, **kwargs)


def test_iog_method_uses_every_correction_click(calibrated_iog18):
    image, mask = synthetic_scene()
    predictor = CountingPredictor(calibrated_iog18, device="cpu", precision="float32", warmup=False)
    result = E.evaluate_instance(E.IOGMethod(predictor), E.Instance("scene", image, mask), max_clicks=6)
    assert len(result["ious"]) == 6 and result["ious"][:2] == [0.0, 0.0]
    assert all(0 <= v <= 1 for v in result["ious"])
    assert CountingPredictor.calls <= 4   # clicks 3..6 (fewer when no error is left)


def test_datasets_in_the_benchmark_layouts(tmp_path):
    image, mask = synthetic_scene(60, 80, center=(30, 40), radii=(15, 20))
    grabcut = tmp_path / "gc"
    (grabcut / "data_GT").mkdir(parents=True)
    (grabcut / "boundary_GT").mkdir()
    io.imsave(grabcut / "data_GT" / "obj.bmp", image, check_contrast=False)
    gt = np.where(mask, 255, 0).astype(np.uint8)
    gt[0, :] = 128
    io.imsave(grabcut / "boundary_GT" / "obj.bmp", gt, check_contrast=False)
    (inst,) = E.load_dataset(grabcut)
    assert inst.mask.sum() == mask.sum() and inst.ignore[0].all() and inst.image.shape == (60, 80, 3)
    berkeley = tmp_path / "bk"
    (berkeley / "images").mkdir(parents=True)
    (berkeley / "masks").mkdir()
    io.imsave(berkeley / "images" / "7.jpg", image, check_contrast=False)
    for suffix in ("a", "b"):
        io.imsave(berkeley / "masks" / f"7{suffix}.png", np.stack([gt] * 3, -1), check_contrast=False)
    assert [i.name for i in E.load_dataset(berkeley)] == ["7a", "7b"]
    with pytest.raises(ValueError, match="layout"):
        E.load_dataset(tmp_path)


def test_cli_evaluate_writes_tables_and_a_plot(tmp_path, capsys):
    image, mask = synthetic_scene(60, 80, center=(30, 40), radii=(15, 20))
    labels = np.zeros(mask.shape, np.uint16)
    labels[mask] = 3
    labels[2:8, 2:10] = 5
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    io.imsave(data / "images" / "a.png", image, check_contrast=False)
    io.imsave(data / "labels" / "a.png", labels, check_contrast=False)
    out = tmp_path / "out"
    assert cli(["evaluate", "--dataset", str(data), "--model", "box", "--out", str(out), "--max-clicks", "5"]) == 0
    printed = capsys.readouterr().out
    assert "box" in printed and "NoC@90" in printed
    result = json.loads((out / "data_box.json").read_text())
    assert [r["name"] for r in result["instances"]] == ["a#3", "a#5"]
    assert (out / "data_box.csv").read_text().count("\n") == 3
    if pytest.importorskip("matplotlib"):
        assert (out / "data_miou.png").stat().st_size > 0
    # a network: the line before the table says what ran it
    from napari_iog import build_model, save_model

    model = save_model(build_model("iog-resnet18", seed=0), tmp_path / "net.pt")
    assert cli(["evaluate", "--dataset", str(data), "--model", str(model), "--out", str(out), "--max-clicks", "3",
                "--precision", "float32", "--backend", "torch", "--no-plot", "--device", "cpu"]) == 0
    assert "net: float32 on cpu (torch)" in capsys.readouterr().err
    assert cli(["evaluate", "--dataset", str(tmp_path / "nope"), "--model", "box"]) == 1


def test_a_named_benchmark_must_be_told_where_it_is(monkeypatch, tmp_path, capsys):
    """The user CLI knows no development paths: a named dataset comes from --data-root or
    NAPARI_IOG_DATA, and without either it says so."""
    monkeypatch.delenv("NAPARI_IOG_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli(["evaluate", "--dataset", "grabcut", "--model", "box"]) == 1
    assert "--data-root" in capsys.readouterr().err


class _Scripted:
    """A method whose masks are given in advance, one per click (for the curve's figures)."""

    name, first_click = "scripted", 3

    def __init__(self, masks):
        self.masks = list(masks)

    def segment(self, image, clicks):
        return self.masks.pop(0) if len(self.masks) > 1 else self.masks[0]

    def takes_corrections(self):
        return True


def test_the_summary_counts_objects_never_at_090_and_corrections_that_made_it_worse():
    truth = np.zeros((40, 40), bool)
    truth[10:30, 10:30] = True
    half, most, worse = truth.copy(), truth.copy(), truth.copy()
    half[20:30] = False                                  # IoU 0.5
    most[28:30] = False                                  # IoU 0.9
    worse[15:30] = False                                 # IoU 0.25: this correction lost ground
    instance = E.Instance("square", np.zeros((40, 40, 3), np.uint8), truth)
    reaches = E.evaluate_instance(_Scripted([half, worse, most]), instance, max_clicks=6)
    stuck = E.evaluate_instance(_Scripted([half, half]), instance, max_clicks=6)
    assert reaches["corrections"] == 3 and reaches["worse"] == 1 and stuck["worse"] == 0
    summary = E.summarize([reaches, stuck])
    assert summary["never90"] == 0.5
    assert summary["worse_corrections"] == pytest.approx(1 / (reaches["corrections"] + stuck["corrections"]))
    assert summary["clearly_worse_corrections"] == summary["worse_corrections"]      # 0.5 -> 0.25 is no jitter
    jitter = most.copy()
    jitter[10, 10:12] = False                            # two pixels fewer: IoU 0.900 -> 0.895
    wobbles = E.evaluate_instance(_Scripted([half, most, jitter, most]), instance, max_clicks=6)
    assert wobbles["worse"] == 1 and E.summarize([wobbles])["clearly_worse_corrections"] == 0
    assert summary["miou@5"] == pytest.approx((0.9 + 0.5) / 2)
    assert "never90" in E.summary_table({"scripted": summary})
