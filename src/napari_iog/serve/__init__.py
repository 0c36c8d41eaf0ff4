"""``napari-iog serve``: one IOGPredictor as an HTTP service (FastAPI on uvicorn), for a lab
whose GPU is on one machine and whose annotators are on laptops (``napari_iog.remote`` is the
client). Needs the ``serve`` extra. Never imported by the core or the GUI."""

from .app import Limits, make_app
from .auth import load_or_make_token

__all__ = ["Limits", "load_or_make_token", "make_app"]
