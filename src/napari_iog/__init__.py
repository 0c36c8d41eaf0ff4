"""napari-iog: three-click object segmentation (Inside-Outside Guidance) for napari.

The models, geometry and predictor import without napari or Qt, so that they run on
machines that have only torch, numpy and scikit-image.
"""

from .models import (
    ARCHITECTURES,
    CheckpointError,
    UnknownArchitectureError,
    build_model,
    load_model,
    save_model,
)
from .guidance import ClickError
from .predictor import IOGPredictor, Prediction

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("napari-iog")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0.0.0"



def __getattr__(name):
    # Annotator needs napari: imported on first use so that ``import napari_iog`` stays light.
    if name == "Annotator":
        from ._widgets.annotator import Annotator

        return Annotator
    raise AttributeError(f"module 'napari_iog' has no attribute {name!r}")


__all__ = [
    "ARCHITECTURES", "Annotator", "CheckpointError", "ClickError", "IOGPredictor", "Prediction",
    "UnknownArchitectureError", "__version__", "build_model", "load_model", "save_model",
]
