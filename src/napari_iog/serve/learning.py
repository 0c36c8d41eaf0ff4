"""Learning on the server (``napari-iog serve --learn``): the objects every annotator of a
project commits teach one copy of the server's model, in a low-priority learner process on the
server's device (:class:`~napari_iog.learning.background.BackgroundLearner`, the annotator's own
learner); a model that does better on the newest objects becomes the server's next version.

A model never changes under an object: the newest version answers an object's first clicks, and
its corrections name that version (the client does so), which answers them while the server
keeps it (the last ``KEPT_VERSIONS``). Nothing here touches a client's labels: an object reaches
the learner only when a client sends it, and an undo sends its key back (``/learn/forget``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field

from ..learning.background import BackgroundLearner, LearnedWeights
from ..learning.learned import learned_card, learned_model_path, learned_predictor
from ..learning.learner import LearnReport, LearnSettings, why_cannot_learn
from ..learning.pool import LearnedObject
from ..models import save_model
from ..remote_codec import BadArray, decode_mask

#: versions of the model a server keeps answering corrections with
KEPT_VERSIONS = 3
#: how often the server looks for a better model from its learner (s)
POLL_SECONDS = 0.5

Point = list[Annotated[float, Field(allow_inf_nan=False)]]


class ModelVersions:
    """The server's predictors by version (0: the model it started with)."""

    def __init__(self, predictor):
        self._lock = threading.Lock()
        self._versions: OrderedDict[int, Any] = OrderedDict([(0, predictor)])
        self.newest = 0

    def get(self, version: int | None = None) -> tuple[int, Any]:
        """``version``'s predictor while it is kept, else the newest."""
        with self._lock:
            if version is not None and version in self._versions:
                return version, self._versions[version]
            return self.newest, self._versions[self.newest]

    def add(self, version: int, predictor) -> None:
        with self._lock:
            self._versions[version] = predictor
            self.newest = version
            while len(self._versions) > KEPT_VERSIONS:
                self._versions.popitem(last=False)


class ServerLearning:
    """The server's learner over ``predictor``'s model (see the module). ``learner_factory(network,
    settings)``: another learner with :class:`BackgroundLearner`'s interface (tests)."""

    def __init__(self, predictor, settings: LearnSettings | None = None, device: str | None = None,
                 learner_factory=None, poll_seconds: float = POLL_SECONDS):
        reason = why_cannot_learn(predictor)
        if reason is not None:
            raise ValueError(f"the server's model cannot learn: {reason}")
        self.base, self.models = predictor, ModelVersions(predictor)
        self.settings = settings or LearnSettings()
        self.base_name = str(predictor.card.get("name") or predictor.arch)
        if learner_factory is None:
            self.learner = BackgroundLearner(predictor.network, self.settings, device=str(device or predictor.device))
        else:
            self.learner = learner_factory(predictor.network, self.settings)
        self.keys: set[str] = set()
        self.in_use: LearnReport | None = None      # the report of the swap that gave the newest version
        self.report: LearnReport | None = None      # the learner's newest, once what it says is in use
        self.error: str | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._poll_seconds = poll_seconds
        self._watch = threading.Thread(target=self._watch_learner, daemon=True, name="napari-iog server learner")
        self._watch.start()

    def add(self, obj: LearnedObject) -> int:
        with self._lock:
            self.learner.add(obj)
            self.keys.add(obj.key)
            return len(self.keys)

    def remove(self, key: str) -> bool:
        with self._lock:
            if key not in self.keys:
                return False
            self.learner.remove(key)
            self.keys.discard(key)
            return True

    def status(self) -> dict[str, Any]:
        report = self.report
        text = report.text() if report is not None else f"{len(self.keys)} object(s) kept, the learner is starting"
        return {"objects": len(self.keys), "model_version": self.models.newest, "error": self.error, "text": text,
                "report": report.to_dict() if report is not None else None}

    def save(self, path: str | Path | None = None) -> Path:
        """Write the newest learned model (weights + card) to ``path``, by default to this
        machine's fine-tuned folder, where ``--model`` and both model lists find it."""
        with self._lock:
            report, (_, predictor) = self.in_use, self.models.get()
        if report is None:
            raise ValueError("nothing learned yet: the learner puts a model in use once it does better on the "
                             "newest objects")
        path = learned_model_path(self.base_name) if path is None else Path(path)
        return save_model(predictor.network, path, learned_card(self.base_name, self.base.card, report, self.settings))

    def close(self) -> None:
        self._closing.set()
        self._watch.join(10)
        self.learner.close()

    def _watch_learner(self) -> None:
        while not self._closing.wait(self._poll_seconds):
            try:
                weights = self.learner.poll()
            except RuntimeError as error:       # the learner stopped: the server goes on with its models
                self.error = str(error)
                return
            if weights is not None:
                self._apply(weights)
            self.report = self.learner.report

    def _apply(self, weights: LearnedWeights) -> None:
        if weights.report.learned_from:
            predictor, report = learned_predictor(self.base, weights.state, weights.report), weights.report
        else:                                   # the learner went back to the model the server started with
            predictor, report = self.base, None
        with self._lock:
            self.models.add(weights.version, predictor)
            self.in_use = report


