"""``RemotePredictor``: the predictor of a ``napari-iog serve`` server, called over HTTP with
``IOGPredictor``'s interface (``predict``, ``predict_batch``), so the annotation session cannot
tell them apart.

Only the crop the network needs travels (the clicked box grown by ``RELAX`` px, read here as
RGB 0..255 the way the local predictor reads it, so a 50k x 50k dask image is never loaded),
with the clicks in the crop's pixels; the server answers the crop's mask (or probability). A
single object goes to ``/predict_npy`` (the crop as the body's ``.npy`` bytes) when the server
has it, several to ``/predict_many`` (JSON). The mask is cleaned here (``postprocess``) exactly
as a local prediction is. Standard library only.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import geometry as G
from .predictor import DEFAULT_THRESHOLD, Prediction, _ImageReader
from .prompt import Prompt
from .remote_codec import decode_array, decode_mask, encode_array, encode_mask, npy_bytes

TOKEN_ENV = "NAPARI_IOG_TOKEN"
#: the largest answer accepted (a 4096 x 4096 crop's probability as float16)
MAX_ANSWER_BYTES = 2 * 4096 * 4096 + 1024


class RemoteError(ConnectionError):
    """The server could not be reached, refused the request, or failed; nothing was changed.
    ``status``: the HTTP status of the server's answer (None when there was none)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class RemotePredictor:
    """Predict with the model of a ``napari-iog serve`` server at ``url`` (``http://host:port``).

    ``token``: the server's access token (default: ``$NAPARI_IOG_TOKEN``). ``timeout``: seconds
    for one request. ``probability``: have the server send each crop's probability too (float16;
    by default only the mask travels, as packed bits, and ``probability`` is the mask as 0/1).
    ``last_timings`` holds the last click's network and round-trip seconds.

    A server that learns (``napari-iog serve --learn``) may put a better model in use at any
    time: an object's corrections ask for the version that answered its first clicks, so the
    model never changes under an object, and ``learn``/``forget`` send it committed objects.
    """

    is_dextr = False
    is_refine = False
    backend = "remote"

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0, postprocess: bool = True,
                 probability: bool = False):
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.timeout = float(timeout)
        self.postprocess, self.probability = bool(postprocess), bool(probability)
        self.last_timings: dict[str, float] = {}
        self.last_server: str | None = None
        info = self._call("GET", "/info")
        self.info = info
        self.arch, self.card = info["arch"], dict(info.get("card") or {})
        self.precision = info.get("precision", "float32")
        self.device = f"{info.get('device', '?')} at {self.url}"
        self.threshold = float(info.get("threshold", DEFAULT_THRESHOLD))
        self.learns = bool(info.get("learning"))
        self.npy_body = bool(info.get("predict_npy"))       # servers before it take JSON only
        self.model_version: int | None = info.get("model_version")     # of the last answer
        self._object_version: int | None = None     # the version that answered this object's first clicks
        if info.get("dextr"):
            raise RemoteError(f"the server at {self.url} runs a DEXTR model; the client takes IOG models")

    # --- the predictor's interface ---------------------------------------------------------------

    def predict(self, image, corners=None, inside=None, positive=(), negative=(), *, prompt: Prompt | None = None,
                threshold: float | None = None, channels: Sequence[int] | None = None,
                contrast_limits: Sequence[float] | None = None, postprocess: bool | None = None) -> Prediction:
        reader = _ImageReader.of(image, channels, contrast_limits)
        if prompt is None:
            if corners is None or inside is None:
                raise G.ClickError("a prompt needs two corner clicks and at least one inside click")
            prompt = Prompt.check(reader.shape, corners, inside, positive, negative)
        return self._predict_many(reader, [prompt.on(reader.shape)], threshold, postprocess)[0]

    def predict_batch(self, image, prompts: Sequence[Prompt | Mapping[str, Any]], *, batch_size: int | None = None,
                      threshold: float | None = None, channels: Sequence[int] | None = None,
                      contrast_limits: Sequence[float] | None = None,
                      postprocess: bool | None = None) -> list[Prediction]:
        reader = _ImageReader.of(image, channels, contrast_limits)
        checked = [p.on(reader.shape) if isinstance(p, Prompt) else Prompt.from_mapping(reader.shape, p)
                   for p in prompts]
        return self._predict_many(reader, checked, threshold, postprocess)

    def predict_extreme(self, *args, **kwargs):
        raise ValueError("a remote IOG model takes a box and an inside click, not extreme points")

    def clear_cache(self) -> None:
        """Nothing is cached here (the server keeps what it keeps)."""

    # --- a learning server ---------------------------------------------------------------------

    def learn(self, obj, key: str) -> dict:
        """Send a committed object (a :class:`~napari_iog.learning.pool.LearnedObject`) to the
        server's learner under ``key``; the answer says how many objects it holds."""
        clicks = {role: [list(map(float, p)) for p in obj.clicks.get(role) or ()]
                  for role in ("corners", "inside", "positive", "negative")}
        return self._call("POST", "/learn", {"key": key, "rgb": encode_array(obj.rgb),
                                             "mask": encode_mask(obj.mask), **clicks})

    def forget(self, key: str) -> dict:
        """Take an undone object out of the server's learner."""
        return self._call("POST", "/learn/forget", {"key": key})

    def learning_status(self) -> dict:
        """Where the server's learning stands: objects, the model's version, the learner's report."""
        return self._call("GET", "/learn")

    def save_learned(self) -> str:
        """Have the server save its newest learned model; the path on the server."""
        return self._call("POST", "/learn/save")["path"]

    # --- the wire -----------------------------------------------------------------------------

    def _predict_many(self, reader, prompts: Sequence[Prompt], threshold, postprocess) -> list[Prediction]:
        threshold = self.threshold if threshold is None else float(threshold)
        postprocess = self.postprocess if postprocess is None else bool(postprocess)
        objects, crops = [], []
        for prompt in prompts:
            crop = prompt.crop
            crops.append(np.clip(np.rint(reader.crop_rgb(crop)), 0, 255).astype(np.uint8))
            shift = np.array([crop.r0, crop.c0])
            objects.append({"corners": (np.array(prompt.corners) - shift).tolist(),
                            "inside": (np.array(prompt.inside) - shift).tolist(),
                            "positive": (np.array(prompt.positive).reshape(-1, 2) - shift).tolist(),
                            "negative": (np.array(prompt.negative).reshape(-1, 2) - shift).tolist()})
        corrects = len(prompts) == 1 and bool(len(prompts[0].positive) or len(prompts[0].negative))
        options = {"threshold": threshold, "probability": self.probability,
                   "model_version": self._object_version if corrects else None}
        if len(prompts) == 1 and self.npy_body:
            query = urllib.parse.urlencode({"prompt": json.dumps({**objects[0], **options})})
            call = ("POST", f"/predict_npy?{query}", None, npy_bytes(crops[0]))
        else:
            for item, crop in zip(objects, crops):
                item["crop"] = encode_array(crop)
            call = ("POST", "/predict_many", {"objects": objects, **options}, None)
        start = time.perf_counter()
        answer = self._call(*call)
        if "objects" not in answer:         # /predict_npy answers its one object
            answer = {**answer, "objects": [answer]}
        round_trip = time.perf_counter() - start
        self.model_version = answer.get("model_version")
        if len(prompts) == 1 and not corrects:
            self._object_version = self.model_version
        results = []
        for prompt, item in zip(prompts, answer["objects"]):
            shape = (prompt.crop.height, prompt.crop.width)
            if "probability" in item:
                probability = decode_array(item["probability"], MAX_ANSWER_BYTES).astype(np.float32)
            else:       # the mask: 1 above the threshold, 0 below, so the same pixels pass it here
                probability = decode_mask(item["mask"], shape).astype(np.float32)
            if probability.shape != shape:
                raise RemoteError(f"the server answered a {probability.shape} crop for a "
                                  f"{(prompt.crop.height, prompt.crop.width)} one")
            result = Prediction(probability, prompt.crop, prompt.box, reader.shape, threshold, prompt.clicks(),
                                postprocess=postprocess)
            result.timings = {"network": float(item.get("seconds", 0.0)), "round_trip": round_trip / len(prompts)}
            results.append(result)
        self.last_timings = {"network": float(answer.get("seconds", 0.0)), "round_trip": round_trip}
        self.last_server = answer.get("server")     # which server process (or replica) answered
        return results

    def _call(self, method: str, path: str, body: dict | None = None, raw: bytes | None = None) -> dict:
        """``body`` goes as JSON, ``raw`` as the body's bytes (``.npy``)."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:500]
            try:
                detail = json.loads(detail).get("detail", detail)
            except (ValueError, AttributeError):
                pass
            if err.code == 401:
                raise RemoteError(f"the server at {self.url} refused the token: give the one it printed at its "
                                  f"first start (token=..., or ${TOKEN_ENV})", err.code) from err
            raise RemoteError(f"the server at {self.url} answered {err.code}: {detail}", err.code) from err
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise RemoteError(f"the server at {self.url} cannot be reached ({reason}); nothing was changed: try "
                              "again when it is back, or choose a local model to go on without it") from err
