"""Learning while annotating, for one :class:`~napari_iog._napari.annotator.Annotator` (no Qt
imported here: a script on a ``ViewerModel`` can learn too).

Each committed object (its image region, the mask written, the clicks) goes to a
:class:`~napari_iog.learning.background.BackgroundLearner`; an undone commit leaves it. A better
model from the learner is put in use between objects, never while one is being clicked; the
learner never writes a label. :meth:`AnnotatorLearning.save` writes the model in use with a card
where both model lists find it.
"""

from __future__ import annotations

import weakref
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from psygnal import Signal

from .. import geometry as G
from ..labels import plane_of
from ..learning.background import BackgroundLearner, LearnedWeights
from ..learning.learned import learned_card, learned_model_path, learned_predictor
from ..learning.learner import LearnReport, LearnSettings, why_cannot_learn
from ..learning.pool import learned_object
from ..models import save_model
from ..predictor import IOGPredictor, read_crop_rgb
from ..remote_learning import RemoteLearner
from .workers import qt_app_running

#: how often the annotator looks for news from its learner (ms)
POLL_MS = 500


def why_not_learn(predictor: Any) -> str | None:
    """Why this predictor's model cannot learn here (None: it can)."""
    if getattr(predictor, "backend", None) == "remote":
        return None if predictor.learns else ("this server does not learn: start it with napari-iog serve --learn "
                                               "to have your objects teach its model")
    if not isinstance(predictor, IOGPredictor):
        return "learning needs a model on this computer"
    return why_cannot_learn(predictor)


