"""Random annotation sessions in a real napari viewer, with invariants checked after every step.

A person's day, compressed: clicks by role (real mouse events on the canvas, Shift for
negative corrections), key presses (Enter, U, Escape, N), the dock's buttons, switching the
selected layer, changing the slice of a stack and turning overwrite on and off, against a
stand-in network slowed by a random delay so that predictions overlap the clicks. After each
step (:func:`check`):

* the labels changed only by a commit or an undo: a commit wrote one fresh id (larger than
  every id present) into pixels that were background unless overwrite was on; an undo
  restored the labels exactly as they were before the commit it takes back;
* once the predictions are idle, the object drawn is the prediction of the clicks as they
  are now (never a stale one);
* no error was notified (problems with a click are warnings, and expected).

Used by tests/test_gui_stress.py (a short run) and benchmarks/gui_stress.py (>= 1000 steps).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
from conftest import ThresholdPredictor
from gui_input import mouse_click, press_key, show_all, world_of
from qtpy.QtWidgets import QApplication

OPERATIONS = ("object", "corner", "inside", "positive", "negative", "enter", "u", "escape", "n", "commit_button",
              "undo_button", "select_image", "reselect_clicks", "slice", "overwrite", "idle")


class SlowThreshold(ThresholdPredictor):
    """The bright region at the inside click, with a disc (radius 3) added at each positive
    and removed at each negative click, so that every click changes the mask; after a random
    delay (0-40 ms), so that predictions finish out of step with the clicks."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.random = random.Random(seed)

    def predict(self, image, *args, prompt=None, **kwargs):
        time.sleep(self.random.uniform(0, 0.04))
        result = super().predict(image, *args, prompt=prompt, **kwargs)
        if prompt is not None:
            crop, probability = result.crop_box, result.crop_probability
            rows, cols = np.ogrid[crop.r0:crop.r1 + 1, crop.c0:crop.c1 + 1]
            for points, value in ((prompt.positive, 1.0), (prompt.negative, 0.0)):
                for r, c in points:
                    probability[(rows - r) ** 2 + (cols - c) ** 2 <= 9] = value
        return result


def stack_scene(planes: int = 3, height: int = 96, width: int = 128, seed: int = 0):
    """Bright rectangles of several sizes on each plane of a dark stack, and where they are:
    ``(image, {plane: [(r0, c0, r1, c1), ...]})``."""
    rng = np.random.default_rng(seed)
    image = np.full((planes, height, width), 30, np.uint8)
    boxes: dict[int, list[tuple[int, int, int, int]]] = {}
    for z in range(planes):
        for _ in range(6):
            h, w = rng.integers(8, 30, 2)
            r, c = rng.integers(0, height - h), rng.integers(0, width - w)
            image[z, r:r + h, c:c + w] = 220
            boxes.setdefault(z, []).append((int(r), int(c), int(r + h - 1), int(c + w - 1)))
    return image, boxes


