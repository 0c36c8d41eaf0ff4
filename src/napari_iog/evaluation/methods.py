"""Methods under evaluation: anything with ``name``, ``first_click`` (the clicks it needs) and
``segment(image, clicks) -> bool mask``. :class:`IOGMethod` wraps an ``IOGPredictor``;
:class:`BoxBaseline` and :class:`GrabCutBaseline` (OpenCV, optional) give every table a floor.
"""

from __future__ import annotations

import numpy as np

from .. import geometry as G


class IOGMethod:
    """An IOGPredictor under the simulated user (DEXTR models: the four extreme points).

    ``postprocess``: False (the default) scores the network's raw output as the published
    protocol does, so figures compare with the papers'; True scores the cleaned mask a user gets."""

    def __init__(self, predictor, name: str | None = None, postprocess: bool = False):
        self.predictor = predictor
        self.postprocess = postprocess
        self.name = name or predictor.arch
        self.dextr = predictor.is_dextr
        self.first_click = 4 if self.dextr else 3

    def segment(self, image, clicks: dict[str, list]) -> np.ndarray:
        if self.dextr:
            return self.predictor.predict_extreme(image, clicks["extreme"]).mask
        return self.predictor.predict(image, corners=clicks["corners"], inside=clicks["inside"],
                                      positive=clicks["positive"], negative=clicks["negative"],
                                      postprocess=self.postprocess).mask

    def takes_corrections(self) -> bool:
        return not self.dextr


class BoxBaseline:
    """The clicked box itself as the mask: the floor every method must beat."""

    name = "box"
    first_click = 2

    def segment(self, image, clicks) -> np.ndarray:
        mask = np.zeros(image.shape[:2], bool)
        mask[G.box_from_corners(clicks["corners"], mask.shape).slices()] = True
        return mask

    def takes_corrections(self) -> bool:
        return False


class GrabCutBaseline:
    """OpenCV's GrabCut initialised from the box, with the clicks as hard seeds (discs of
    ``seed_radius``): inside and positive clicks foreground, negative clicks background.
    Needs ``opencv-python-headless`` (the ``benchmark`` extra)."""

    name = "opencv-grabcut"
    first_click = 3

    def __init__(self, iterations: int = 5, seed_radius: int = 5):
        import cv2  # noqa: F401  (fails early when OpenCV is missing)

        self.iterations, self.seed_radius = iterations, seed_radius

    def segment(self, image, clicks) -> np.ndarray:
        import cv2

        rgb = np.asarray(image)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        bgr = np.ascontiguousarray(rgb[..., ::-1].astype(np.uint8))
        mask = np.full(bgr.shape[:2], cv2.GC_BGD, np.uint8)
        mask[G.box_from_corners(clicks["corners"], mask.shape).slices()] = cv2.GC_PR_FGD
        for key, value in (("inside", cv2.GC_FGD), ("positive", cv2.GC_FGD), ("negative", cv2.GC_BGD)):
            for r, c in clicks.get(key, []):
                cv2.circle(mask, (int(c), int(r)), self.seed_radius, int(value), -1)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(bgr, mask, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
        return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)

    def takes_corrections(self) -> bool:
        return True
