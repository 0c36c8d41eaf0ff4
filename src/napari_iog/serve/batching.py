"""Dynamic batching: objects that arrive together, from several annotators, go through the
network in one forward pass. Each request thread prepares its object's input and waits; one
thread gathers what has arrived (up to ``max_batch`` objects), runs the batch and hands each its
crop's probability. It waits up to ``window_s`` for more only while another request is being
prepared: a lone annotator's click never waits for company that is not coming, and requests that
arrive during a forward pass are batched in the next one.

On a CPU the server runs ``lanes`` forward passes at once, one object each, on a share of the
cores (``cpu_parallelism``): one object on one core costs no more than one of a batch (36 ms an
object at batch 1, 2 or 4 for the default, ONNX Runtime, AMD EPYC Zen 4), and a pass split over
both cores waits at every layer for a thread that request handling has taken the core from (a
server with one 2-thread lane answered 22.5 clicks/s at saturation, two 1-thread lanes 38).

It drives the predictor's steps (``_prepare``, ``_forward``, ``_to_crop``: what
``IOGPredictor.predict`` does for one object) so that inputs of different images share a
batch; each object goes through the predictor (the version of the server's model) it names, and
a batch holds the objects of one predictor. Refinement networks, whose corrections reuse an
object's cached features, go one by one through ``predict``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..correction_maps import complete_inputs, correction_sizes, remember_first_masks
from ..predictor import _ImageReader
from ..prompt import Prompt


@dataclass
class _Job:
    predictor: Any
    item: Any                       # the predictor's NetworkInput
    prompt: Prompt
    done: threading.Event = field(default_factory=threading.Event)
    probability: np.ndarray | None = None
    error: BaseException | None = None


class Batcher:
    def __init__(self, predictor, max_batch: int = 16, window_s: float = 0.004, lanes: int = 1):
        self.predictor, self.max_batch, self.window_s = predictor, max_batch, window_s
        self.jobs: queue.Queue[_Job] = queue.Queue()
        self.batches: list[int] = []          # the size of each batch run (for the benchmark)
        self._preparing = 0                    # requests between arrival and queueing their objects
        self._count_lock = threading.Lock()
        self._maps_lock = threading.Lock()     # the predictors' first masks, for networks that read corrections
        for lane in range(lanes):
            threading.Thread(target=self._run, daemon=True, name=f"napari-iog batcher {lane}").start()

    def probabilities(self, objects: list[tuple[np.ndarray, Prompt]], timeout: float = 120.0,
                      predictor=None) -> list[np.ndarray]:
        """Each crop's probability for its prompt (checked against the crop already), from
        ``predictor`` (default: the one the batcher was made with); the objects of one request
        are queued together, so they can share a batch."""
        predictor = predictor or self.predictor
        jobs = []
        self._arriving(+1)
        try:
            for crop, prompt in objects:
                item = predictor._prepare(_ImageReader.of(crop, None, None), prompt)
                if predictor.takes_correction_maps:     # as predict does: the maps, from the object's first mask
                    with self._maps_lock:
                        complete_inputs([item], predictor._first_masks, predictor._forward, 1)
                jobs.append(_Job(predictor, item, prompt))
                self.jobs.put(jobs[-1])
        finally:
            self._arriving(-1)
        for job in jobs:
            if not job.done.wait(timeout):
                raise TimeoutError("the network did not answer in time")
            if job.error is not None:
                raise job.error
        return [job.probability for job in jobs]

    def _arriving(self, change: int) -> None:
        with self._count_lock:
            self._preparing += change

    def _run(self) -> None:
        while True:
            jobs = [self.jobs.get()]
            deadline = time.perf_counter() + self.window_s
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self.jobs.get_nowait())
                    continue
                except queue.Empty:
                    pass
                left = deadline - time.perf_counter()
                if self._preparing == 0 or left <= 0:
                    break
                try:
                    jobs.append(self.jobs.get(timeout=left))
                except queue.Empty:
                    break
            groups: dict[int, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(id(job.predictor), []).append(job)
            for group in groups.values():
                self._run_batch(group)

    def _run_batch(self, jobs: list[_Job]) -> None:
        self.batches.append(len(jobs))
        predictor = jobs[0].predictor
        try:
            sizes = correction_sizes(predictor.network, [job.prompt.crop for job in jobs])
            logits = predictor._forward(torch.stack([job.item.x for job in jobs]), **sizes)
            if predictor.takes_correction_maps:
                with self._maps_lock:
                    remember_first_masks([job.item for job in jobs], logits, predictor._first_masks)
            for job, logit in zip(jobs, logits):
                job.probability = predictor._to_crop(logit, job.prompt.crop)
        except BaseException as err:    # every waiting request hears of it; the thread goes on
            for job in jobs:
                job.error = err
        for job in jobs:
            job.done.set()


def cpu_parallelism(lanes: int | None = None, cores: int | None = None) -> tuple[int, int]:
    """(lanes, threads of each) for a server on this CPU: by default a lane per core, at most 4
    (past that a lane's pass gets several threads, so a heavy network still answers one click
    quickly)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    lanes = max(1, min(cores, 4) if lanes is None else int(lanes))
    return lanes, max(1, cores // lanes)
