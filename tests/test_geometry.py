"""The geometry of the protocol, checked against the way the authors computed it."""

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_iog import geometry as G


@settings(max_examples=60, deadline=None)
@given(r0=st.integers(0, 300), c0=st.integers(0, 300), h=st.integers(2, 900), w=st.integers(2, 900))
def test_box_in_frame_equals_extremes_of_the_resized_box_mask(r0, c0, h, w):
    box = G.Box(r0, c0, r0 + h - 1, c0 + w - 1)
    crop = box.grow(G.RELAX)
    box_mask = np.zeros((crop.height, crop.width), np.float32)
    box_mask[G.RELAX:G.RELAX + h, G.RELAX:G.RELAX + w] = 1
    resized = cv2.resize(box_mask, (512, 512), interpolation=cv2.INTER_LINEAR)
    rows, cols = np.where(resized > 0.5)
    expected = (rows.min(), cols.min(), rows.max(), cols.max())
    got = G.box_in_frame(box, crop)
    # cv2 computes bilinear weights in fixed point: exact ties at 0.5 may fall either way.
    assert all(abs(a - b) <= 1 for a, b in zip(got, expected))


def test_outside_points_are_moved_out_and_clamped():
    box = G.Box(30, 30, 60, 60)
    pts = G.outside_points(box, box.grow(30))
    assert pts.min() >= 0 and pts.max() <= 511
    top, left, bottom, right = G.box_in_frame(box, box.grow(30))
    assert sorted(map(tuple, pts)) == sorted([(top - 10, left - 10), (top - 10, right + 10),
                                              (bottom + 10, left - 10), (bottom + 10, right + 10)])
    whole = G.Box(0, 0, 99, 99)
    assert G.outside_points(whole, whole).tolist() == [[0, 0], [0, 511], [511, 0], [511, 511]]


def test_gaussian_map_matches_the_published_formula():
    g = G.gaussian_map(np.array([[100.0, 200.0]]), sigma=10)
    yy, xx = np.mgrid[:512, :512]
    expected = np.exp(-4 * np.log(2) * ((xx - 200) ** 2 + (yy - 100) ** 2) / 100.0)
    np.testing.assert_allclose(g, expected, atol=1e-6)
    assert g[100, 200] == 1.0 and g[100, 205] == pytest.approx(0.5)  # sigma is the FWHM


@settings(max_examples=80, deadline=None)
@given(points=st.lists(st.tuples(st.floats(-300, 800), st.floats(-300, 800)), max_size=6),
       sigma=st.sampled_from([3.0, 10.0, 25.0]), size=st.sampled_from([64, 512]))
def test_gaussian_map_is_exactly_the_whole_grid_computation(points, sigma, size):
    """Only the window around each point is computed; every value is the one the whole grid gives."""
    grid = np.arange(size, dtype=np.float64)
    k = 4.0 * np.log(2.0) / sigma**2
    expected = np.zeros((size, size), np.float32)
    for r, c in points:
        np.maximum(expected, np.outer(np.exp(-k * (grid - r) ** 2), np.exp(-k * (grid - c) ** 2)).astype(np.float32),
                   out=expected)
    got = G.gaussian_map(np.array(points, np.float64).reshape(-1, 2), size, sigma)
    assert got.dtype == np.float32 and np.array_equal(got, expected)


def test_guidance_maps_are_scaled_together():
    maps = G.guidance_maps(np.array([[10.0, 10.0]]), np.array([[500.0, 500.0], [0.0, 511.0]]))
    assert maps.shape == (2, 512, 512) and maps.dtype == np.float32
    assert maps.max() == pytest.approx(255) and maps.min() == pytest.approx(0, abs=1e-3)


def test_most_interior_point_and_border():
    mask = np.zeros((50, 60), bool)
    mask[10:31, 5:46] = True
    r, c = G.most_interior_point(mask)
    assert r == 20 and 15 <= c <= 35  # the middle row; a plateau, argmax takes its first pixel
    # The image border counts as boundary: a mask filling the image peaks in its middle.
    assert G.most_interior_point(np.ones((11, 11), bool)) == (5, 5)
    assert G.most_interior_point(np.zeros((5, 5), bool)) is None


def test_read_crop_pads_with_zeros_outside_the_image():
    image = np.arange(100, dtype=np.uint8).reshape(10, 10)
    crop = G.Box(-2, 7, 3, 12)
    window_data, window = G.read_crop(image, crop, image.shape)
    assert window == G.Box(0, 7, 3, 9)
    padded = G.pad_to_crop(window_data[..., None], window, crop)[..., 0]
    assert padded.shape == (6, 6)
    assert not padded[:2].any() and not padded[:, 3:].any()
    assert np.array_equal(padded[2:, :3], image[0:4, 7:10])
    pasted = G.paste(padded, crop, image.shape, np.uint8)
    assert np.array_equal(pasted[0:4, 7:10], image[0:4, 7:10]) and pasted.sum() == image[0:4, 7:10].sum()
