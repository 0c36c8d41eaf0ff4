"""The IOG network, its refinement variant ("beyond three clicks") and DEXTR."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .heads import CoarseNet, FineNet, PSPModule, click_encoder, upsample_to
from .resnet import CaffeResNet, ResNet, trunk_channels

Features = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class IOGConfig:
    """Everything needed to rebuild an IOG network; stored in the project's checkpoints.

    ``psp_channels`` is the PSP output width (512 in the published model) and
    ``head_channels`` the width of CoarseNet/FineNet (256); lighter trunks use narrower heads.
    """

    trunk: str = "resnet101"
    in_channels: int = 5
    psp_channels: int = 512
    head_channels: int = 256
    refine: bool = False
    click_channels: int = 64

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class IOGNetwork(nn.Module):
    """Inside-Outside Guidance network (Zhang et al., CVPR 2020).

    Input ``[B, 5, H, W]``: R, G, B in 0..255, the inside map and the outside map (0..255).
    ``forward`` returns the fine logits ``[B, 1, H, W]``; with ``return_coarse=True`` it
    returns ``(fine, [coarse0, coarse1, coarse2, coarse3])``, all at ``H x W``, as training
    needs them. The heads work at ``H/4`` (128x128 for the published 512x512 input).
    """

    def __init__(self, config: IOGConfig | None = None):
        super().__init__()
        config = config or IOGConfig()
        self.config = config
        # Registration order reproduces the published state_dict's key order.
        c1, c2, c3, c4 = trunk_channels(config.trunk)
        self.Coarse_net = CoarseNet([config.psp_channels, c3, c2, c1], config.head_channels)
        self.Fine_net = FineNet(config.head_channels)
        self.backbone = ResNet(config.trunk, in_channels=config.in_channels)
        psp_in = c4 + (config.click_channels if config.refine else 0)
        self.psp4 = PSPModule(psp_in, config.psp_channels)

    @property
    def arch(self) -> str:
        return arch_name(self.config)

    def encode(self, x: torch.Tensor) -> Features:
        """Backbone features (layer4, layer3, layer2, layer1) of a 5-channel input."""
        _check_input(x, self.config.in_channels, "x")
        return self.backbone(x)

    def _heads(self, features: Features, deep: torch.Tensor, out_size: tuple[int, int],
               return_coarse: bool, side: RefineSide | None = None):
        head_size = (out_size[0] // 4, out_size[1] // 4)
        if side is None:
            psp, coarse_side = self.psp4(deep), None
        else:
            psp = self.psp4(deep, side.psp_lead_sum, features[0].shape[1])
            coarse_side = side.coarse
        fms, coarse = self.Coarse_net([psp, features[1], features[2], features[3]],
                                      head_size, predict=return_coarse, side=coarse_side)
        fine = upsample_to(self.Fine_net(fms, head_size), out_size)
        if not return_coarse:
            return fine
        return fine, [upsample_to(c, out_size) for c in coarse]

    def forward(self, x: torch.Tensor, return_coarse: bool = False):
        features = self.encode(x)
        return self._heads(features, features[0], tuple(x.shape[-2:]), return_coarse)


@dataclass
class RefineSide:
    """What the refinement decoder computes from an object's features alone."""

    coarse: list[torch.Tensor]      # CoarseNet's laterals of layer3, layer2, layer1
    psp_lead_sum: torch.Tensor      # the PSP bottleneck's sum over layer4's channels (~half its work)


class IOGRefineNetwork(IOGNetwork):
    """IOG with the click encoder (``iog_points``) for corrections beyond three clicks.

    The backbone runs once per object (:meth:`encode`); each correction re-runs only
    ``iog_points -> psp4 -> CoarseNet -> FineNet`` (:meth:`decode`) on the two click maps
    ``[B, 2, H, W]`` (positive/inside, negative/outside; 0..255).
    """

    def __init__(self, config: IOGConfig | None = None):
        config = config or IOGConfig(refine=True)
        if not config.refine:
            raise ValueError("IOGRefineNetwork needs a config with refine=True")
        super().__init__(config)
        self.iog_points = click_encoder(out_channels=config.click_channels)

    def side_maps(self, features: Features) -> RefineSide:
        """The decoder's click-independent parts: an object's corrections compute them once,
        with its features."""
        return RefineSide(self.Coarse_net.side_maps([None, features[1], features[2], features[3]]),
                          self.psp4.lead_sum(features[0]))

    def decode(self, features: Features, clicks: torch.Tensor, return_coarse: bool = False,
               side: RefineSide | None = None):
        """``side``: :meth:`side_maps` of ``features``, when kept from an earlier click."""
        _check_input(clicks, 2, "clicks")
        out_size = tuple(clicks.shape[-2:])
        deep = torch.cat((features[0], self.iog_points(clicks)), 1)
        return self._heads(features, deep, out_size, return_coarse, side)

    def forward(self, x: torch.Tensor, clicks: torch.Tensor | None = None,
                return_coarse: bool = False):
        """``clicks`` default to the input's own guidance maps, as in the first pass."""
        features = self.encode(x)
        if clicks is None:
            clicks = x[:, 3:5]
        return self.decode(features, clicks, return_coarse)


class DEXTRNetwork(CaffeResNet):
    """DEXTR (Maninis et al., CVPR 2018): Caffe-style ResNet-101 + PSP head, 4 input channels
    (RGB 0..255 and one map of the four extreme points). Returns logits at the input size."""

    arch = "dextr-resnet101"

    def __init__(self, in_channels: int = 4):
        super().__init__(in_channels=in_channels)
        self.layer5 = PSPModule(2048, 512, n_classes=1)
        self.config = {"in_channels": in_channels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.conv1.in_channels, "x")
        return upsample_to(self.layer5(self.forward_trunk(x)), tuple(x.shape[-2:]))


def _check_input(x: torch.Tensor, channels: int, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must be [B, {channels}, H, W], got {list(x.shape)}")
    if x.shape[-1] % 16 or x.shape[-2] % 16:
        raise ValueError(f"{name}: height and width must be multiples of 16, got {list(x.shape[-2:])}")


def arch_name(config: IOGConfig) -> str:
    return f"iog-{'refine-' if config.refine else ''}{config.trunk}"