class AnnotatorLearning:
    """The annotator's learner: started with :meth:`start`, stopped with :meth:`stop` (the model
    in use stays); ``status_changed`` says where learning stands."""

    status_changed = Signal(str)

    def __init__(self, annotator, settings: LearnSettings | None = None, base_name: str | None = None,
                 learner_factory=None):
        self.annotator = annotator
        self.settings = settings or LearnSettings()
        self.base_name = base_name
        self.learner_factory = learner_factory or BackgroundLearner
        self.on = False
        self.learner: BackgroundLearner | None = None
        self.base: IOGPredictor | None = None
        self.pending: LearnedWeights | None = None
        self.in_use: LearnReport | None = None        # the report of the swap that gave the model in use
        self._given: IOGPredictor | None = None       # the learned predictor handed to the annotator
        self._timer = None
        self._sent: dict[int, tuple[tuple[int, ...], dict]] = {}    # id -> (plane, clicks) in the learner's pool
        self._painted: set[int] = set()
        annotator.commits_changed.connect(self._on_commits)
        annotator.labels_layer.events.paint.connect(self._on_paint)

    def start(self) -> str | None:
        """Learn from the next commits on, starting from the model in use; returns why not, or
        None. (The learner's process starts at the first commit.)"""
        reason = why_not_learn(self.annotator.predictor)
        if reason is not None:
            self.status_changed.emit(reason)
            return reason
        self.stop()
        self.on, self.base = True, self.annotator.predictor
        self.status_changed.emit("learning: each committed object teaches a copy of the model")
        return None

    def _start_learner(self) -> None:
        if getattr(self.base, "backend", None) == "remote":        # the server learns, from every annotator
            self.learner = RemoteLearner(self.base)
        else:
            self.learner = self.learner_factory(self.base.network, self.settings)
        self._closer = weakref.finalize(self, self.learner.close)      # a dock dropped unclosed
        if qt_app_running():
            from qtpy.QtCore import QTimer

            self._timer = QTimer()
            self._timer.timeout.connect(self.poll)
            self._timer.start(POLL_MS)

    def stop(self) -> None:
        """No more learning; the model in use stays."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self.learner is not None:
            self._closer()
        self.on, self.learner, self.pending = False, None, None

    def _on_commits(self, verb: str, label_id: int, clicks) -> None:
        if not self.on:
            return
        if self.annotator.predictor not in (self.base, self._given):   # the user chose another model
            if self.start() is not None:
                return
        if self.learner is None:
            self._start_learner()
        last = self.annotator.session.last_commit
        if verb in ("committed", "redid") and last is not None and last[0] == label_id:
            clicks = {k: v for k, v in (clicks or {}).items() if k in ("corners", "inside", "positive", "negative")}
            self._send(label_id, last[1], clicks, last[2])
        else:
            self._sent.pop(label_id, None)
            self.learner.remove(label_id)
        self.poll()

    def _on_paint(self, event) -> None:
        """Brush or fill fixes to committed objects reach the learner: it learns from the labels
        as they are now."""
        if self.learner is None or not self._sent:
            return
        touched: set[int] = set()
        for atom in event.value:        # (indices, old values, new) or napari's masked atom: the same last two
            touched.update(np.unique(np.asarray(atom[-2])).tolist())
            touched.update(np.unique(np.asarray(atom[-1])).tolist())
        self._painted |= touched & set(self._sent)     # read at the next poll: napari writes after it tells

    def _send_painted(self) -> None:
        for label_id in self._painted & set(self._sent):
            plane, clicks = self._sent[label_id]
            if not self._send(label_id, plane, clicks):
                self._sent.pop(label_id)
                self.learner.remove(label_id)           # painted away
        self._painted.clear()

    def _send(self, label_id: int, plane: tuple[int, ...], clicks: dict, within: G.Box | None = None) -> bool:
        """The object as the labels hold it now (in ``within``, else anywhere in its plane), to
        the learner; False when it has no pixel left."""
        session = self.annotator.session
        labels = plane_of(self.annotator.labels_layer.data, plane)
        within = (within or G.Box(0, 0, *[n - 1 for n in session.plane_shape])).clip(session.plane_shape)
        found = G.mask_box(np.asarray(labels[within.slices()]) == label_id)
        if found is None:
            return False
        window = G.Box(found.r0 + within.r0, found.c0 + within.c0, found.r1 + within.r0, found.c1 + within.c0)
        where = np.asarray(labels[window.slices()]) == label_id
        image = plane_of(session.image, plane)
        options = session.predict_options
        obj = learned_object(label_id, lambda region: read_crop_rgb(image, region, options.get("channels"),
                                                                    options.get("contrast_limits")),
                             session.plane_shape, window, where, clicks)
        self._sent[label_id] = (plane, clicks)
        self.learner.add(obj)
        return True

    def poll(self, timeout: float = 0.0) -> LearnReport | None:
        """Take the learner's news; a better model is put in use now if no object is in progress."""
        if self.learner is None:
            return None
        self._send_painted()
        try:
            weights = self.learner.poll(timeout)
        except RuntimeError as error:
            self.stop()
            self.annotator.notify(f"{error}; annotating goes on with the model in use", error=True)
            return None
        if weights is not None:
            self.pending = weights
        self._apply()
        report = self.learner.report
        if report is not None:
            if isinstance(self.learner, RemoteLearner) and report.learned_from:
                self.in_use = report            # the server's model learned: it can save it
            self.status_changed.emit(report.text())
        return report

    def _apply(self) -> None:
        if self.pending is None or self.annotator.session.clicks:
            return
        weights, self.pending = self.pending, None
        if not weights.report.learned_from:        # the learner went back to the model you started with
            self.in_use = self._given = None
            self.annotator.use_predictor(self.base)
            return
        self._given = learned_predictor(self.base, weights.state, weights.report)
        self.in_use = weights.report
        self.annotator.use_predictor(self._given)

    def save(self, path: str | Path | None = None) -> Path:
        """Write the learned model in use (weights + card: base, objects, figures) to ``path``,
        by default to the cache's fine-tuned folder, where both model lists find it. A server's
        learned model is saved on the server (its path there is returned)."""
        if isinstance(self.learner, RemoteLearner) and self.in_use is not None:
            return PurePosixPath(self.learner.save())
        if self.in_use is None or self._given is None:
            raise ValueError("nothing learned yet: the learner puts a model in use once it does better on "
                             "your newest objects")
        base = self.base_name or self.base.card.get("name") or self.base.arch
        path = learned_model_path(base) if path is None else path
        card = learned_card(base, self.base.card, self.in_use, self.settings)
        return save_model(self._given.network, Path(path), card)
