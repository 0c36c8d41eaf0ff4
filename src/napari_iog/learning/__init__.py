"""Learning while annotating (no napari or Qt here).

``pool`` (the committed objects kept for learning), ``learner`` (a copy of the network that
trains on them and replaces the model in use only when it does better on objects it has not
learned from), ``background`` (that learner in its own low-priority process, for the
annotator), ``simulation`` (a simulated session with and without learning:
``napari-iog evaluate --learn``).
"""

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["LearnedObject", "ObjectPool", "learned_object"], ".pool"),
    **dict.fromkeys(["LearnReport", "LearnSettings", "Learner"], ".learner"),
    **dict.fromkeys(["BackgroundLearner"], ".background"),
    **dict.fromkeys(["simulate"], ".simulation"),
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
