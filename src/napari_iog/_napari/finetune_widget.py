"""The "IOG fine-tune" dock widget: adapt a model to the objects annotated so far.

Training runs in a separate process (``training_process``). The layers are read, never
written: their labelled planes are exported to a temporary folder that the process reads.
"""

from __future__ import annotations

import datetime
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, PushButton, SpinBox
from napari.layers import Image, Labels
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning

from .. import zoo
from ..models import ARCHITECTURES
from ..models.checkpoint import state_path
from ..training import events
from ..training.config import FINETUNE_LR, UNSEEN_BELOW, UNSEEN_LR, TrainConfig
from .annotator_widget import open_annotator_widget
from .layers import image_layer_names, labels_layer_names
from .layout import available_devices, make_compact, share_dock, wrap_text
from .loss_plot import LossPlot
from .model_choice import FROM_FILE, present_model_choices
from .training_process import TrainingProcess

FROM_FOLDERS = "(the folders below)"
USE_TEXT = "Use the new model in the annotator"


def count_objects(labels_layer: Labels) -> int | None:
    """Distinct non-zero ids of a labels layer; None for sparse or lazy layers (not scanned)."""
    data = labels_layer.data[0] if labels_layer.multiscale else labels_layer.data
    if not isinstance(data, np.ndarray):
        return None
    return int(np.count_nonzero(np.unique(data)))


#: Folder names that say nothing of the data: the folder above them names it instead.
GENERIC_FOLDERS = {"images", "image", "imgs", "img", "raw", "data", "train"}


def default_output(base: str, data: str | Path) -> Path:
    """``<base model>-<data>-<date>.pt`` in the cache's fine-tuned folder, where both model
    lists find it: the data is an image layer's name or an image folder (``cvppp/images``
    names ``cvppp``)."""
    if isinstance(data, Path):
        data = data.parent.name if data.name.lower() in GENERIC_FOLDERS and data.parent.name else data.name
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return zoo.finetuned_dir() / f"{_safe(Path(base).stem)}-{_safe(str(data))}-{stamp}.pt"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "image"


def export_layers(image_layer: Image, labels_layer: Labels, folder: Path) -> int:
    """The labelled planes of the layers as images/*.png (RGB as the annotator sees them: the
    layer's contrast limits) and labels/*.tif; returns how many planes."""
    from PIL import Image as PILImage
    from tifffile import imwrite

    from ..training import pairs_from_arrays
    from .layers import DENSE_LABELS_MAX_PIXELS

    for layer in (image_layer, labels_layer):
        plane = layer.data[0].shape[-2:] if layer.multiscale else layer.data.shape[:layer.ndim][-2:]
        if layer.multiscale or int(np.prod(plane)) > DENSE_LABELS_MAX_PIXELS:
            raise ValueError(f"layer {layer.name!r} is too large to fine-tune from as a whole: export the "
                             "annotated regions as image and label files (napari-iog export) and train from folders")
    pairs = pairs_from_arrays(np.asarray(image_layer.data), np.asarray(labels_layer.data), _safe(image_layer.name),
                              contrast_limits=None if image_layer.rgb else image_layer.contrast_limits,
                              rgb=image_layer.rgb)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        name = _safe(pair.name)
        PILImage.fromarray(pair.rgb).save(folder / "images" / f"{name}.png")
        imwrite(folder / "labels" / f"{name}.tif", pair.labels.astype(np.uint32))
    return len(pairs)


