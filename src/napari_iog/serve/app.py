"""The FastAPI app around one predictor: ``/health`` (open), ``/info``, ``/predict``,
``/predict_many`` (token), and the OpenAPI schema at ``/openapi.json``.

A request carries each object's crop (RGB uint8, the box grown by ``RELAX`` px, as
:class:`~napari_iog.remote.RemotePredictor` reads it) and its clicks in the crop's pixels; the
answer is the crop's probability (float16 ``.npy``, zlib, base64). Nothing is unpickled, and
request size, crop size and clicks are limited; malformed input is a 4xx with the reason.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .. import geometry as G
from ..prompt import Prompt
from ..remote_codec import BadArray, decode_array, encode_array, encode_mask
from .auth import token_matches
from .batching import Batcher

Point = list[Annotated[float, Field(allow_inf_nan=False)]]
#: which process answered (replicas behind Ray Serve each have their own)
SERVER_ID = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Limits:
    max_body_bytes: int = 64 << 20          # one request
    max_crop_side: int = 4096               # pixels, each side of a crop
    max_clicks: int = 64                    # corrections of one object
    max_objects: int = 64                   # objects of one request


class ObjectRequest(BaseModel):
    crop: str = Field(description="the crop, RGB uint8 (rows, cols, 3), as a zlib-compressed .npy in base64")
    corners: list[Point] = Field(description="two opposite corners of the box (row, col) in the crop")
    inside: list[Point] = Field(description="the inside click(s)")
    positive: list[Point] = Field(default_factory=list)
    negative: list[Point] = Field(default_factory=list)


class ManyRequest(BaseModel):
    objects: list[ObjectRequest]
    threshold: float | None = Field(default=None, gt=0, lt=1, description="default: the model's")
    probability: bool = Field(default=False, description="also answer the probability (float16), not the mask only")


def make_app(predictor, token: str | None, limits: Limits | None = None, batching: bool = True) -> FastAPI:
    """The app serving ``predictor``; ``token`` None serves without one (never by default).
    ``batching``: objects of requests that arrive together share a forward pass (``Batcher``)."""
    limits = limits or Limits()
    lock = threading.Lock()         # one network call at a time on the predictor
    batcher = Batcher(predictor) if batching and not predictor.is_refine else None
    app = FastAPI(title="napari-iog", description="IOG segmentation from clicks, for napari-iog's annotator")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        # where and why, never the values sent (a NaN there could not even be written as JSON)
        where = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in error.errors()[:10])
        return JSONResponse({"detail": f"malformed request: {where}"}, 422)

    @app.middleware("http")
    async def limit_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
            return JSONResponse({"detail": f"the request is larger than {limits.max_body_bytes} bytes"}, 413)
        return await call_next(request)

    def authorised(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else None
        if not token_matches(given, token):
            raise HTTPException(401, "a valid token is needed: Authorization: Bearer <token>")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/info", dependencies=[Depends(authorised)])
    def info() -> dict:
        p = predictor
        return {"arch": p.arch, "card": {k: v for k, v in (p.card or {}).items() if k in ("name", "base", "steps")},
                "device": str(p.device), "precision": p.precision, "backend": getattr(p, "backend", "torch"),
                "threshold": p.threshold, "dextr": p.is_dextr, "limits": asdict(limits)}

    def run(objects: list[ObjectRequest], threshold: float | None = None, probability: bool = False) -> dict:
        if not objects or len(objects) > limits.max_objects:
            raise HTTPException(422, f"send 1 to {limits.max_objects} objects, not {len(objects)}")
        crops, checked = [], []
        for n, item in enumerate(objects):
            crop = _crop_of(item, limits, n)
            if len(item.positive) + len(item.negative) > limits.max_clicks:
                raise HTTPException(422, f"object {n}: more than {limits.max_clicks} correction clicks")
            try:
                checked.append(Prompt.check(crop.shape[:2], item.corners, item.inside, item.positive, item.negative))
            except (G.ClickError, ValueError, TypeError) as err:
                raise HTTPException(422, f"object {n}: {err}") from err
            crops.append(crop)
        start = time.perf_counter()
        if batcher is not None:
            probabilities = batcher.probabilities(list(zip(crops, checked)))
        else:
            with lock:
                probabilities = [predictor.predict(crop, prompt=prompt, postprocess=False).crop_probability
                                 for crop, prompt in zip(crops, checked)]
        seconds = time.perf_counter() - start
        threshold = predictor.threshold if threshold is None else threshold
        answers = []
        for p in probabilities:
            answer = {"mask": encode_mask(p > threshold), "shape": list(p.shape), "seconds": seconds / len(crops)}
            if probability:
                answer["probability"] = encode_array(p.astype(np.float16))
            answers.append(answer)
        return {"objects": answers, "seconds": seconds, "threshold": threshold, "server": SERVER_ID}

    @app.post("/predict", dependencies=[Depends(authorised)])
    def predict(item: ObjectRequest) -> dict:
        answer = run([item])
        return {**answer["objects"][0], "seconds": answer["seconds"]}

    @app.post("/predict_many", dependencies=[Depends(authorised)])
    def predict_many(request: ManyRequest) -> dict:
        return run(request.objects, request.threshold, request.probability)

    app.state.batcher = batcher
    return app


def _crop_of(item: ObjectRequest, limits: Limits, n: int) -> np.ndarray:
    side = limits.max_crop_side
    try:
        crop = decode_array(item.crop, side * side * 3 + 1024)
    except BadArray as err:
        raise HTTPException(422, f"object {n}: the crop is {err}") from err
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise HTTPException(422, f"object {n}: the crop must be RGB uint8 (rows, cols, 3), not {crop.dtype} "
                                 f"{crop.shape}")
    if max(crop.shape[:2]) > side or min(crop.shape[:2]) < 2:
        raise HTTPException(422, f"object {n}: a crop side must be 2..{side} pixels, not {crop.shape[:2]}")
    return crop
