"""Synthetic training scenes: visible objects, exact labels, reproducible from a seed."""

import numpy as np
import pytest
from scipy import ndimage

from napari_iog.training import InstanceDataset, Pair
from napari_iog.training.synthetic import MIN_CONTRAST, synthetic_pairs


def grey_sources():
    """Flat grey images: a texture cut from them cannot be seen, so every object drawn must
    have been given another appearance (or left out)."""
    labels = np.zeros((64, 80), np.int32)
    labels[10:40, 20:60] = 1
    return [Pair("grey", np.full((64, 80, 3), 128, np.uint8), labels, "grey test source")]


def test_scenes_have_the_asked_size_and_their_sources_licences():
    pairs = synthetic_pairs(grey_sources(), count=5, size=96, seed=0)
    assert len(pairs) == 5
    for pair in pairs:
        assert pair.rgb.shape == (96, 96, 3) and pair.rgb.dtype == np.uint8
        assert pair.labels.shape == (96, 96) and pair.labels.dtype == np.int32
        assert "grey test source" in pair.source
    assert sum(len(np.unique(p.labels)) - 1 for p in pairs) >= 5


def test_every_object_stands_out_from_what_it_covers():
    # one object per scene, so what it covers is the grey
    for pair in synthetic_pairs(grey_sources(), count=12, size=96, seed=3, max_objects=1):
        for object_id in np.unique(pair.labels)[1:]:
            core = ndimage.binary_erosion(pair.labels == object_id, iterations=2)
            if core.any():          # its blurred rim mixes with the grey
                difference = np.abs(pair.rgb[core].astype(float) - 128).mean()
                assert difference >= MIN_CONTRAST - 3, (pair.name, object_id, difference)


def test_the_same_seed_gives_the_same_scenes_and_another_seed_others():
    a = synthetic_pairs(grey_sources(), count=3, size=64, seed=7)
    b = synthetic_pairs(grey_sources(), count=3, size=64, seed=7)
    c = synthetic_pairs(grey_sources(), count=3, size=64, seed=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.rgb, y.rgb)
        np.testing.assert_array_equal(x.labels, y.labels)
    assert any(not np.array_equal(x.labels, z.labels) for x, z in zip(a, c))


def test_scenes_feed_the_training_dataset():
    rng = np.random.default_rng(0)
    textured = Pair("noise", rng.integers(0, 255, (80, 80, 3), dtype=np.uint8),
                    np.pad(np.ones((30, 30), np.int32), 25), "noise")
    pairs = synthetic_pairs([textured], count=4, size=128, seed=1)
    dataset = InstanceDataset(pairs, augment=False)
    assert len(dataset) >= 1
    sample = dataset[0]
    assert tuple(sample["x"].shape) == (5, 512, 512) and set(np.unique(sample["target"].numpy())) <= {0, 1}


def test_no_sources_is_a_clear_error():
    with pytest.raises(ValueError, match="source image"):
        synthetic_pairs([], count=1)
