"""The annotator dock's learning row: on/off, what the learner did, and saving what it learned."""

from __future__ import annotations

from magicgui.widgets import CheckBox, Container, Label, PushButton
from napari.utils.notifications import show_error, show_info

from .layout import wrap_text
from .learning import AnnotatorLearning, why_not_learn


class LearningControls(Container):
    """A checkbox (learning is on by default for models that can learn), the learner's status
    and a button that saves the learned model where both model lists find it."""

    def __init__(self):
        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self.learning: AnnotatorLearning | None = None
        self.toggle = CheckBox(text="learn while annotating", value=True,
                                tooltip="each committed object teaches a copy of the model in the background "
                                        "(low priority); the copy replaces the model between objects only when "
                                        "it does better on your newest objects")
        self.save_button = PushButton(text="Save learned model", enabled=False,
                                      tooltip="save the learned model in use (weights and card) with the "
                                              "fine-tuned models: both model lists offer it")
        self.status = Label(value="")
        wrap_text(self.status)
        self.extend([self.toggle, self.status, self.save_button])
        self.toggle.changed.connect(self._toggled)
        self.save_button.changed.connect(lambda: self.save())

    def attach(self, annotator) -> None:
        """Learn for ``annotator`` (a new one replaces the last)."""
        self.detach()
        self.learning = AnnotatorLearning(annotator)
        self.learning.status_changed.connect(self._show)
        annotator.stopped.connect(lambda _: self.detach())
        reason = why_not_learn(annotator.predictor)
        self.toggle.enabled = reason is None
        if reason is not None:
            self._show(reason)
        elif self.toggle.value:
            self.learning.start()

    def detach(self) -> None:
        if self.learning is not None:
            self.learning.stop()
        self.learning = None
        self.save_button.enabled = False

    def _toggled(self, on: bool) -> None:
        if self.learning is None:
            return
        if on:
            self.learning.start()
        else:
            self.learning.stop()
            self._show("learning off: the model in use stays as it is")

    def _show(self, text: str) -> None:
        self.status.value = text
        self.save_button.enabled = self.learning is not None and self.learning.in_use is not None

    def save(self):
        if self.learning is None:
            show_error("start annotating first")
            return None
        try:
            path = self.learning.save()
        except (ValueError, OSError) as error:
            show_error(str(error))
            return None
        self._show(f"saved {path.name} (in both model lists)")
        show_info(f"learned model saved: {path}")
        return path
