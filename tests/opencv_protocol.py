"""The published IOG test protocol, re-implemented with OpenCV the way the authors' scripts do
it (float32 crops with zero padding, cv2 resizes, points read off the resized box mask, the
Gaussian of their make_gaussian, min-max scaling of both maps, crop2fullmask). Used only to
check that the predictor feeds the network what theirs fed it and pastes back what theirs did.
"""

import cv2
import numpy as np
import torch


def crop_from_bbox(img, bbox):
    """bbox = (x_min, y_min, x_max, y_max), inclusive, may exceed the image: zero padded."""
    h, w = img.shape[:2]
    crop = np.zeros((bbox[3] - bbox[1] + 1, bbox[2] - bbox[0] + 1) + img.shape[2:], dtype=img.dtype)
    vx0, vy0, vx1, vy1 = max(bbox[0], 0), max(bbox[1], 0), min(bbox[2], w - 1), min(bbox[3], h - 1)
    crop[vy0 - bbox[1]: vy1 - bbox[1] + 1, vx0 - bbox[0]: vx1 - bbox[0] + 1] = img[vy0: vy1 + 1, vx0: vx1 + 1]
    return crop


def make_gaussian(size, sigma=10, center=None):
    x = np.arange(0, size[1], 1, float)
    y = np.arange(0, size[0], 1, float)[:, np.newaxis]
    x0, y0 = center
    return np.exp(-4 * np.log(2) * ((x - x0) ** 2 + (y - y0) ** 2) / sigma ** 2)


def reference_input(image_rgb, corners, inside, relax=30, pad=10):
    """(5, 512, 512) float32 network input and the bbox, from (row, col) clicks."""
    img = image_rgb.astype(np.float32)
    (ra, ca), (rb, cb) = corners
    x_min, x_max, y_min, y_max = min(ca, cb), max(ca, cb), min(ra, rb), max(ra, rb)
    bbox = (x_min - relax, y_min - relax, x_max + relax, y_max + relax)
    crop = crop_from_bbox(img, bbox)
    resized = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_LINEAR)
    # The outside points are the extreme pixels of the (resized) box mask, moved by pad.
    box_mask = np.zeros(img.shape[:2], np.float32)
    box_mask[y_min: y_max + 1, x_min: x_max + 1] = 1
    crop_gt = cv2.resize(crop_from_bbox(box_mask, bbox), (512, 512), interpolation=cv2.INTER_LINEAR)
    ys, xs = np.where(crop_gt > 0.5)
    left, right, top, bottom = xs.min(), xs.max(), ys.min(), ys.max()
    corners512 = [(max(left - pad, 0), max(top - pad, 0)), (min(right + pad, 511), max(top - pad, 0)),
                  (max(left - pad, 0), min(bottom + pad, 511)), (min(right + pad, 511), min(bottom + pad, 511))]
    # The inside click, mapped into the frame with OpenCV's pixel-centre convention.
    ri, ci = inside
    cx = int(np.floor((ci - bbox[0] + 0.5) * 512 / crop.shape[1] - 0.5 + 0.5))
    cy = int(np.floor((ri - bbox[1] + 0.5) * 512 / crop.shape[0] - 0.5 + 0.5))
    gt0 = make_gaussian((512, 512), center=(cx, cy))
    gt1 = np.zeros((512, 512))
    for x, y in corners512:
        gt1 = np.maximum(gt1, make_gaussian((512, 512), center=(x, y)))
    maps = np.stack([gt0, gt1], -1)
    maps = 255 * (maps - maps.min()) / (maps.max() - maps.min() + 1e-10)
    x5 = np.concatenate([resized, maps.astype(np.float32)], -1).transpose(2, 0, 1)
    return x5.astype(np.float32), bbox


def crop2fullmask(crop_mask, bbox, im_size):
    crop_mask = cv2.resize(crop_mask, (bbox[2] - bbox[0] + 1, bbox[3] - bbox[1] + 1), interpolation=cv2.INTER_CUBIC)
    h, w = im_size
    out = np.zeros(im_size, np.float32)
    vx0, vy0, vx1, vy1 = max(bbox[0], 0), max(bbox[1], 0), min(bbox[2], w - 1), min(bbox[3], h - 1)
    out[vy0: vy1 + 1, vx0: vx1 + 1] = crop_mask[vy0 - bbox[1]: vy1 - bbox[1] + 1, vx0 - bbox[0]: vx1 - bbox[0] + 1]
    return out


def reference_probability(model, image_rgb, corners, inside):
    x5, bbox = reference_input(image_rgb, corners, inside)
    x = torch.from_numpy(x5)[None]
    extra = getattr(getattr(model, "config", None), "input_channels", 5) - x.shape[1]
    if extra > 0:       # a network that also reads correction maps: none at the first clicks
        x = torch.cat([x, x.new_zeros(1, extra, *x.shape[2:])], 1)
    with torch.no_grad():
        logits = model(x)[0, 0].numpy()
    prob = 1 / (1 + np.exp(-logits))
    return crop2fullmask(prob.astype(np.float32), bbox, image_rgb.shape[:2]), bbox
