"""napari and Qt live here only: the annotator (layers, events, worker) and the dock widgets."""

from .annotator import Annotator
from .annotator_widget import AnnotatorWidget

__all__ = ["Annotator", "AnnotatorWidget"]
