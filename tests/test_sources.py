"""The natural-image and nuclei training sets, read from small copies made in the test in each
set's own layout; and the trimap border that the loss must leave out."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from scipy.io import savemat

from napari_iog.io.coco import encode_rle
from napari_iog.training.data import InstanceDataset, Pair
from napari_iog.training.loop import iog_loss
from napari_iog.training.sources import ccp_pairs, coco_pairs, cwfid_pairs, dsb_pairs, monuseg_pairs, pet_pairs


def _photo(shape=(120, 160), seed=0):
    return np.random.default_rng(seed).integers(0, 255, (*shape, 3), dtype=np.uint8)


def test_coco_objects_from_polygons_and_rle_crowds_and_small_ones_left_out(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    iio.imwrite(tmp_path / "val2017" / "000000000001.jpg", _photo())
    big = np.zeros((120, 160), bool)
    big[10:90, 20:120] = True
    front = np.zeros((120, 160), bool)
    front[30:60, 40:80] = True        # in front of the big one: keeps its whole mask
    rle = encode_rle(front)
    annotations = [
        {"id": 1, "image_id": 1, "iscrowd": 0, "area": 8000, "segmentation": [[20, 10, 120, 10, 120, 90, 20, 90]]},
        {"id": 2, "image_id": 1, "iscrowd": 0, "area": 1200, "segmentation": rle},
        {"id": 3, "image_id": 1, "iscrowd": 1, "area": 5000, "segmentation": [[0, 0, 50, 0, 50, 50]]},
        {"id": 4, "image_id": 1, "iscrowd": 0, "area": 30, "segmentation": [[0, 100, 5, 100, 5, 106, 0, 106]]},
    ]
    coco = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": 120, "width": 160},
                       {"id": 2, "file_name": "missing.jpg", "height": 120, "width": 160}],
            "annotations": annotations}
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps({**coco, "categories": []}))
    pairs = coco_pairs(tmp_path)
    assert len(pairs) == 1 and pairs[0].rgb.shape == (120, 160, 3)
    labels = pairs[0].labels
    assert sorted(np.unique(labels)) == [0, 1, 2]
    assert np.array_equal(labels == 2, front)
    assert np.array_equal(labels == 1, big & ~front)
    assert "CC BY 4.0" in pairs[0].source


@pytest.mark.parametrize("listed", [True, False])
def test_coco_images_under_noncommercial_licences_can_be_left_out(tmp_path, listed):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "train2017").mkdir()
    images, annotations = [], []
    for k, licence in enumerate((2, 4, 3, 5), start=1):    # by-nc, by, by-nc-nd, by-sa
        iio.imwrite(tmp_path / "train2017" / f"{k}.jpg", _photo((60, 60), seed=k))
        images.append({"id": k, "file_name": f"{k}.jpg", "height": 60, "width": 60, "license": licence})
        annotations.append({"id": k, "image_id": k, "iscrowd": 0, "area": 900,
                            "segmentation": [[10, 10, 40, 10, 40, 40, 10, 40]]})
    coco = {"images": images, "annotations": annotations}
    if listed:   # the file's own list, as most COCO files carry it
        coco["licenses"] = [{"id": 2, "name": "Attribution-NonCommercial License"},
                            {"id": 3, "name": "Attribution-NonCommercial-NoDerivs License"},
                            {"id": 4, "name": "Attribution License"},
                            {"id": 5, "name": "Attribution-ShareAlike License"}]
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(coco))
    assert len(coco_pairs(tmp_path)) == 4
    kept = coco_pairs(tmp_path, noncommercial=False)
    assert sorted(p.name for p in kept) == [f"{tmp_path.name}/2", f"{tmp_path.name}/4"]


def test_clothing_classes_split_into_components(tmp_path):
    (tmp_path / "annotations" / "pixel-level").mkdir(parents=True)
    (tmp_path / "photos").mkdir()
    classes = np.zeros((100, 100), np.uint8)
    classes[5:45, 5:45] = 41            # two separate pieces of the same class
    classes[55:95, 55:95] = 41
    classes[5:45, 55:95] = 19
    classes[0:3, 97:100] = 19           # 9 px: too small to keep
    savemat(tmp_path / "annotations" / "pixel-level" / "0001.mat", {"groundtruth": classes})
    iio.imwrite(tmp_path / "photos" / "0001.jpg", _photo((100, 100)))
    (pair,) = ccp_pairs(tmp_path)
    assert len(np.unique(pair.labels)) == 4          # background + 3 objects
    assert pair.labels[20, 20] != pair.labels[70, 70]


def test_pets_trimap_border_becomes_ignored(tmp_path):
    (tmp_path / "trimaps").mkdir()
    (tmp_path / "images").mkdir()
    trimap = np.full((80, 80), 2, np.uint8)
    trimap[20:60, 20:60] = 3
    trimap[23:57, 23:57] = 1
    iio.imwrite(tmp_path / "trimaps" / "cat_1.png", trimap)
    iio.imwrite(tmp_path / "images" / "cat_1.jpg", _photo((80, 80)))
    (pair,) = pet_pairs(tmp_path)
    assert pair.labels.sum() == 34 * 34 and pair.ignore.sum() == 40 * 40 - 34 * 34


def test_dsb_holds_out_every_tenth_image(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(12):
        labels = np.zeros((64, 64), np.uint16)
        labels[10:30, 10:30] = 1
        labels[40:60, 40:60] = 300
        iio.imwrite(tmp_path / "labels" / f"{i:03d}.png", labels)
        iio.imwrite(tmp_path / "images" / f"{i:03d}.png", np.full((64, 64), 40 + i, np.uint8))
    train, held = dsb_pairs(tmp_path), dsb_pairs(tmp_path, held_out=True)
    assert len(train) == 10 and len(held) == 2
    assert not {p.name for p in train} & {p.name for p in held}
    assert held[0].rgb.shape == (64, 64, 3) and set(np.unique(held[0].labels)) == {0, 1, 300}


def _aperio_xml(path, squares):
    regions = "".join(
        f'<Region Id="{k}"><Vertices>' + "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in
                                                 [(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side)])
        + "</Vertices></Region>" for k, (x0, y0, side) in enumerate(squares, start=1))
    path.write_text(f'<Annotations><Annotation Id="1"><Regions>{regions}</Regions></Annotation></Annotations>')


def test_monuseg_nuclei_from_aperio_polygons_and_its_test_tiles_held_out(tmp_path):
    train = tmp_path / "datasets" / "MoNuSegTrainingData"
    test = tmp_path / "datasets" / "MoNuSegTestData"
    for folder in (train / "Tissue_Images", train / "Annotations", test):
        folder.mkdir(parents=True)
    for name in ("a", "b"):     # b's XML is absent, as in a partial copy of the repository
        iio.imwrite(train / "Tissue_Images" / f"{name}.tif", _photo((60, 80)))
    _aperio_xml(train / "Annotations" / "a.xml", [(10, 10, 20), (50, 30, 10)])
    iio.imwrite(test / "c.tif", _photo((60, 80), seed=1))
    _aperio_xml(test / "c.xml", [(5, 5, 30)])
    pairs, held = monuseg_pairs(tmp_path), monuseg_pairs(tmp_path, held_out=True)
    assert [p.name for p in pairs] == ["monuseg/a"] and [p.name for p in held] == ["monuseg/c"]
    labels = pairs[0].labels
    assert labels.shape == (60, 80) and set(np.unique(labels)) == {0, 1, 2}
    assert (labels == 1).sum() == 400 and labels[20, 20] == 1 and labels[35, 55] == 2
    assert "CC BY-NC-SA" in pairs[0].source


def test_cwfid_plants_are_their_polygons_cut_to_the_vegetation(tmp_path):
    for folder in ("images", "annotations", "masks"):
        (tmp_path / folder).mkdir()
    (tmp_path / "train_test_split.yaml").write_text("train: [1, 2]\ntest: [2, 3]\n")
    soil = np.ones((60, 80), bool)
    soil[10:40, 10:30] = False          # a leaf inside the first plant's loose polygon
    soil[45:55, 60:70] = False          # a weed's leaf
    for number in (1, 2, 3):
        iio.imwrite(tmp_path / "images" / f"{number:03d}_image.png", _photo((60, 80), seed=number))
        iio.imwrite(tmp_path / "masks" / f"{number:03d}_mask.png", soil.astype(np.uint8) * 255)
        (tmp_path / "annotations" / f"{number:03d}_annotation.yaml").write_text(
            f"filename: {number:03d}_image.png\nannotation:\n"
            "- type: crop\n  points:\n    x: [5.0, 35.0, 35.0, 5.0]\n    y: [5.0, 5.0, 45.0, 45.0]\n"
            "- type: weed\n  points:\n    x: [58.0, 72.0, 72.0, 58.0]\n    y: [43.0, 43.0, 57.0, 57.0]\n")
    train, held = cwfid_pairs(tmp_path), cwfid_pairs(tmp_path, held_out=True)
    # an image the split lists as both training and test is training, never measured on
    assert [p.name for p in train] == ["cwfid/001", "cwfid/002"] and [p.name for p in held] == ["cwfid/003"]
    labels = held[0].labels
    np.testing.assert_array_equal(labels == 1, ~soil & (np.arange(80) < 40)[None, :])
    np.testing.assert_array_equal(labels == 2, ~soil & (np.arange(80) >= 40)[None, :])


@pytest.mark.parametrize("augment", [False, True])
def test_ignored_pixels_reach_the_target_and_the_loss_leaves_them_out(augment):
    labels = np.zeros((96, 96), np.int32)
    labels[30:66, 30:66] = 1
    ignore = np.zeros((96, 96), bool)
    ignore[26:70, 26:70] = True
    ignore[30:66, 30:66] = False
    pair = Pair("pet", _photo((96, 96)), labels, ignore=ignore)
    sample = InstanceDataset([pair], augment=augment, seed=1)[0]
    target = sample["target"]
    unknown = target < 0
    assert unknown.any() and (target[~unknown] >= 0).all()
    logits = torch.randn(1, *target.shape)
    coarse = [torch.randn(1, *target.shape) for _ in range(4)]
    loss = iog_loss(logits, coarse, target[None])
    # the unknown pixels count for nothing, whatever the network says there
    changed = logits.clone()
    changed[0][unknown] = 50.0
    assert torch.isclose(iog_loss(changed, coarse, target[None]), loss)


@pytest.mark.parametrize("reader", [coco_pairs, ccp_pairs, pet_pairs, dsb_pairs, monuseg_pairs, cwfid_pairs])
def test_an_absent_set_says_so_for_the_recipe_to_skip_it(tmp_path, reader):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        reader(tmp_path)
