"""The heads of IOG and DEXTR: pyramid pooling, CoarseNet, FineNet, the click encoder.

Module and index layouts follow the published checkpoints exactly (see
``shared/spec/IOG-SPEC.md``): the parameter names are part of the file format.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def upsample_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True``: every resize inside IOG and DEXTR uses it."""
    if tuple(x.shape[-2:]) == tuple(size):
        # align_corners=True to the same size is the identity; skip the copy.
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class PSPModule(nn.Module):
    """Pyramid pooling as in PSPNet/DEXTR/IOG.

    ``stages.i`` = (adaptive avg pool to ``size``, 1x1 conv in -> in // 4, BN, ReLU), each
    upsampled back; the four stages and the input are concatenated (2 x in channels) and go
    through ``bottleneck`` (1x1 conv -> out, BN, ReLU) and then one more ReLU, which the
    published code applies and which is kept for equality. ``final`` (DEXTR only) is a 1x1
    conv with bias to ``n_classes``.
    """

    def __init__(self, in_features: int, out_features: int = 512,
                 sizes: Sequence[int] = (1, 2, 3, 6), n_classes: int | None = None):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d((size, size)),
                nn.Conv2d(in_features, in_features // 4, 1, bias=False),
                nn.BatchNorm2d(in_features // 4),
                nn.ReLU(inplace=True),
            )
            for size in sizes
        )
        concat = in_features // 4 * len(sizes) + in_features
        self.bottleneck = nn.Sequential(
            nn.Conv2d(concat, out_features, 1, bias=False),
            nn.BatchNorm2d(out_features),
            nn.ReLU(inplace=True),
        )
        self.relu = nn.ReLU()
        self.final = nn.Conv2d(out_features, n_classes, 1) if n_classes else None

    def lead_sum(self, lead: torch.Tensor) -> torch.Tensor:
        """The bottleneck convolution's sum over the input's leading channels ``lead`` (no
        bias). The conv is linear, so ``forward(cat(lead, rest), lead_sum=...)`` adds this to
        the sum over the other channels: the refinement network keeps it for an object's
        corrections, whose clicks change only ``rest``."""
        conv = self.bottleneck[0]
        start = self._stage_channels
        return F.conv2d(lead, conv.weight[:, start:start + lead.shape[1]])

    @property
    def _stage_channels(self) -> int:
        return sum(stage[1].out_channels for stage in self.stages)

    def forward(self, feats: torch.Tensor, lead_sum: torch.Tensor | None = None,
                lead_channels: int = 0) -> torch.Tensor:
        """``lead_sum``: :meth:`lead_sum` of ``feats[:, :lead_channels]``, kept from before."""
        size = tuple(feats.shape[-2:])
        priors = [upsample_to(stage(feats), size) for stage in self.stages]
        if lead_sum is None:
            out = self.bottleneck(torch.cat([*priors, feats], 1))
        else:
            conv, start = self.bottleneck[0], self._stage_channels
            rest = torch.cat([*priors, feats[:, lead_channels:]], 1)
            weight = torch.cat([conv.weight[:, :start], conv.weight[:, start + lead_channels:]], 1)
            out = self.bottleneck[1:](F.conv2d(rest, weight, conv.bias) + lead_sum)
        out = self.relu(out)
        return out if self.final is None else self.final(out)


