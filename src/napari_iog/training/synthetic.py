"""Synthetic training pairs: objects whose only cue is that they differ from their surroundings.

A network trained from random weights on a few hundred real images learns "a blob that fills
the box"; these scenes teach it to follow the image's own boundaries. Each scene is a
background cut from a real training image, with 1 to 4 objects painted over it, later ones
occluding earlier ones:

- a random shape (a thresholded smooth-noise blob, a star polygon, an ellipse or a bent bar:
  convex, non-convex, thin) filled with a texture cut from another image, colour-shifted, or a
  flat colour with noise;
- or a real object (a region of a source image's labels) cut out with its own pixels and
  pasted, scaled, somewhere else.

Edges are softened by one pixel's blur, as a camera's are. The textures and pasted objects
come from the pairs given, so the synthetic scenes carry their sources' licences.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .data import Pair

SHAPES = ("blob", "star", "ellipse", "bar")
#: Least mean RGB difference between a painted object and what it covers.
MIN_CONTRAST = 25.0


def synthetic_pairs(sources: Sequence[Pair], count: int, size: int = 320, seed: int = 0,
                    paste_share: float = 0.4, max_objects: int = 4) -> list[Pair]:
    """``count`` synthetic scenes of ``size`` x ``size`` built from ``sources`` (real pairs),
    each with 1 to ``max_objects`` objects; ``paste_share`` of them are pasted real objects."""
    if not sources:
        raise ValueError("synthetic scenes need at least one source image for their textures")
    rng = np.random.default_rng(seed)
    origin = "synthetic scenes from " + "; ".join(sorted({p.source for p in sources if p.source}))
    return [_scene(sources, size, rng, paste_share, max_objects, f"synthetic{i:05d}", origin)
            for i in range(count)]


def _scene(sources, size, rng, paste_share, max_objects, name, origin) -> Pair:
    image = _texture(sources, size, size, rng)
    labels = np.zeros((size, size), np.int32)
    for object_id in range(1, int(rng.integers(1, max_objects + 1)) + 1):
        # an object nobody could see teaches only "fill the box": redraw it, or leave it out
        for _ in range(4):
            if rng.random() < paste_share:
                pasted = _real_object(sources, size, rng, image)
                if pasted is None:
                    continue
                mask, pixels = pasted
            else:
                mask = _shape(size, rng)
                pixels = _fill(sources, size, rng, image)
            if mask.any() and np.abs(pixels[mask] - image[mask]).mean() >= MIN_CONTRAST:
                break
        else:
            continue
        soft = ndimage.gaussian_filter(mask.astype(np.float32), 0.7)[..., None]
        image = image * (1 - soft) + pixels * soft
        labels[mask] = object_id
    return Pair(name, np.clip(np.rint(image), 0, 255).astype(np.uint8), labels, origin)


def _texture(sources, height, width, rng) -> np.ndarray:
    """A random crop of a source image, scaled to cover (height, width), as float RGB."""
    rgb = sources[int(rng.integers(len(sources)))].rgb
    scale = max(height / rgb.shape[0], width / rgb.shape[1]) * rng.uniform(1.0, 2.0)
    # crop first, then zoom only the crop: a tenth of the work of zooming the whole image
    crop_h = min(rgb.shape[0], int(np.ceil(height / scale)) + 1)
    crop_w = min(rgb.shape[1], int(np.ceil(width / scale)) + 1)
    top = int(rng.integers(rgb.shape[0] - crop_h + 1))
    left = int(rng.integers(rgb.shape[1] - crop_w + 1))
    crop = rgb[top:top + crop_h, left:left + crop_w].astype(np.float32)
    zoomed = ndimage.zoom(crop, (height / crop_h + 1e-6, width / crop_w + 1e-6, 1), order=1)
    zoomed = zoomed[:height, :width]
    if zoomed.shape[:2] != (height, width):     # rounding: pad by edge values
        zoomed = np.pad(zoomed, ((0, height - zoomed.shape[0]), (0, width - zoomed.shape[1]), (0, 0)), "edge")
    return zoomed[:, ::-1] if rng.random() < 0.5 else zoomed


def _fill(sources, size, rng, background) -> np.ndarray:
    kind = rng.random()
    if kind < 0.45:
        pixels = _texture(sources, size, size, rng)
    elif kind < 0.75:
        pixels = np.broadcast_to(rng.uniform(0, 255, 3), (size, size, 3)) + rng.normal(0, rng.uniform(2, 20),
                                                                                      (size, size, 3))
    else:   # the background's own texture with a colour or brightness shift: a subtle object
        pixels = background * rng.uniform(0.5, 1.5, 3) + rng.uniform(-80, 80, 3)
    return np.clip(pixels, 0, 255)


def _shape(size, rng) -> np.ndarray:
    """One connected random shape, between a tenth and two thirds of the scene across."""
    kind = SHAPES[int(rng.integers(len(SHAPES)))]
    extent = rng.uniform(0.1, 0.66) * size
    cy, cx = rng.uniform(0.15, 0.85, 2) * size
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    if kind == "blob":
        noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), extent / 4)
        noise /= noise.std() + 1e-9
        falloff = ((yy - cy) ** 2 + (xx - cx) ** 2) / (extent / 2) ** 2
        mask = noise - falloff > -0.5
    elif kind == "star":
        points = int(rng.integers(3, 9))
        radii = rng.uniform(0.3, 1.0, points) * extent / 2
        angle = np.arctan2(yy - cy, xx - cx) + np.pi
        step = 2 * np.pi / points
        i = (angle // step).astype(int) % points
        t = (angle % step) / step
        reach = radii[i] * (1 - t) + radii[(i + 1) % points] * t
        mask = np.hypot(yy - cy, xx - cx) < reach
    elif kind == "ellipse":
        a, b = extent / 2, extent / 2 * rng.uniform(0.25, 1.0)
        theta = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        mask = (u / a) ** 2 + (v / b) ** 2 < 1
    else:   # a bent bar: thin and non-convex, the hardest for a box-filling guess
        width = rng.uniform(0.08, 0.25) * extent
        theta = rng.uniform(0, np.pi)
        bend = rng.uniform(-1.5, 1.5) / extent
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        mask = (np.abs(u) < extent / 2) & (np.abs(v - bend * u ** 2) < width / 2)
    components, n = ndimage.label(mask)
    if n > 1:
        mask = components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
    return mask


def _real_object(sources, size, rng, background, tries: int = 5):
    """A labelled object of a source pair, cut out with its pixels, scaled and placed at random
    in a (size, size) frame; None when no usable object turned up."""
    for _ in range(tries):
        pair = sources[int(rng.integers(len(sources)))]
        ids = np.unique(pair.labels)
        ids = ids[ids > 0]
        if not len(ids):
            continue
        region = pair.labels == ids[int(rng.integers(len(ids)))]
        found = ndimage.find_objects(region.astype(np.uint8))[0]
        height, width = found[0].stop - found[0].start, found[1].stop - found[1].start
        if min(height, width) < 8 or region.sum() < 100:
            continue
        scale = min(rng.uniform(0.15, 0.7) * size / max(height, width), 3.0)
        cut = ndimage.zoom(region[found].astype(np.float32), scale, order=1) > 0.5
        pixels = ndimage.zoom(pair.rgb[found].astype(np.float32), (scale, scale, 1), order=1)
        h, w = cut.shape
        if h >= size or w >= size or cut.sum() < 64:
            continue
        top, left = int(rng.integers(size - h)), int(rng.integers(size - w))
        mask = np.zeros((size, size), bool)
        mask[top:top + h, left:left + w] = cut
        canvas = background.copy()
        canvas[top:top + h, left:left + w] = pixels
        return mask, canvas
    return None
