"""Sample images for a first try, shipped with scikit-image (no download)."""

from __future__ import annotations


def photo():
    """An RGB photograph (scikit-image's astronaut, public domain, NASA)."""
    from skimage import data

    return [(data.astronaut(), {"name": "astronaut", "rgb": True})]


def microscopy():
    """A grayscale microscopy image (scikit-image's ``cell``: a phase-contrast cell)."""
    from skimage import data

    return [(data.cell(), {"name": "cell", "colormap": "gray"})]