class CoarseNet(nn.Module):
    """IOG's CoarseNet: a cascaded-pyramid "global net" over [psp, layer3, layer2, layer1].

    f0 = lateral0(psp); f1 = lateral1(layer3) + f0 (both at 1/16, so no upsampling);
    f2 = lateral2(layer2) + upsamples.1(f1); f3 = lateral3(layer1) + upsamples.2(f2).
    ``upsamples.0`` exists in the published weights and is never used; it is kept so they
    load strictly. With ``upsample_first`` (trunks whose deepest features are at 1/32, such as
    MobileNetV2) it brings f0 to f1's size: f1 = lateral1(layer3) + upsamples.0(f0).
    """

    def __init__(self, channel_settings: Sequence[int], channels: int = 256, upsample_first: bool = False):
        super().__init__()
        self.upsample_first = upsample_first
        self.laterals = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, channels, 1, bias=False), nn.BatchNorm2d(channels),
                          nn.ReLU(inplace=True))
            for c in channel_settings
        )
        self.upsamples = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                          nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
            for _ in range(len(channel_settings) - 1)
        )
        self.predict = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, 1, 3, padding=1, bias=False),
                nn.Identity(),  # index 4: the published upsample to the output size
                nn.BatchNorm2d(1),
            )
            for _ in channel_settings
        )

    def side_maps(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """lateral1..3 of the trunk's layer3, layer2, layer1: the part that does not depend on
        what comes through the PSP (so, in the refinement network, not on the clicks)."""
        return [lateral(f) for lateral, f in zip(self.laterals[1:], feats[1:])]

    def forward(self, feats: Sequence[torch.Tensor], out_size: tuple[int, int], predict: bool = True,
                side: Sequence[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Returns the feature maps f0..f3 and, with ``predict``, the four coarse outputs
        (inference needs only the feature maps: FineNet makes the answer). ``side``: the
        :meth:`side_maps` of ``feats``, computed before (a correction reuses them)."""
        side = self.side_maps(feats) if side is None else side
        f0 = self.laterals[0](feats[0])
        f1 = side[0] + (self.upsamples[0](f0) if self.upsample_first else f0)
        f2 = side[1] + self.upsamples[1](f1)
        f3 = side[2] + self.upsamples[2](f2)
        fms = [f0, f1, f2, f3]
        if not predict:
            return fms, []
        outs = [self._predict(head, f, out_size) for head, f in zip(self.predict, fms)]
        return fms, outs

    @staticmethod
    def _predict(head: nn.Sequential, f: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        x = head[3](head[2](head[1](head[0](f))))
        return head[5](upsample_to(x, out_size))


class FineBottleneck(nn.Module):
    """CPN's refine-net bottleneck: 1x1 -> 3x3 -> 1x1 (expansion 2), always with a projection."""

    expansion = 2

    def __init__(self, inplanes: int, planes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 2)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 2, 1, bias=False),
                                        nn.BatchNorm2d(planes * 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


class FineNet(nn.Module):
    """IOG's FineNet: ``cascade.i`` = (3 - i) bottlenecks then an upsample to the output size;
    the four are concatenated and ``final_predict`` = (bottleneck 4C -> C, 3x3 conv -> 1, BN).

    ``project_before_upsampling`` (the inference fast path sets it): the final bottleneck's two
    1x1 convolutions over the concatenation (``conv1`` and ``downsample``, two thirds of
    FineNet's work) run on each level at its own size, before the upsample. Both are linear and
    bilinear weights sum to 1, so the sum is the same up to float rounding; the three coarser
    levels cost 1/16, 1/16 and 1/4 as much, and the 4C-channel concatenation is never made.
    """

    project_before_upsampling = False

    def __init__(self, channels: int = 256, levels: int = 4):
        super().__init__()
        planes = channels // FineBottleneck.expansion
        self.cascade = nn.ModuleList(
            nn.Sequential(*[FineBottleneck(channels, planes) for _ in range(levels - 1 - i)])
            for i in range(levels)
        )
        self.final_predict = nn.Sequential(
            FineBottleneck(channels * levels, planes),
            nn.Conv2d(channels, 1, 3, padding=1, bias=False),
            nn.BatchNorm2d(1),
        )

    def forward(self, fms: Sequence[torch.Tensor], out_size: tuple[int, int], return_features: bool = False):
        """The logits; with ``return_features`` also the last bottleneck's output (C channels)."""
        levels = [stage(f) for stage, f in zip(self.cascade, fms)]
        block, conv, norm = self.final_predict
        if not self.project_before_upsampling:
            out = block(torch.cat([upsample_to(f, out_size) for f in levels], 1))
            return (norm(conv(out)), out) if return_features else norm(conv(out))
        weight = torch.cat([block.conv1.weight, block.downsample[0].weight])
        summed, start = None, 0
        for level in levels:
            part = upsample_to(F.conv2d(level, weight[:, start:start + level.shape[1]]), out_size)
            summed = part if summed is None else summed + part
            start += level.shape[1]
        planes = block.conv1.out_channels
        inner, shortcut = summed[:, :planes], summed[:, planes:]
        if block.conv1.bias is not None:       # folded BatchNorm
            inner, shortcut = inner + _column(block.conv1.bias), shortcut + _column(block.downsample[0].bias)
        out = block.relu(block.bn1(inner))
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.relu(block.bn3(block.conv3(out)) + block.downsample[1](shortcut))
        return (norm(conv(out)), out) if return_features else norm(conv(out))


def _column(bias: torch.Tensor) -> torch.Tensor:
    return bias.view(1, -1, 1, 1)


def click_encoder(channels: Sequence[int] = (64, 128, 256, 256), out_channels: int = 64
                  ) -> nn.Sequential:
    """The refinement network's ``iog_points``: 3x3 stride-2 convs 2 -> 64 -> 128 -> 256 -> 256
    and a 1x1 conv to 64, each with BN and ReLU; it brings the two click maps to 1/16."""
    layers: list[nn.Module] = []
    previous = 2
    for c in channels:
        layers += [nn.Conv2d(previous, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c),
                   nn.ReLU()]
        previous = c
    layers += [nn.Conv2d(previous, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
               nn.ReLU()]
    return nn.Sequential(*layers)
