"""Labels to and from files: COCO JSON (RLE, polygons) and label-image TIFFs, round trips."""

import json

import numpy as np
import pytest

from napari_iog import io as L


def some_labels(shape=(60, 80), seed=0):
    """A few overlapping-free objects: discs, a ring (with a hole), one touching the border."""
    labels = np.zeros(shape, np.uint16)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 < 100] = 3
    ring = ((yy - 35) ** 2 + (xx - 55) ** 2 < 225) & ((yy - 35) ** 2 + (xx - 55) ** 2 >= 36)
    labels[ring] = 7
    labels[50:, :10] = 12
    labels[5, 70] = 40                          # a single pixel
    return labels


def test_rle_matches_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    labels = some_labels()
    for label_id in (3, 7, 12, 40):
        mask = labels == label_id
        ours = L.encode_rle(mask)
        theirs = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert ours["counts"] == theirs["counts"].decode() and ours["size"] == list(theirs["size"])
        np.testing.assert_array_equal(mask_utils.decode({"size": ours["size"], "counts": ours["counts"].encode()}),
                                      mask)


def test_rle_of_a_box_region_equals_that_of_the_full_mask():
    labels = some_labels()
    mask = labels == 7
    rows, cols = np.nonzero(mask)
    region = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert L.encode_rle(region, (rows.min(), cols.min()), mask.shape) == L.encode_rle(mask)
    np.testing.assert_array_equal(L.decode_rle(L.encode_rle(mask)), mask)
    empty = np.zeros((4, 5), bool)
    assert L.coco.rle_counts(empty) == [20]
    np.testing.assert_array_equal(L.decode_rle({"size": [4, 5], "counts": [20]}), empty)
    full = np.ones((4, 5), bool)
    np.testing.assert_array_equal(L.decode_rle(L.encode_rle(full)), full)


def test_coco_export_then_import_gives_identical_labels(tmp_path):
    labels = some_labels()
    path = L.write_coco(tmp_path / "objects.json", labels, image_name="cells")
    coco = json.loads(path.read_text())
    assert [im["file_name"] for im in coco["images"]] == ["cells.tif"]
    by_id = {a["label_id"]: a for a in coco["annotations"]}
    assert sorted(by_id) == [3, 7, 12, 40]
    assert by_id[12]["bbox"] == [0, 50, 10, 10] and by_id[12]["area"] == 100
    assert by_id[40]["bbox"] == [70, 5, 1, 1]
    assert coco["categories"][0]["id"] == 1 and all(a["category_id"] == 1 for a in coco["annotations"])
    back = L.read_labels(path, np.uint16)
    np.testing.assert_array_equal(back, labels)


def test_a_stack_exports_one_coco_image_per_plane_and_comes_back(tmp_path):
    stack = np.stack([some_labels(), np.zeros((60, 80), np.uint16), some_labels()[::-1]])
    path = L.write_coco(tmp_path / "stack.json", stack, image_name="s")
    coco = json.loads(path.read_text())
    assert [im["plane"] for im in coco["images"]] == [[0], [1], [2]]
    assert [im["file_name"] for im in coco["images"]] == ["s_0000.tif", "s_0001.tif", "s_0002.tif"]
    np.testing.assert_array_equal(L.read_coco(path, np.uint16), stack)


def test_polygons_outline_the_objects(tmp_path):
    labels = some_labels()
    coco = L.labels_to_coco(labels, encoding="polygon")
    back = L.coco_to_labels(coco, np.uint16)
    for label_id in (3, 12):
        a, b = labels == label_id, back == label_id
        assert (a & b).sum() / (a | b).sum() > 0.9
    box = next(a for a in coco["annotations"] if a["label_id"] == 12)
    xy = np.asarray(box["segmentation"][0]).reshape(-1, 2)
    assert xy[:, 0].min() == 0 and xy[:, 0].max() == 10 and xy[:, 1].min() == 50 and xy[:, 1].max() == 60


def test_tif_round_trip_in_memory_and_from_zarr(tmp_path):
    labels = some_labels()
    L.write_labels_tif(tmp_path / "a.tif", labels)
    np.testing.assert_array_equal(L.read_labels(tmp_path / "a.tif"), labels)
    zarr = pytest.importorskip("zarr")
    big = zarr.zeros(shape=(2, 700, 600), chunks=(1, 256, 256), dtype="uint32")
    big[1, 600:660, 500:560] = 5
    big[0, 10:20, 10:20] = 9
    L.write_labels_tif(tmp_path / "b.tif", big)
    np.testing.assert_array_equal(L.read_labels(tmp_path / "b.tif"), big[:])
    coco = L.labels_to_coco(big)
    assert [(a["image_id"], a["label_id"], a["bbox"]) for a in coco["annotations"]] == [
        (1, 9, [10, 10, 10, 10]), (2, 5, [500, 600, 60, 60])]
    np.testing.assert_array_equal(L.coco_to_labels(coco), big[:])


def test_compressed_tiffs_open_as_slide_scanners_write_them(tmp_path):
    """LZW and deflate TIFFs (what Aperio, QuPath and most microscope software save) read like
    uncompressed ones: an H&E tile and its labels."""
    import tifffile

    from napari_iog.io import read_image

    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    labels = some_labels()
    for compression in ("lzw", "zlib"):
        tifffile.imwrite(tmp_path / f"tile-{compression}.tif", rgb, compression=compression)
        tifffile.imwrite(tmp_path / f"labels-{compression}.tif", labels, compression=compression)
        np.testing.assert_array_equal(read_image(tmp_path / f"tile-{compression}.tif"), rgb)
        np.testing.assert_array_equal(L.read_labels(tmp_path / f"labels-{compression}.tif"), labels)


def test_files_that_are_not_labels_say_so(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(L.LabelsFileError, match="not a JSON file"):
        L.read_labels(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(L.LabelsFileError, match="images"):
        L.read_labels(tmp_path / "y.json")
    bad = {"images": [{"id": 1, "height": 4, "width": 5}],
           "annotations": [{"id": 1, "image_id": 1, "segmentation": {"size": [4, 5], "counts": [3, 4]}}]}
    (tmp_path / "z.json").write_text(json.dumps(bad))
    with pytest.raises(L.LabelsFileError, match="add up to 7"):
        L.read_labels(tmp_path / "z.json")
    np.save(tmp_path / "f.npy", np.zeros((3, 3), np.float32))
    with pytest.raises(L.LabelsFileError, match="not integer labels"):
        L.read_labels(tmp_path / "f.npy")
    with pytest.raises(FileNotFoundError):
        L.read_labels(tmp_path / "missing.tif")