class LearnRequest(BaseModel):
    key: str = Field(min_length=1, max_length=200, description="the client's name for the object (its undo "
                                                                 "sends the same key to /learn/forget)")
    rgb: str = Field(description="the object's region, RGB uint8 (rows, cols, 3), as a zlib-compressed .npy "
                                 "in base64")
    mask: str = Field(description="the committed mask in the region: numpy packbits, zlib, base64")
    corners: list[Point] = Field(default_factory=list, description="the two corner clicks (row, col) in the "
                                 "region, or none (the learner then clicks as the simulated user)")
    inside: list[Point] = Field(default_factory=list)
    positive: list[Point] = Field(default_factory=list)
    negative: list[Point] = Field(default_factory=list)


class ForgetRequest(BaseModel):
    key: str = Field(min_length=1, max_length=200)


def add_learning_routes(app: FastAPI, learning: ServerLearning | None, authorised, limits, read_rgb) -> None:
    """``/learn`` (GET: where learning stands; POST: a committed object), ``/learn/forget`` (an
    undone commit), ``/learn/save``; a server started without ``--learn`` answers 409.
    ``read_rgb(text, limits, what)``: the app's checked decoding of an RGB array."""

    def learner() -> ServerLearning:
        if learning is None:
            raise HTTPException(409, "this server does not learn: start it with napari-iog serve --learn")
        return learning

    @app.get("/learn", dependencies=[Depends(authorised)])
    def learn_status() -> dict:
        return learner().status()

    @app.post("/learn", dependencies=[Depends(authorised)])
    def learn(item: LearnRequest) -> dict:
        server = learner()
        rgb = read_rgb(item.rgb, limits, "the region")
        try:
            mask = decode_mask(item.mask, rgb.shape[:2])
        except BadArray as err:
            raise HTTPException(422, f"the mask is {err}") from err
        if not mask.any():
            raise HTTPException(422, "the mask has no pixel: nothing to learn from")
        _check_clicks(item, rgb.shape[:2], limits.max_clicks)
        clicks = {"corners": item.corners, "inside": item.inside, "positive": item.positive,
                  "negative": item.negative} if item.corners else {}
        objects = server.add(LearnedObject(item.key, rgb, mask, {k: [tuple(p) for p in v] for k, v in clicks.items()}))
        return {"objects": objects, "model_version": server.models.newest}

    @app.post("/learn/forget", dependencies=[Depends(authorised)])
    def forget(item: ForgetRequest) -> dict:
        server = learner()
        return {"removed": server.remove(item.key), "objects": len(server.keys)}

    @app.post("/learn/save", dependencies=[Depends(authorised)])
    def save() -> dict:
        try:
            return {"path": str(learner().save())}
        except ValueError as err:
            raise HTTPException(409, str(err)) from err


def _check_clicks(item: LearnRequest, shape: tuple[int, int], max_clicks: int) -> None:
    """The clicks that made a committed object, in its region's pixels: none (a redone commit; the
    learner then clicks as the simulated user) or two corners and inside clicks, which may lie
    outside the region (it is the object's extent, grown), never far outside."""
    if (len(item.corners), bool(item.inside)) not in ((2, True), (0, False)):
        raise HTTPException(422, "the clicks: two corners and at least one inside click, or no clicks")
    if len(item.inside) + len(item.positive) + len(item.negative) > max_clicks + 1:
        raise HTTPException(422, f"the clicks: more than {max_clicks} correction clicks")
    reach = 2 * max(shape)
    for role in ("corners", "inside", "positive", "negative"):
        for point in getattr(item, role):
            if len(point) != 2 or not all(-reach <= v <= 2 * reach for v in point):
                raise HTTPException(422, f"the clicks: {role} {point} is not a (row, col) near the "
                                         f"{shape[0]} x {shape[1]} region")
