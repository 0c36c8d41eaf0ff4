"""napari-iog: three-click object segmentation (Inside-Outside Guidance) for napari.

The names below are imported on first use, so that ``import napari_iog`` (and any of its
numpy-only modules, such as ``napari_iog.io``) does not pull in torch, napari or Qt.
"""

from importlib.metadata import PackageNotFoundError, version

from ._lazy import lazy_exports

try:
    __version__ = version("napari-iog")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0.0.0"

_EXPORTS = {
    "ARCHITECTURES": ".models", "CheckpointError": ".models", "UnknownArchitectureError": ".models",
    "build_model": ".models", "load_model": ".models", "save_model": ".models",
    "ClickError": ".geometry", "IOGPredictor": ".predictor", "Prediction": ".predictor",
    "Annotator": "._napari.annotator",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["__version__", *_EXPORTS]
