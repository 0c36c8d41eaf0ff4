"""The FastAPI app around one predictor: ``/health`` (open), ``/info``, ``/predict``,
``/predict_npy``, ``/predict_many`` (token), ``/learn`` with ``--learn`` (:mod:`.learning`), and
the OpenAPI schema at ``/openapi.json``.

A request carries each object's crop (RGB uint8, the box grown by ``RELAX`` px, as
:class:`~napari_iog.remote.RemotePredictor` reads it) and its clicks in the crop's pixels; the
answer is the crop's mask as packed bits (and its probability on request, float16 ``.npy``,
zlib, base64). ``/predict`` and ``/predict_many`` take JSON (crops as base64 ``.npy``);
``/predict_npy`` takes one crop as the body's plain ``.npy`` bytes and its clicks as the
``prompt`` query (JSON), which spares both sides base64 and a megabyte of JSON a click. Nothing
is unpickled, and request size, crop size and clicks are limited; malformed input is a 4xx with
the reason.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from .. import geometry as G
from ..prompt import Prompt
from ..remote_codec import BadArray, decode_array, encode_array, encode_mask, from_npy_bytes
from .auth import token_matches
from .batching import Batcher
from .learning import ModelVersions, ServerLearning, add_learning_routes

Point = list[Annotated[float, Field(allow_inf_nan=False)]]
#: which process answered (replicas behind Ray Serve each have their own)
SERVER_ID = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Limits:
    max_body_bytes: int = 64 << 20          # one request
    max_crop_side: int = 4096               # pixels, each side of a crop
    max_clicks: int = 64                    # corrections of one object
    max_objects: int = 64                   # objects of one request


class Clicks(BaseModel):
    corners: list[Point] = Field(description="two opposite corners of the box (row, col) in the crop")
    inside: list[Point] = Field(description="the inside click(s)")
    positive: list[Point] = Field(default_factory=list)
    negative: list[Point] = Field(default_factory=list)


class ObjectRequest(Clicks):
    crop: str = Field(description="the crop, RGB uint8 (rows, cols, 3), as a zlib-compressed .npy in base64")


class AnswerOptions(BaseModel):
    threshold: float | None = Field(default=None, gt=0, lt=1, description="default: the model's")
    probability: bool = Field(default=False, description="also answer the probability (float16), not the mask only")
    model_version: int | None = Field(default=None, ge=0, description="answer with this version of a learning "
                                      "server's model while it is kept (an object's corrections name the version "
                                      "that answered its first clicks); default: the newest")


class ManyRequest(AnswerOptions):
    objects: list[ObjectRequest]


class NpyPrompt(Clicks, AnswerOptions):
    """The clicks (JSON) of the object whose crop is the body (``/predict_npy``)."""


#: /predict_npy's body in the OpenAPI schema
NPY_BODY = {"requestBody": {
    "required": True, "description": "the crop, RGB uint8 (rows, cols, 3), as .npy bytes",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def make_app(predictor, token: str | None, limits: Limits | None = None, batching: bool = True,
             learning: ServerLearning | None = None, lanes: int = 1, max_batch: int = 16) -> FastAPI:
    """The app serving ``predictor``; ``token`` None serves without one (never by default).
    ``batching``: objects of requests that arrive together share a forward pass (``Batcher``), up
    to ``max_batch`` objects, with ``lanes`` passes at once (``main.serving_predictor`` chooses
    both for the device); without it, one object at a time.
    ``learning``: the server's learner over ``predictor`` (``napari-iog serve --learn``)."""
    limits = limits or Limits()
    lock = threading.Lock()         # one network call at a time on a predictor
    models = learning.models if learning is not None else ModelVersions(predictor)
    batcher = Batcher(predictor, max_batch, lanes=lanes) if batching and not predictor.is_refine else None
    app = FastAPI(title="napari-iog", description="IOG segmentation from clicks, for napari-iog's annotator")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        return JSONResponse({"detail": f"malformed request: {_where(error.errors())}"}, 422)

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
        version, p = models.get()
        return {"arch": p.arch, "card": {k: v for k, v in (p.card or {}).items() if k in ("name", "base", "steps")},
                "device": str(p.device), "precision": p.precision, "backend": getattr(p, "backend", "torch"),
                "threshold": p.threshold, "dextr": p.is_dextr, "limits": asdict(limits),
                "learning": learning is not None, "model_version": version, "predict_npy": True,
                "lanes": lanes if batcher is not None else 1}

    def run(objects: list[ObjectRequest], threshold: float | None = None, probability: bool = False,
            version: int | None = None, crops: list[np.ndarray] | None = None) -> dict:
        """``crops``: the objects' crops decoded already (the ``.npy`` body), else their ``crop`` fields."""
        if not objects or len(objects) > limits.max_objects:
            raise HTTPException(422, f"send 1 to {limits.max_objects} objects, not {len(objects)}")
        version, model = models.get(version)
        crops = crops or [_crop_of(item.crop, limits, f"object {n}: the crop") for n, item in enumerate(objects)]
        checked = []
        for n, (item, crop) in enumerate(zip(objects, crops)):
            if len(item.positive) + len(item.negative) > limits.max_clicks:
                raise HTTPException(422, f"object {n}: more than {limits.max_clicks} correction clicks")
            try:
                checked.append(Prompt.check(crop.shape[:2], item.corners, item.inside, item.positive, item.negative))
            except (G.ClickError, ValueError, TypeError) as err:
                raise HTTPException(422, f"object {n}: {err}") from err
        start = time.perf_counter()
        if batcher is not None:
            probabilities = batcher.probabilities(list(zip(crops, checked)), predictor=model)
        else:
            with lock:
                probabilities = [model.predict(crop, prompt=prompt, postprocess=False).crop_probability
                                 for crop, prompt in zip(crops, checked)]
        seconds = time.perf_counter() - start
        threshold = model.threshold if threshold is None else threshold
        answers = []
        for p in probabilities:
            answer = {"mask": encode_mask(p > threshold), "shape": list(p.shape), "seconds": seconds / len(crops)}
            if probability:
                answer["probability"] = encode_array(p.astype(np.float16))
            answers.append(answer)
        return {"objects": answers, "seconds": seconds, "threshold": threshold, "server": SERVER_ID,
                "model_version": version}

    @app.post("/predict", dependencies=[Depends(authorised)])
    def predict(item: ObjectRequest) -> dict:
        answer = run([item])
        return {**answer["objects"][0], "seconds": answer["seconds"], "model_version": answer["model_version"]}

    @app.post("/predict_many", dependencies=[Depends(authorised)])
    def predict_many(request: ManyRequest) -> dict:
        return run(request.objects, request.threshold, request.probability, request.model_version)

    @app.post("/predict_npy", dependencies=[Depends(authorised)], openapi_extra=NPY_BODY)
    async def predict_npy(request: Request, prompt: str = Query(description=NpyPrompt.__doc__)) -> dict:
        try:
            item = NpyPrompt.model_validate_json(prompt)
        except ValidationError as err:
            raise HTTPException(422, f"malformed prompt: {_where(err.errors())}") from err
        body = await _body(request, limits.max_body_bytes)
        crop = _checked_crop(lambda: from_npy_bytes(body), limits, "the body")
        answer = await run_in_threadpool(run, [item], item.threshold, item.probability, item.model_version, [crop])
        return {**answer["objects"][0], "seconds": answer["seconds"], "model_version": answer["model_version"],
                "server": SERVER_ID}

    add_learning_routes(app, learning, authorised, limits, _crop_of)
    app.state.batcher, app.state.learning = batcher, learning
    return app