class FineTuneWidget(Container):
    """Choose the data, the base model and the settings; Start trains in a subprocess."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.process: TrainingProcess | None = None
        self._tmp: Path | None = None
        self._progress = None
        self.result: events.TrainingEnded | None = None
        self.out_path: Path | None = None
        self.cancelled = False
        self._watched: Labels | None = None
        self._base_used: str | None = None

        self.image = ComboBox(label="image", choices=self._image_choices, tooltip="the annotated image layer")
        self.labels = ComboBox(label="labels", choices=self._labels_choices,
                               tooltip="its labels layer: every object is a training example; in stacks only "
                                       "labelled slices count")
        self.images_dir = FileEdit(label="image dir", mode="d", tooltip=f"used when labels is {FROM_FOLDERS}")
        self.labels_dir = FileEdit(label="label dir", mode="d",
                                   tooltip="instance-label files (tif/png) with the images' names")
        self.base = ComboBox(label="base model", choices=self._base_choices,
                             tooltip="the model to adapt: one from the zoo, a file, or an architecture to "
                                     "train from random weights")
        self.base_file = FileEdit(label="base file", mode="r", filter="*.pth *.pt *.pth.tar")
        self.out = FileEdit(label="save as", mode="w", filter="*.pt",
                            tooltip="the new model; empty: a new file in the napari-iog cache folder")
        self.length = SpinBox(label="train for", min=1, max=1_000_000, value=200,
                              tooltip="how long to train, in optimizer steps or in epochs (passes over the objects)")
        self.unit = ComboBox(choices=["steps", "epochs"], value="steps")
        length_row = Container(widgets=[self.length, self.unit], layout="horizontal", labels=False,
                               label="train for")
        length_row.margins = (0, 0, 0, 0)
        self.lr = LineEdit(label="learning rate", value="auto",
                           tooltip=f"AdamW learning rate; auto, when adapting a trained model: "
                                   f"{FINETUNE_LR['adamw']:g}, or {UNSEEN_LR:g} where it scores below "
                                   f"{UNSEEN_BELOW} on the held-out objects before training (a domain it has "
                                   "not learnt), with the coarse outputs weighed 0.1 and the saved "
                                   "weights halfway back to the base's unless keeping all scores better "
                                   "(measured: docs/benchmarks.md)")
        self.batch_size = SpinBox(label="batch size", min=1, max=256, value=4)
        self.device = ComboBox(label="device", choices=available_devices(), value="auto")
        # off: the fine-tuning figures (docs/benchmarks.md) train the whole default network
        self.freeze_backbone = CheckBox(text="freeze the backbone (faster: the large published models on a CPU)",
                                        value=False)
        self.val_fraction = FloatSpinBox(label="held out", min=0.0, max=0.9, step=0.05, value=0.2,
                                         tooltip="share of images (or of objects, with one image) kept for "
                                                 "validation")
        self.start_button = PushButton(text="Start fine-tuning")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        buttons = Container(widgets=[self.start_button, self.cancel_button], layout="horizontal", labels=False)
        self.plot = LossPlot()
        self.status = Label(value="")
        wrap_text(self.status)
        self.use_button = PushButton(text=USE_TEXT, enabled=False)
        self.worse: bool | None = None
        self.extend([self.image, self.labels, self.images_dir, self.labels_dir, self.base, self.base_file, self.out,
                     length_row, self.lr, self.batch_size, self.device, self.freeze_backbone,
                     self.val_fraction, buttons])
        self.native.layout().addWidget(self.plot)
        self.extend([self.status, self.use_button])
        self.start_button.changed.connect(lambda: self.start())
        self.cancel_button.changed.connect(lambda: self.cancel())
        self.use_button.changed.connect(lambda: self.use_in_annotator())
        self.labels.changed.connect(self._show_source)
        self.images_dir.changed.connect(self._show_readiness)
        self.labels_dir.changed.connect(self._show_readiness)
        for combo in (self.image, self.labels, self.base, self.device):
            make_compact(combo)
        events = self.viewer.layers.events
        events.inserted.connect(self.reset_choices)
        events.removed.connect(self.reset_choices)
        self.reset_choices()
        self._show_source()
        share_dock(self)

    # --- choices ------------------------------------------------------------------------------

    def _image_choices(self, _=None) -> list[str]:
        return image_layer_names(self.viewer)

    def _labels_choices(self, _=None) -> list[str]:
        return labels_layer_names(self.viewer) + [FROM_FOLDERS]

    @staticmethod
    def _base_choices(_=None) -> list[tuple[str, str]]:
        scratch = [(f"{arch} (random weights: train from scratch)", arch) for arch in ARCHITECTURES
                   if arch.startswith("iog")]
        return present_model_choices() + [(FROM_FILE, FROM_FILE)] + scratch

    def _show_source(self, _=None) -> None:
        folders = self.labels.value == FROM_FOLDERS
        self.image.visible = not folders
        self.images_dir.visible = self.labels_dir.visible = folders
        if self._watched is not None:
            self._watched.events.data.disconnect(self._show_readiness)
            self._watched.events.paint.disconnect(self._show_readiness)
            self._watched = None
        if not folders and self.labels.value in self.viewer.layers:
            self._watched = self.viewer.layers[self.labels.value]
            self._watched.events.data.connect(self._show_readiness)
            self._watched.events.paint.connect(self._show_readiness)
        self._show_readiness()

    def _show_readiness(self, _=None) -> None:
        """Before a run: how many objects the chosen labels hold (what training will learn from)."""
        if self.running or self.result is not None:
            return
        if self.labels.value == FROM_FOLDERS:
            chosen = [Path(str(f.value)) for f in (self.images_dir, self.labels_dir) if f.value]
            ready = len(chosen) == 2 and all(p.is_dir() and str(p) != "." for p in chosen)
            self.status.value = (f"ready to fine-tune from {chosen[0].name} and {chosen[1].name}" if ready
                                 else "choose the image and label folders, then start")
        elif self._watched is None:
            self.status.value = "annotate some objects (IOG annotator), then start"
        else:
            objects = count_objects(self._watched)
            if objects is None:
                self.status.value = f"ready to fine-tune from {self._watched.name!r}"
            elif objects:
                self.status.value = f"{objects} objects in {self._watched.name!r}: ready to fine-tune"
            else:
                self.status.value = f"{self._watched.name!r} has no objects yet: annotate some, then start"

    # --- running ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def _base(self) -> str | None:
        if self.base.value != FROM_FILE:
            return self.base.value
        path = Path(self.base_file.value) if self.base_file.value else None
        return str(path) if path is not None and path.is_file() else None

    def _lr(self) -> float | None:
        """The learning rate asked for (None: auto, the training's default for the base)."""
        text = str(self.lr.value).strip().lower()
        if text in ("", "auto"):
            return None
        value = float(text)
        if not value > 0:
            raise ValueError(text)
        return value

    def config(self, base: str, out: Path) -> TrainConfig:
        """The run the controls describe (float16 storage: half the file, the same masks)."""
        length = {self.unit.value: int(self.length.value)}
        return TrainConfig(out=str(out), base=base, batch_size=int(self.batch_size.value),
                           device=str(self.device.value), val_fraction=float(self.val_fraction.value),
                           lr=self._lr(), freeze_backbone=bool(self.freeze_backbone.value), half=True,
                           **length)

    def start(self) -> None:
        """Export the annotated layers, then train in a subprocess; nothing in napari is changed."""
        if self.running:
            show_error("a fine-tuning run is going on: cancel it first")
            return
        base = self._base()
        if base is None:
            show_error("choose a base model: one from the list, or an existing model file")
            return
        try:
            self._lr()
        except ValueError:
            show_error(f"the learning rate {self.lr.value!r} is not a number (e.g. 3e-4) or auto")
            return
        self._cleanup()
        if self.labels.value == FROM_FOLDERS:
            if not (self.images_dir.value and self.labels_dir.value and Path(self.images_dir.value).is_dir()
                    and Path(self.labels_dir.value).is_dir()):
                show_error("choose an image folder and a label folder")
                return
            data, name = (Path(self.images_dir.value), Path(self.labels_dir.value)), Path(self.images_dir.value)
        else:
            if not self.image.value or not self.labels.value:
                show_error("choose the image layer and the labels layer with your annotations")
                return
            image_layer, labels_layer = self.viewer.layers[self.image.value], self.viewer.layers[self.labels.value]
            self._tmp = Path(tempfile.mkdtemp(prefix="napari-iog-finetune-"))
            try:
                planes = export_layers(image_layer, labels_layer, self._tmp)
            except ValueError as err:
                show_error(f"these layers cannot be used for training: {err}")
                self._cleanup()
                return
            if planes == 0:
                show_error(f"{labels_layer.name} has no labels yet: annotate some objects first")
                self._cleanup()
                return
            data, name = (self._tmp / "images", self._tmp / "labels"), image_layer.name
        out_value = str(self.out.value) if self.out.value else ""
        self.out_path = Path(out_value) if out_value not in ("", ".") else default_output(base, name)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.result, self.cancelled = None, False
        self.plot.clear(self.length.value if self.unit.value == "steps" else 1)
        self.use_button.enabled = False
        self.use_button.text = USE_TEXT
        self._base_used = base
        # Loading the model and the data can take a minute before step 1: show that it is busy.
        self._progress = progress(total=0, desc="IOG fine-tune: preparing")
        self.start_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"preparing (loading {Path(base).name} and the data): {self.out_path.name}"
        argv = ["--images", str(data[0]), "--labels", str(data[1]), *self.config(base, self.out_path).to_argv()]
        self.process = TrainingProcess(argv, self.on_event, self._finished)

    def cancel(self) -> None:
        """Ask the training to stop: it saves its model at the current step, then exits."""
        if not self.running:
            return
        self.cancelled = True
        self.status.value = "cancelling: saving the model at the current step ..."
        self.cancel_button.enabled = False
        self.process.cancel()

    def on_event(self, event: events.TrainingEvent) -> None:
        if isinstance(event, events.TrainingStarted):
            self.plot.clear(event.total_steps)
            if self._progress is None:
                self._progress = progress(total=event.total_steps, desc="IOG fine-tune")
            self._progress.total = event.total_steps
            self._progress.set_description("IOG fine-tune")
            self.status.value = (f"{event.arch} on {event.device}: {event.objects} objects "
                                 f"({event.data['skipped_small']} too small skipped), {event.validation_objects} "
                                 f"held out; {event.total_steps} steps")
        elif isinstance(event, events.StepDone):
            self.plot.add_loss(event.step, event.loss)
            if self._progress is not None:
                self._progress.update(event.step - self._progress.n)
            eta = f", {event.eta_s:.0f} s left" if event.eta_s is not None else ""
            self.status.value = f"step {event.step}/{event.total_steps}: loss {event.loss:.4f}{eta}"
        elif isinstance(event, events.Validated) and event.miou is not None:
            self.plot.add_miou(event.step, event.miou)
        elif isinstance(event, events.TrainingEnded):
            self.result = event

    def _finished(self, exit_code: int) -> None:
        stderr = self.process.stderr if self.process is not None else []
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.start_button.enabled, self.cancel_button.enabled = True, False
        result = self.result
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
        if result is not None and exit_code in (0, events.CANCELLED_EXIT):
            complete = result.complete
            head = "done" if complete else f"cancelled at step {result.steps}"
            if result.lr is not None:       # with auto, the rate the run picked from its held-out score
                head += f" at lr {result.lr:g}"
            before, after = result.val_miou_before, result.val_miou_after
            self.status.value = (f"{head}: held-out mIoU@3 {fmt(before)} -> {fmt(after)}"
                                 f"{result.blend_said}; saved {self.out_path}")
            if complete:      # nothing left to resume: the resume state would only take space
                state_path(self.out_path).unlink(missing_ok=True)
            self.use_button.enabled = True
            if before is not None and after is not None and after < before:
                self.worse = True
                self.status.value += (f"\nThe new model is WORSE on the held-out objects than {self._base_used} "
                                      "was: keep using that one (more objects or fewer steps may help).")
                self.use_button.text = "Use it anyway"
                show_warning(self.status.value)
            else:
                self.worse = False
                show_info(self.status.value)
        else:
            detail = "\n".join(line for line in stderr if line.strip())[-1500:]
            if self.cancelled:
                self.status.value = "cancelled before any step was saved"
            else:
                self.status.value = f"training failed (exit code {exit_code}); your layers are unchanged:\n{detail}"
                show_error(f"IOG fine-tune failed: {detail.splitlines()[-1] if detail else exit_code}")
        self.process = None
        self._cleanup()

    def wait(self, timeout_ms: int = 600_000) -> None:
        """Block until the training process ends (for scripts and tests)."""
        if self.process is not None:
            self.process.wait(timeout_ms)

    def use_in_annotator(self):
        """Load the new model into the annotator that is open (it keeps its labels and layers);
        with no annotator dock open, open one and start it with the model."""
        if self.out_path is None or not self.out_path.is_file():
            show_error("no fine-tuned model yet")
            return None
        widget = open_annotator_widget(self.viewer)
        if widget is None:
            _, widget = self.viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
        if widget.annotator is None and self.image.value and self.image.visible:
            widget.image.value = self.image.value
        widget.use_model(self.out_path)
        return widget

    def _cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
