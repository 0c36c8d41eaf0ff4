"""The networks, pure torch: ResNet trunks, IOG, IOG refinement, DEXTR, and checkpoints."""

from .checkpoint import (
    CheckpointError,
    detect_architecture,
    load_model,
    load_state_dict_strict,
    read_checkpoint,
    save_model,
)
from .devices import resolve_device
from .iog import DEXTRNetwork, IOGConfig, IOGNetwork, IOGRefineNetwork
from .registry import (
    ARCHITECTURES,
    PUBLISHED_ARCHITECTURES,
    UnknownArchitectureError,
    build_model,
)
from .resnet import CaffeResNet, ResNet, load_imagenet_weights

__all__ = [
    "ARCHITECTURES", "PUBLISHED_ARCHITECTURES", "CaffeResNet", "CheckpointError", "DEXTRNetwork",
    "IOGConfig", "IOGNetwork", "IOGRefineNetwork", "ResNet", "UnknownArchitectureError",
    "build_model", "detect_architecture", "load_imagenet_weights", "load_model",
    "load_state_dict_strict", "read_checkpoint", "resolve_device", "save_model",
]
