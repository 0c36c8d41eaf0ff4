"""Training pairs from the natural-image and nuclei sets (see ``shared/data/NATURAL.md``).

Each reader takes the set's folder as ``get-natural.sh`` (or ``shared/data``) lays it out,
returns :class:`~napari_iog.training.data.Pair` objects and raises ``FileNotFoundError`` when
the folder holds no such set, so a recipe can skip what is absent. Objects smaller than
``min_area`` pixels are dropped from the labels when the pairs are made (at 512 x 512 a tiny
object teaches little), so they do not count as objects later either.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..io import read_image, read_label_image
from ..io.coco import decode_rle, polygons_mask
from .data import Pair, as_rgb8

COCO_SOURCE = "COCO 2017 (Lin et al. 2014): annotations CC BY 4.0, images under their Flickr licences"
CCP_SOURCE = "Clothing Co-Parsing (Yang et al. 2014): repository licence Apache-2.0, photos from chictopia.com"
PETS_SOURCE = "Oxford-IIIT Pet (Parkhi et al. 2012), sample of 600: CC BY-SA 4.0"
DSB_SOURCE = "2018 Data Science Bowl stage1_train (Caicedo et al. 2019, BBBC038) with community fixes: CC0 1.0"
MONUSEG_SOURCE = "MoNuSeg (Kumar et al. 2017), H&E tiles from TCGA: CC BY-NC-SA 4.0"
CWFID_SOURCE = "Crop/Weed Field Image Dataset (Haug & Ostermann 2014): non-commercial research only"
#: the smallest object kept from the natural sets, in pixels
NATURAL_MIN_AREA = 400
#: COCO 2017's licence ids of its non-commercial Flickr licences (by-nc-sa, by-nc, by-nc-nd), for
#: a file whose own ``licenses`` list is missing
COCO_NONCOMMERCIAL_IDS = frozenset({1, 2, 3})
#: pet trimap values: 1 = pet, 2 = background, 3 = border (ignored by the loss)
PET, PET_BORDER = 1, 3


def _drop_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    sizes = np.bincount(labels.ravel())
    small = sizes < min_area
    small[0] = False
    if small.any():
        labels = np.where(small[labels], 0, labels)
    return labels


def _rgb_image(path: Path) -> np.ndarray:
    image = read_image(path)
    if image.ndim == 4:     # a few "jpg" files are GIFs: keep the first frame
        image = image[0]
    return as_rgb8(image)   # grey and RGBA become RGB as the predictor maps them


def _annotated_photos(root: Path, annotations: str, photos: str, limit: int | None
                      ) -> list[tuple[Path, Path]]:
    """(annotation, photo) of the first ``limit`` annotation files (glob ``annotations`` under
    ``root``, in name order) that have a ``photos/<same stem>.jpg``."""
    found = sorted(root.glob(annotations))[:limit]
    if not found:
        raise FileNotFoundError(f"{root}: no {annotations}")
    return [(path, root / photos / f"{path.stem}.jpg") for path in found
            if (root / photos / f"{path.stem}.jpg").is_file()]


def _coco_files(root: Path) -> Iterator[tuple[Path, Path]]:
    """(annotation json, image folder) pairs of a COCO subset folder."""
    for ann in sorted(root.glob("**/instances_*.json")):
        split = ann.stem.removeprefix("instances_")
        for folder in (root / split, root / "images" / split, ann.parent.parent / "images" / split):
            if folder.is_dir():
                yield ann, folder
                break


def coco_pairs(root: str | Path, min_area: int = NATURAL_MIN_AREA, limit: int | None = None,
               noncommercial: bool = True) -> list[Pair]:
    """A COCO subset: every non-crowd object of each image (polygons or RLE). Overlapping objects
    are painted largest first, so a smaller object in front keeps its whole mask.
    ``noncommercial=False`` leaves out the images under a non-commercial Flickr licence, for
    weights whose use should not be restricted by them."""
    root = Path(root)
    files = list(_coco_files(root))
    if not files:
        raise FileNotFoundError(f"{root}: no COCO instances_*.json beside its image folder")
    pairs: list[Pair] = []
    for ann_path, folder in files:
        coco = json.loads(ann_path.read_text())
        restricted = _noncommercial_ids(coco)
        by_image: dict[int, list[dict]] = {}
        for a in coco["annotations"]:
            if not a.get("iscrowd", 0) and a.get("area", 0) >= min_area:
                by_image.setdefault(a["image_id"], []).append(a)
        for image in coco["images"]:
            objects = by_image.get(image["id"])
            path = folder / image["file_name"]
            if not objects or not path.is_file() or (not noncommercial and image.get("license") in restricted):
                continue
            size = (int(image["height"]), int(image["width"]))
            labels = np.zeros(size, np.int32)
            for k, a in enumerate(sorted(objects, key=lambda a: -a["area"]), start=1):
                seg = a["segmentation"]
                mask = decode_rle(seg) if isinstance(seg, dict) else polygons_mask(seg, size)
                labels[mask] = k
            labels = _drop_small(labels, min_area)
            if labels.any():
                pairs.append(Pair(f"{root.name}/{path.stem}", _rgb_image(path), labels, COCO_SOURCE))
            if limit is not None and len(pairs) >= limit:
                return pairs
    return pairs


def _noncommercial_ids(coco: dict) -> frozenset:
    licences = coco.get("licenses")
    if not licences:
        return COCO_NONCOMMERCIAL_IDS
    return frozenset(entry["id"] for entry in licences if "noncommercial" in str(entry.get("name", "")).lower())


def ccp_pairs(root: str | Path, min_area: int = NATURAL_MIN_AREA, limit: int | None = None) -> list[Pair]:
    """Clothing Co-Parsing: each garment/skin/hair class map split into connected components."""
    from scipy.io import loadmat

    pairs = []
    for mat, photo in _annotated_photos(Path(root), "annotations/pixel-level/*.mat", "photos", limit):
        classes = loadmat(mat)["groundtruth"]
        labels = np.zeros(classes.shape, np.int32)
        for value in np.unique(classes):
            if value == 0:   # "null": the background
                continue
            components, count = ndimage.label(classes == value)
            labels[components > 0] = components[components > 0] + labels.max()
        labels = _drop_small(labels, min_area)
        if labels.any():
            pairs.append(Pair(f"ccp/{mat.stem}", _rgb_image(photo), labels, CCP_SOURCE))
    return pairs


def pet_pairs(root: str | Path, limit: int | None = None) -> list[Pair]:
    """Oxford pets: one object per photo, the trimap's border band is ignored by the loss."""
    pairs = []
    for trimap_path, photo in _annotated_photos(Path(root), "trimaps/*.png", "images", limit):
        trimap = read_label_image(trimap_path)
        rgb = _rgb_image(photo)
        if rgb.shape[:2] != trimap.shape:
            continue
        pairs.append(Pair(f"pets/{trimap_path.stem}", rgb, (trimap == PET).astype(np.int32), PETS_SOURCE,
                          ignore=trimap == PET_BORDER))
    return pairs


