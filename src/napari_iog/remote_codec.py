"""How arrays travel between ``napari-iog serve`` and its client: ``.npy`` bytes (never a
pickle), zlib-compressed, base64 in JSON. Shared by both sides, free of any web framework."""

from __future__ import annotations

import base64
import io
import zlib

import numpy as np


class BadArray(ValueError):
    """Bytes that are not the array they claim to be."""


def encode_array(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return base64.b64encode(zlib.compress(buffer.getvalue(), 3)).decode("ascii")


def decode_array(text: str, max_bytes: int) -> np.ndarray:
    """The array of :func:`encode_array`'s text; at most ``max_bytes`` once uncompressed."""
    try:
        packed = base64.b64decode(text.encode("ascii"), validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, max_bytes + 1)
    except (ValueError, zlib.error, UnicodeEncodeError) as err:
        raise BadArray(f"not base64 of a zlib-compressed .npy: {err}") from err
    if len(raw) > max_bytes or inflater.unconsumed_tail:
        raise BadArray(f"the array is larger than {max_bytes} bytes")
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise BadArray(f"not a .npy array (objects are never unpickled): {err}") from err
