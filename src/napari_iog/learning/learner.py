"""Learning from the objects a user commits, while they annotate.

A :class:`Learner` keeps three copies of a network: the **base** it started from, the model
**in use** (what the annotator predicts with) and a **candidate** that trains on the pool's
learnable objects (AdamW, BatchNorm frozen, augmentation and simulated corrections as in
``napari-iog train``). :meth:`Learner.check` scores the candidate (halfway back to the base and
all it learned, offering the better, as a fine-tune chooses, or all of it while the base scores
below ``UNSEEN_BELOW`` there; or the share ``LearnSettings.blend`` says) and the model in use on
the newest committed objects,
which neither has learned from, and the candidate becomes the model in use only when it does
better there: the user's model never gets worse on those objects.

No threads or processes here (see :mod:`.background` for the annotator's learner process):
``train`` runs for a number of steps or seconds and returns, so a simulated session
(``napari-iog evaluate --learn``) and tests drive it step by step.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..evaluation.clicks import initial_clicks
from ..evaluation.metrics import iou
from ..models import IOGRefineNetwork
from ..training.config import (
    FINETUNE_BLEND,
    FINETUNE_COARSE_WEIGHT,
    FINETUNE_LR,
    KEEP_ALL_MARGIN,
    UNSEEN_LR,
    has_not_learnt,
)
from ..training.corrections import simulate_corrections
from ..training.data import InstanceDataset
from ..training.loop import batch_loss, blended_weights, freeze, set_train_mode
from .pool import LearnedObject, ObjectPool

#: the boundary band left out of the scores: this share of the object's size, at least BAND_MIN pixels
BAND_SHARE, BAND_MIN = 0.05, 2


@dataclass
class LearnSettings:
    """How the learner trains: ``napari-iog train``'s optimizer (AdamW, BatchNorm frozen) and
    simulated corrections, on small batches, at a constant rate (``unseen_lr`` while the base gets
    the newest objects wrong, ``lr`` otherwise). ``lr``, ``unseen_lr`` and
    ``coarse_weight`` are a fine-tune's (``training.config.FINETUNE_LR``, ``UNSEEN_LR``,
    ``FINETUNE_COARSE_WEIGHT``), chosen on 200-step runs; the simulated sessions of
    docs/benchmarks.md ("Learning while annotating") say what they do here."""

    lr: float = FINETUNE_LR["adamw"]
    #: the rate while the base scores below ``UNSEEN_BELOW`` on the held-out objects (a domain it has not
    #: learnt), as a fine-tune's (``training.config.UNSEEN_LR``); None: ``lr`` throughout
    unseen_lr: float | None = UNSEEN_LR
    #: the coarse outputs' weight in the loss (1: the published loss)
    coarse_weight: float = FINETUNE_COARSE_WEIGHT
    batch_size: int = 4
    correction_prob: float = 0.5
    correction_rounds: int = 3
    min_area: int = 16
    #: the candidate replaces the model in use when its mIoU@3 on the held-out objects is higher
    #: by more than this
    min_gain: float = 0.01
    #: objects to score on before any swap
    min_held_out: int = 4
    #: training time each committed object adds (the annotator's learner then waits)
    seconds_per_object: float = 5.0
    #: the share of what the candidate learned that a check scores and swaps in: base + blend x
    #: (trained - base), as a fine-tune saves (``TrainConfig.blend``); the candidate trains on unblended.
    #: None: each check scores halfway and all, and offers all where it is better by ``KEEP_ALL_MARGIN``.
    #: Choosing did as well as halfway where the default trained (CVPPP, ssTEM) and saved 1.6 clicks
    #: an object more on field plants it never saw (docs/benchmarks.md, "Learning while annotating")
    blend: float | None = None
    #: with ``blend`` None: offer all it learned, not halfway, while the base scores below ``UNSEEN_BELOW``
    #: (CWFID field plants: 7.2 clicks an object after 30, against 11.3 choosing, both at ``UNSEEN_LR``)
    keep_all_where_unseen: bool = True
    seed: int = 0


@dataclass
class LearnReport:
    """Where learning stands: what the model in use learned from and how it does on the
    held-out objects against the base model; ``swapped`` when this check replaced it."""

    objects: int                    # committed objects in the pool
    learned_from: int               # objects the model in use has learned from
    held_out: int                   # objects it was scored on (learned from by no model)
    base_miou: float | None
    in_use_miou: float | None
    candidate_miou: float | None
    swapped: bool
    steps: int                      # training steps so far
    version: int                    # how many times the model in use was replaced
    in_use_blend: float = 0.0       # the share of what the learner learned that the model in use keeps
    lr: float | None = None         # the rate the candidate trains at from this check on

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        if self.version and not self.learned_from:
            return f"back to the model you started with: it does better on your newest {self.held_out} objects"
        if self.version == 0:
            if self.steps == 0:
                return f"learning: {self.objects} object(s) kept, too few to learn from yet"
            return f"learning from {self.objects} objects: no better model yet"
        before, now = self.base_miou, self.in_use_miou
        figures = f": {before:.2f} -> {now:.2f} on your objects" if before is not None and now is not None else ""
        return f"learned from {self.learned_from} objects{figures}"


class Learner:
    """Fine-tunes a copy of ``model`` on committed objects (see the module's docstring)."""

    def __init__(self, model: nn.Module, settings: LearnSettings | None = None, device: str | torch.device = "cpu"):
        self.settings = settings or LearnSettings()
        self.device = torch.device(device)
        self.base = copy.deepcopy(model).float().to(self.device).eval()
        self.in_use = copy.deepcopy(self.base)
        self.candidate = copy.deepcopy(self.base).to(memory_format=torch.channels_last)   # 1.2x a step on a CPU
        self.refine = isinstance(self.candidate, IOGRefineNetwork)
        freeze(self.candidate, backbone=False, batchnorm=True)
        params = [p for p in self.candidate.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.settings.lr, weight_decay=1e-2)
        self.pool = ObjectPool(min_held_out=self.settings.min_held_out)
        self.steps = 0
        self.version = 0
        self.learned_from = 0
        self.in_use_blend = 0.0
        self._scores: dict[tuple[str, Hashable], float] = {}

    # --- the pool --------------------------------------------------------------------------------

    def add(self, obj: LearnedObject) -> None:
        self.pool.add(obj)

    def remove(self, key: Hashable) -> bool:
        """An undone commit leaves the pool (a model that learned from it keeps what it learned)."""
        return self.pool.remove(key)

    # --- training ----------------------------------------------------------------------------------

    def can_train(self) -> bool:
        return bool(self.pool.learnable())

    def train(self, steps: int | None = None, seconds: float | None = None,
              should_stop: Callable[[], bool] | None = None, clock: Callable[[], float] = time.perf_counter) -> int:
        """Train the candidate for ``steps`` steps or ``seconds`` (whichever is given; the step
        that passes the time limit finishes). Returns the steps done (0 when there is too little
        to learn from)."""
        if not self.can_train() or (steps is None and seconds is None):
            return 0
        objects = self.pool.learnable()
        for obj in objects:
            obj.trained = True
        dataset = InstanceDataset([o.pair() for o in objects], self.settings.min_area, augment=True, jitter=True,
                                  refine=self.refine, seed=self.settings.seed)
        if len(dataset) == 0:
            return 0
        done, start = 0, clock()
        while (steps is None or done < steps) and (seconds is None or clock() - start < seconds):
            if should_stop is not None and should_stop():
                break
            self._step(dataset)
            done += 1
        return done

    def _step(self, dataset: InstanceDataset) -> None:
        rng = np.random.default_rng([self.settings.seed, self.steps])
        dataset.set_epoch(self.steps)
        indices = rng.integers(len(dataset), size=self.settings.batch_size)
        batch = torch.utils.data.default_collate([dataset[int(i)] for i in indices])
        batch = {k: v.to(self.device) for k, v in batch.items()}
        model = self.candidate
        set_train_mode(model, freeze_bn=True)
        if rng.random() < self.settings.correction_prob:
            simulate_corrections(model, batch, rng, self.settings.correction_rounds)
        loss = batch_loss(model, batch, self.refine, self.settings.coarse_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        model.eval()
        self.steps += 1

    # --- the swap ------------------------------------------------------------------------------------

    def check(self) -> LearnReport:
        """Score the base, the model in use and the candidate on the held-out objects. The
        candidate replaces the model in use when it beats both it and the base by more than
        ``min_gain``; the base comes back when it beats the model in use so (a learned model
        that does worse than where the user started is dropped)."""
        held = self.pool.held_out()
        enough = len(held) >= self.pool.min_held_out
        base = self._miou("base", self.base, held)
        in_use = self._miou(f"in use {self.version}", self.in_use, held)
        unseen = enough and has_not_learnt(base)
        offered, candidate, share = self._best_offer(held, unseen) if self.steps and held else (None, None, None)
        gain = self.settings.min_gain
        swapped = False
        if enough and candidate is not None and candidate > max(in_use, base) + gain:
            self.in_use, in_use, self.in_use_blend = offered, candidate, share
            self.learned_from = sum(o.trained for o in self.pool.objects())
            swapped = True
        elif enough and self.learned_from and base > in_use + gain:
            self.in_use, in_use, self.in_use_blend = copy.deepcopy(self.base), base, 0.0
            self.learned_from = 0
            swapped = True
        if swapped:
            self.version += 1
        if enough:
            self._set_rate(unseen)
        return LearnReport(len(self.pool), self.learned_from, len(held), base, in_use, candidate, swapped,
                           self.steps, self.version, self.in_use_blend, self.optimizer.param_groups[0]["lr"])

    def _set_rate(self, unseen: bool) -> None:
        """A fine-tune's rate rule, on the newest objects: faster while the base has not learnt them."""
        fast = unseen and self.settings.unseen_lr is not None
        for group in self.optimizer.param_groups:
            group["lr"] = self.settings.unseen_lr if fast else self.settings.lr

    def _best_offer(self, held: list[LearnedObject], unseen: bool = False) -> tuple[nn.Module, float, float]:
        """The candidate as a check offers it, its score and the share of its change it keeps:
        ``blend``'s, or (``blend`` None) halfway unless all of it scores ``KEEP_ALL_MARGIN`` better
        (all of it on a domain the base has not learnt, with ``keep_all_where_unseen``)."""
        shares = (FINETUNE_BLEND, 1.0) if self.settings.blend is None else (self.settings.blend,)
        if unseen and self.settings.blend is None and self.settings.keep_all_where_unseen:
            shares = (1.0,)
        best = None
        for share in shares:
            offered = self._offered(share)
            score = self._miou(None, offered, held)
            if best is None or score >= best[1] + KEEP_ALL_MARGIN:
                best = (offered, score, share)
        return best

    def _offered(self, share: float) -> nn.Module:
        """A copy of the candidate blended back toward the base: base + share x (candidate - base)."""
        offered = copy.deepcopy(self.candidate).eval()
        if share != 1.0:
            offered.load_state_dict(blended_weights(self.base.state_dict(), self.candidate.state_dict(), share))
        return offered

    def in_use_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.in_use.state_dict().items()}

    def _miou(self, cache: str | None, model: nn.Module, objects: list[LearnedObject]) -> float | None:
        """mIoU@3 against each object's committed mask, from the user's first three clicks (the
        simulated user's on the mask where they are not known), of the cleaned mask the
        annotator shows, the band along the mask's edge left out (None without objects)."""
        if not objects:
            return None
        predictor = None
        scores = []
        for obj in objects:
            key = (cache, obj.key) if cache else None
            if key is None or key not in self._scores:
                if predictor is None:
                    predictor = _scoring_predictor(model, self.device)
                mask = _first_prediction(predictor, obj)
                score = iou(mask, obj.mask, boundary_band(obj.mask))
                if key is None:
                    scores.append(score)
                    continue
                self._scores[key] = score
            scores.append(self._scores[key])
        return float(np.mean(scores))


def _first_prediction(predictor, obj: LearnedObject) -> np.ndarray:
    """The mask from the user's first three clicks (the simulated user's where unknown or unusable)."""
    clicks = obj.clicks
    if clicks.get("corners") and clicks.get("inside"):
        try:
            return predictor.predict(obj.rgb, corners=clicks["corners"], inside=clicks["inside"][:1]).mask
        except ValueError:
            pass
    clicks = initial_clicks(obj.mask)
    return predictor.predict(obj.rgb, corners=clicks["corners"], inside=clicks["inside"]).mask


def boundary_band(mask: np.ndarray) -> np.ndarray:
    """The pixels near a committed mask's edge, left out of the scores: there the mask is the
    model in use's own output that the user let pass, which would favour that model."""
    width = max(BAND_MIN, int(round(BAND_SHARE * np.sqrt(mask.sum()))))
    return ndimage.binary_dilation(mask, iterations=width) & ~ndimage.binary_erosion(mask, iterations=width)


def _scoring_predictor(model: nn.Module, device: torch.device):
    from ..predictor import IOGPredictor

    return IOGPredictor(model, device=device, precision="float32", warmup=False, backend="torch", cache_size=0)


def why_cannot_learn(predictor) -> str | None:
    """Why ``predictor``'s model cannot learn from committed objects (None: it can)."""
    if predictor.is_dextr:
        return "DEXTR models do not learn here (IOG models do)"
    network = getattr(predictor, "network", None)
    if not (hasattr(network, "backbone") and hasattr(network, "Coarse_net")):     # what training's pieces need
        return "this model cannot learn here (IOG networks can)"
    return None