def dsb_pairs(root: str | Path, held_out: bool = False, every: int = 10) -> list[Pair]:
    """DSB2018 nuclei. Every ``every``-th image (in name order) is held out for measuring:
    ``held_out=False`` gives the others, ``True`` those."""
    root = Path(root)
    labels_files = sorted((root / "labels").glob("*.png"))
    if not labels_files:
        raise FileNotFoundError(f"{root}: no labels/*.png")
    pairs = []
    for i, path in enumerate(labels_files):
        if (i % every == 0) != held_out:
            continue
        labels = read_label_image(path).astype(np.int32)
        pairs.append(Pair(f"dsb/{path.stem[:12]}", _rgb_image(root / "images" / path.name), labels, DSB_SOURCE))
    return pairs


def monuseg_pairs(root: str | Path, held_out: bool = False) -> list[Pair]:
    """MoNuSeg H&E nuclei (``get-more.sh``'s layout): one Aperio XML polygon per nucleus. The
    training tiles (``held_out=False``) or the challenge's test tiles; a tile without its XML is
    skipped (a partial copy lacks some)."""
    root = Path(root) / "datasets"
    if held_out:
        found = [(xml, xml.with_suffix(".tif")) for xml in sorted((root / "MoNuSegTestData").glob("*.xml"))]
    else:
        found = [(xml, root / "MoNuSegTrainingData" / "Tissue_Images" / f"{xml.stem}.tif")
                 for xml in sorted((root / "MoNuSegTrainingData" / "Annotations").glob("*.xml"))]
    found = [(xml, tile) for xml, tile in found if tile.is_file()]
    if not found:
        raise FileNotFoundError(f"{root}: no MoNuSeg tiles with their XML")
    pairs = []
    for xml, tile in found:
        rgb = _rgb_image(tile)
        pairs.append(Pair(f"monuseg/{tile.stem}", rgb, _aperio_labels(xml, rgb.shape[:2]), MONUSEG_SOURCE))
    return pairs


