"""The simulated user, shared by evaluation and training: the first clicks from an object's mask
(IOG's box corners and most interior pixel; DEXTR's extreme points) and each next click at
the most interior pixel of the larger error region.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .. import geometry as G


def initial_clicks(mask: np.ndarray) -> dict[str, list]:
    """IOG's first three clicks: the tight box's corners and the most interior pixel."""
    box = G.mask_box(mask)
    return {"corners": [(box.r0, box.c0), (box.r1, box.c1)], "inside": [G.most_interior_point(mask)]}


def extreme_points(mask: np.ndarray) -> list[tuple[int, int]]:
    """DEXTR's four clicks: left-, right-most, top and bottom pixels (the middle one of each
    extreme column/row)."""
    rows, cols = np.nonzero(mask)

    def middle(values):
        values = np.sort(values)
        return int(values[len(values) // 2])

    left, right, top, bottom = cols.min(), cols.max(), rows.min(), rows.max()
    return [(middle(rows[cols == left]), int(left)), (middle(rows[cols == right]), int(right)),
            (int(top), middle(cols[rows == top])), (int(bottom), middle(cols[rows == bottom]))]


def next_click(prediction: np.ndarray, truth: np.ndarray,
               ignore: np.ndarray | None = None) -> tuple[tuple[int, int], bool] | None:
    """The next simulated click: ``(point, positive)``, or None when there is no error."""
    valid = np.ones(truth.shape, bool) if ignore is None else ~ignore
    best = None
    for errors, positive in ((truth & ~prediction & valid, True), (prediction & ~truth & valid, False)):
        regions, n = ndimage.label(errors)
        if n == 0:
            continue
        sizes = np.bincount(regions.ravel())[1:]
        largest = int(np.argmax(sizes))
        if best is None or sizes[largest] > best[0]:
            best = (int(sizes[largest]), regions == largest + 1, positive)
    if best is None:
        return None
    return G.most_interior_point(best[1]), best[2]
