"""Every file napari-iog reads or writes for the user: images, label images, COCO instance
files, and the atomic writer that all of them (and the zoo and the trainer) write through.

numpy in and out, no torch, no napari.
"""

from .atomic import WriteFailed, atomic_write
from .coco import (
    ENCODINGS,
    coco_to_labels,
    decode_rle,
    encode_rle,
    labels_to_coco,
    mask_polygons,
    polygons_mask,
    read_coco,
    write_coco,
)
from .images import IMAGE_SUFFIXES, open_array, read_image
from .label_files import (
    PHOTO_COLOURS,
    LabelsFileError,
    check_label_image,
    read_label_image,
    read_labels,
    write_labels_tif,
)

__all__ = [
    "ENCODINGS", "IMAGE_SUFFIXES", "PHOTO_COLOURS", "LabelsFileError", "WriteFailed", "atomic_write",
    "check_label_image", "coco_to_labels", "decode_rle", "encode_rle", "labels_to_coco", "mask_polygons",
    "open_array", "polygons_mask", "read_coco", "read_image", "read_label_image", "read_labels", "write_coco",
    "write_labels_tif",
]