def _aperio_labels(xml: Path, size: tuple[int, int]) -> np.ndarray:
    from xml.etree import ElementTree

    labels = np.zeros(size, np.int32)
    regions = ElementTree.parse(xml).getroot().iter("Region")
    for k, region in enumerate(regions, start=1):
        xy = [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
        if len(xy) >= 3:
            labels[polygons_mask([np.ravel(xy)], size)] = k
    return labels


def cwfid_pairs(root: str | Path, held_out: bool = False) -> list[Pair]:
    """CWFID field images: one polygon per plant (crop or weed), cut to the set's pixel mask of
    vegetation, since the polygons are drawn loosely around the leaves. The split is the set's own
    ``train_test_split.yaml`` (an image listed in both is training)."""
    import yaml

    root = Path(root)
    split = root / "train_test_split.yaml"
    if not split.is_file():
        raise FileNotFoundError(f"{root}: no train_test_split.yaml")
    parts = yaml.safe_load(split.read_text())
    numbers = sorted(set(parts["test"]) - set(parts["train"])) if held_out else sorted(parts["train"])
    pairs = []
    for number in numbers:
        image = root / "images" / f"{number:03d}_image.png"
        plants = root / "annotations" / f"{number:03d}_annotation.yaml"
        vegetation_path = root / "masks" / f"{number:03d}_mask.png"
        if not (image.is_file() and plants.is_file() and vegetation_path.is_file()):
            continue
        rgb = _rgb_image(image)
        vegetation = read_label_image(vegetation_path) == 0   # the set's masks mark the soil
        labels = np.zeros(rgb.shape[:2], np.int32)
        for k, plant in enumerate(yaml.safe_load(plants.read_text()).get("annotation") or [], start=1):
            points = plant["points"]
            xs, ys = np.atleast_1d(points["x"]), np.atleast_1d(points["y"])
            if len(xs) >= 3:
                labels[polygons_mask([np.column_stack([xs, ys]).ravel()], labels.shape) & vegetation] = k
        if labels.any():
            pairs.append(Pair(f"cwfid/{number:03d}", rgb, labels, CWFID_SOURCE))
    if not pairs:
        raise FileNotFoundError(f"{root}: no CWFID images with their annotation and mask")
    return pairs


def held_out_domain(name: str, root: str | Path) -> list[Pair]:
    """The objects of a domain that the shipped default never trained on, by name: ``sstem``
    (ssTEM stack1 slices 10-19), ``cvppp`` (CVPPP A1 plants 81 on), ``dsb2018`` (every 10th
    image), read from ``root`` (the folder that holds sstem_vnc/, cvppp_a1/, dsb2018/); and two
    domains the default has not seen at all, from ``get-more.sh``'s folder: ``monuseg`` (its test
    tiles) and ``cwfid`` (its test images)."""
    from .data import cvppp_pairs, sstem_pairs

    root = Path(root)
    readers = {"sstem": lambda: sstem_pairs(root / "sstem_vnc", range(10, 20)),
               "cvppp": lambda: cvppp_pairs(root / "cvppp_a1", range(81, 1000)),
               "dsb2018": lambda: dsb_pairs(root / "dsb2018", held_out=True),
               "monuseg": lambda: monuseg_pairs(root / "monuseg", held_out=True),
               "cwfid": lambda: cwfid_pairs(root / "cwfid", held_out=True)}
    if name not in readers:
        raise ValueError(f"unknown domain {name!r}: known are {', '.join(HELD_OUT_DOMAINS)}")
    return readers[name]()


#: ``held_out_domain``'s names, with what each holds.
HELD_OUT_DOMAINS = {"sstem": "ssTEM stack1 slices 10-19", "cvppp": "CVPPP A1 plants 81 on",
                    "dsb2018": "DSB2018 every 10th image", "monuseg": "MoNuSeg H&E test tiles (get-more.sh)",
                    "cwfid": "CWFID field plants, test images (get-more.sh)"}