def _where(errors) -> str:
    """Where a request is malformed and why, never the values sent (a NaN could not even be
    written as JSON)."""
    return "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in errors[:10])


def _crop_of(text: str, limits: Limits, what: str) -> np.ndarray:
    """The RGB uint8 array of a request's ``text`` (``what`` names it in the answer's reason)."""
    side = limits.max_crop_side
    return _checked_crop(lambda: decode_array(text, side * side * 3 + 1024), limits, what)


async def _body(request: Request, max_bytes: int) -> bytes:
    """The request's body, refused once it passes ``max_bytes`` (a body without a length too)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, f"the request is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _checked_crop(decode, limits: Limits, what: str) -> np.ndarray:
    """``decode()``'s array, refused with a 422 that names ``what`` unless it is an RGB uint8 crop
    within the limits."""
    try:
        crop = decode()
    except BadArray as err:
        raise HTTPException(422, f"{what} is {err}") from err
    side = limits.max_crop_side
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise HTTPException(422, f"{what} must be RGB uint8 (rows, cols, 3), not {crop.dtype} {crop.shape}")
    if max(crop.shape[:2]) > side or min(crop.shape[:2]) < 2:
        raise HTTPException(422, f"{what} must be 2..{side} pixels a side, not {crop.shape[:2]}")
    return crop
