"""Architecture names and the builder that makes any of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .iog import DEXTRNetwork, IOGConfig, IOGNetwork, IOGRefineNetwork, arch_name
from .mobilenet import IOGMobileNetwork, MobileIOGConfig
from .resnet import TRUNK_LAYOUTS

# Heads narrower than the published ones for the light trunks, whose deepest features have
# 512 channels instead of 2048.
_HEAD_WIDTHS = {"resnet101": (512, 256), "resnet50": (512, 256),
                "resnet34": (256, 128), "resnet18": (256, 128)}


def _iog_factory(trunk: str, refine: bool) -> Callable[..., nn.Module]:
    def make(**overrides: Any) -> nn.Module:
        psp, head = _HEAD_WIDTHS[trunk]
        values = {"trunk": trunk, "psp_channels": psp, "head_channels": head, "refine": refine}
        values.update(overrides)
        config = IOGConfig(**values)
        if config.trunk != trunk or config.refine != refine:
            raise ValueError(f"config {config} does not describe {arch_name(IOGConfig(trunk=trunk, refine=refine))}")
        return IOGRefineNetwork(config) if refine else IOGNetwork(config)

    return make


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}
for _trunk in ("resnet101", "resnet50", "resnet34", "resnet18"):
    assert _trunk in TRUNK_LAYOUTS
    ARCHITECTURES[f"iog-{_trunk}"] = _iog_factory(_trunk, refine=False)
    ARCHITECTURES[f"iog-refine-{_trunk}"] = _iog_factory(_trunk, refine=True)
ARCHITECTURES["iog-mobilenetv2"] = lambda **overrides: IOGMobileNetwork(MobileIOGConfig(**overrides))
ARCHITECTURES["dextr-resnet101"] = lambda **overrides: DEXTRNetwork(**overrides)

#: The architectures of the authors' released checkpoints.
PUBLISHED_ARCHITECTURES = ("iog-resnet101", "iog-refine-resnet101", "dextr-resnet101")


class UnknownArchitectureError(ValueError):
    pass


def build_model(arch: str, config: Mapping[str, Any] | None = None, init: str = "random",
                seed: int | None = None) -> nn.Module:
    """Make the network ``arch`` (see :data:`ARCHITECTURES`) in eval mode.

    ``config`` overrides the architecture's defaults (e.g. ``{"in_channels": 5}``).
    ``init="random"`` uses PyTorch's default initialisation (reproducible with ``seed``);
    ``init="zeros"`` zeroes every weight and statistic (running variances are set to 1 so
    that the network stays finite), which gives a deterministic model for tests.
    """
    if arch not in ARCHITECTURES:
        raise UnknownArchitectureError(
            f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    if init not in ("random", "zeros"):
        raise ValueError(f"init must be 'random' or 'zeros', not {init!r}")
    if seed is not None:
        torch.manual_seed(seed)
    model = ARCHITECTURES[arch](**dict(config or {}))
    if init == "zeros":
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                tensor.fill_(1 if name.endswith("running_var") else 0)
    return model.eval()


def model_config(model: nn.Module) -> dict[str, Any]:
    """The config dict that rebuilds ``model`` with :func:`build_model`."""
    config = model.config
    return config.to_dict() if isinstance(config, (IOGConfig, MobileIOGConfig)) else dict(config)


def model_arch(model: nn.Module) -> str:
    arch = getattr(model, "arch", None)
    if arch not in ARCHITECTURES:
        raise UnknownArchitectureError(
            f"{type(model).__name__} is not a napari-iog network (no known architecture name)")
    return arch
