"""napari reader and writer for COCO instance files (File > Open, File > Save Selected Layers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import io


def get_coco_reader(path: str | list[str]):
    """napari asks for a reader: give one only for a single COCO .json with images."""
    if isinstance(path, list) or not str(path).lower().endswith(".json"):
        return None
    try:
        with open(path) as f:
            head = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(head, dict) or "images" not in head or "annotations" not in head:
        return None
    return read_coco_layer


def read_coco_layer(path: str) -> list[tuple[Any, dict, str]]:
    labels = io.read_coco(path)
    return [(labels, {"name": Path(path).stem}, "labels")]


def write_coco_layer(path: str, data: Any, meta: dict) -> list[str]:
    """A labels layer as COCO JSON (RLE); one image per plane of a stack."""
    if isinstance(data, list):      # a multiscale layer: its full-resolution level
        data = data[0]
    io.write_coco(path, data, image_name=meta.get("name", Path(path).stem))
    return [str(path)]