@dataclass
class StressReport:
    steps: int = 0
    operations: dict[str, int] = field(default_factory=dict)
    commits: int = 0
    undone_commits: int = 0
    warnings: int = 0
    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Stress:
    """One random session on ``widget`` (the IOG annotator dock, started on a stack)."""

    def __init__(self, viewer, widget, boxes, seed: int = 0):
        self.viewer, self.widget, self.ann, self.boxes = viewer, widget, widget.annotator, boxes
        self.random = random.Random(seed)
        self.report = StressReport()
        self.commits: list[tuple[int, np.ndarray]] = []     # (id, labels before it) for undo
        self.ann.notified.connect(self._notified)
        from napari.utils.notifications import NotificationSeverity, notification_manager

        self._manager, self._error_level = notification_manager, NotificationSeverity.ERROR
        self._seen = len(notification_manager.records)

    def _notified(self, message: str) -> None:
        self.report.warnings += 1

    def labels(self) -> np.ndarray:
        return np.array(self.ann.labels_layer.data)

    def random_pixel(self, inside_box: bool = False) -> tuple[int, int]:
        s = self.ann.session
        h, w = s.plane_shape
        corners = s.points("corner")
        if inside_box and len(corners) == 2:
            (r0, r1), (c0, c1) = sorted(p[0] for p in corners), sorted(p[1] for p in corners)
            return self.random.randint(int(r0), int(r1)), self.random.randint(int(c0), int(c1))
        return self.random.randint(0, h - 1), self.random.randint(0, w - 1)

    def click(self, pixel, negative: bool = False) -> None:
        plane = self.ann.coordinates.current_plane()
        world = world_of(self.ann.image_layer, (*plane, *pixel))
        mouse_click(self.viewer, world, ("Shift",) if negative else ())

    def step(self, operation: str) -> None:
        ann, viewer = self.ann, self.viewer
        if operation == "object":       # as a person does: a box around a bright rectangle, a click inside
            viewer.layers.selection.active = ann.clicks_layer
            if ann.session.clicks:
                press_key(viewer, "Escape")
            plane = ann.coordinates.current_plane()
            r0, c0, r1, c1 = self.random.choice(self.boxes[plane[0]])
            h, w = ann.session.plane_shape
            for pixel in ((max(r0 - 3, 0), max(c0 - 3, 0)), (min(r1 + 3, h - 1), min(c1 + 3, w - 1)),
                          ((r0 + r1) // 2, (c0 + c1) // 2)):
                self.click(pixel)
        elif operation in ("corner", "inside", "positive", "negative"):
            viewer.layers.selection.active = ann.clicks_layer
            self.click(self.random_pixel(inside_box=operation != "corner"), negative=operation == "negative")
        elif operation in ("enter", "u", "escape", "n"):
            viewer.layers.selection.active = ann.clicks_layer
            press_key(viewer, {"enter": "Enter", "u": "U", "escape": "Escape", "n": "N"}[operation])
        elif operation == "commit_button":
            self.widget.commit_button.clicked.emit()
        elif operation == "undo_button":
            self.widget.undo_button.clicked.emit()
        elif operation == "select_image":
            viewer.layers.selection.active = ann.image_layer
        elif operation == "reselect_clicks":
            viewer.layers.selection.active = ann.clicks_layer
        elif operation == "slice":
            viewer.dims.set_current_step(0, self.random.randrange(ann.spatial_shape[0]))
        elif operation == "overwrite":
            self.widget.overwrite.value = not self.widget.overwrite.value
        elif operation == "idle":
            ann.wait()
        QApplication.processEvents()

    def run(self, steps: int, weights: dict[str, float] | None = None) -> StressReport:
        weights = weights or {"object": 8, "corner": 3, "inside": 2, "positive": 3, "negative": 3, "enter": 6, "u": 2,
                              "escape": 1, "n": 1, "commit_button": 1, "undo_button": 1, "select_image": 1,
                              "reselect_clicks": 1, "slice": 1, "overwrite": 1, "idle": 3}
        names, odds = list(weights), list(weights.values())
        start = time.perf_counter()
        for _ in range(steps):
            operation = self.random.choices(names, odds)[0]
            before, overwrite = self.labels(), self.ann.overwrite
            s = self.ann.session
            context = {"overwrite": overwrite, "prompt": s.prompt, "plane": s.plane,
                       "undoes_commit": operation in ("u", "undo_button") and not s.clicks and bool(self.commits)}
            self.step(operation)
            self.check(operation, before, context)
            self.report.steps += 1
            self.report.operations[operation] = self.report.operations.get(operation, 0) + 1
        self.ann.wait()
        self.report.seconds = time.perf_counter() - start
        return self.report

    def check(self, operation: str, before: np.ndarray, context: dict) -> None:
        after, overwrite = self.labels(), context["overwrite"]
        step = f"step {self.report.steps} ({operation})"
        if context["undoes_commit"] and not np.array_equal(after, self.commits[-1][1]):
            self.report.violations.append(f"{step}: undo did not restore the labels of before the last commit")
            self.commits.pop()
        elif not np.array_equal(before, after):
            new_ids = set(np.unique(after[after != before])) - {0}
            if self.commits and np.array_equal(after, self.commits[-1][1]):
                self.commits.pop()
                self.report.undone_commits += 1
            elif len(new_ids) == 1:
                label_id = int(new_ids.pop())
                changed = after != before
                if label_id <= int(before.max()):
                    self.report.violations.append(f"{step}: id {label_id} is not fresh (max was {before.max()})")
                if not (after[changed] == label_id).all():
                    self.report.violations.append(f"{step}: a commit wrote more than its id")
                if not overwrite and (before[changed] != 0).any():
                    self.report.violations.append(f"{step}: a commit changed another object's pixels")
                if not self._written_is_prediction(changed, before, context):
                    self.report.violations.append(f"{step}: a commit wrote another mask than that of the clicks")
                self.commits.append((label_id, before))
                self.report.commits += 1
            else:
                self.report.violations.append(f"{step}: the labels changed without a commit or an undo")
        if operation == "idle":
            self._check_prediction_is_current(step)
        for record in self._manager.records[self._seen:]:
            if record.severity >= self._error_level:
                self.report.errors.append(f"{step}: {record.message}")
        self._seen = len(self._manager.records)

    def _written_is_prediction(self, changed: np.ndarray, before: np.ndarray, context: dict) -> bool:
        """The pixels a commit wrote are the prediction of the clicks it was made with (under
        the preserve rule), never a stale one."""
        s, prompt, plane = self.ann.session, context["prompt"], context["plane"]
        if prompt is None:
            return False
        fresh = s.predictor.predict(np.asarray(s.image[plane]), prompt=prompt)
        expected = np.zeros(before.shape, bool)
        expected[(*plane, *fresh.window.slices())] = fresh.window_mask()
        if not context["overwrite"]:
            expected &= before == 0
        return np.array_equal(changed, expected)

    def _check_prediction_is_current(self, step: str) -> None:
        s, preview = self.ann.session, self.ann.preview_layer
        if not s.ready:
            if preview.visible:
                self.report.violations.append(f"{step}: an object is drawn without enough clicks")
            return
        if not s.up_to_date or s.current is None:
            self.report.violations.append(f"{step}: idle, but the prediction is not that of the clicks")
            return
        fresh = s.predictor.predict(np.asarray(s.image[s.plane]), prompt=s.prompt)
        if not np.array_equal(fresh.window_mask(), s.current.window_mask()):
            self.report.violations.append(f"{step}: the object drawn is not the prediction of the clicks")
        drawn = np.asarray(preview.data).reshape(s.current.window_mask().shape).astype(bool)
        if preview.visible and not np.array_equal(drawn, s.current.window_mask()):
            self.report.violations.append(f"{step}: the outline shows another mask than the prediction")


def start_stress(viewer, seed: int = 0, planes: int = 3):
    """A shown viewer with a stack, the IOG annotator dock started with the slow stand-in."""
    image, boxes = stack_scene(planes, seed=seed)
    layer = viewer.add_image(image, name="stack")
    show_all(viewer)
    _, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
    widget.image.value = layer.name
    widget.start(SlowThreshold(seed))
    return Stress(viewer, widget, boxes, seed)
