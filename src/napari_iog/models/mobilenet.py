"""IOG on a MobileNetV2 trunk: the CPU-sized default network.

The trunk follows torchvision's ``mobilenet_v2`` module layout and parameter names
(``features.0.0`` ... ``features.17.conv.3``), so torchvision's ImageNet state_dict loads into
it; the other common layout (tonylins' pytorch-mobilenet-v2, ``features.1.conv.3`` ...) is
renamed on load (:func:`mobilenet_imagenet_state`). The 1x1 ``features.18`` conv to 1280
channels and the classifier are not part of the trunk: IOG reads the stride 4/8/16/32 features
(24, 32, 96 and 320 channels).

The network takes the same input as every IOG network (``[B, 5, H, W]``, RGB and the two
guidance maps in 0..255, the 512 frame) and answers at that size, but runs inside at
``input_size`` (320 for the 512 frame): the image is normalised as ImageNet weights expect and
resized first. The heads are IOG's: PSP on the deepest features, CoarseNet's pyramid (with an
upsampling at every level, as the four strides differ) and FineNet, at widths chosen for a CPU.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .heads import CoarseNet, FineNet, PSPModule, upsample_to
from .resnet import load_trunk_state

#: (expansion t, channels c, blocks n, first stride s) of MobileNetV2's inverted residuals.
INVERTED_RESIDUALS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
#: features index whose output is the stride 4, 8, 16 and 32 feature map
TAPS = (3, 6, 13, 17)
TAP_CHANNELS = (24, 32, 96, 320)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the frame every IOG network is given (see ``napari_iog.geometry.FRAME``)
FRAME = 512


def _conv_bn_relu6(inp: int, out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expansion: int):
        super().__init__()
        hidden = inp * expansion
        self.use_residual = stride == 1 and inp == out
        layers: list[nn.Module] = [] if expansion == 1 else [_conv_bn_relu6(inp, hidden, 1)]
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Trunk(nn.Module):
    """``features.0`` .. ``features.17`` of MobileNetV2 (width 1.0), returning the stride
    32, 16, 8 and 4 feature maps, deepest first, as IOG consumes them."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [_conv_bn_relu6(in_channels, 32, 3, 2)]
        previous = 32
        for t, c, n, s in INVERTED_RESIDUALS:
            for i in range(n):
                blocks.append(InvertedResidual(previous, c, s if i == 0 else 1, t))
                previous = c
        self.features = nn.Sequential(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor):
        taps = []
        for index, block in enumerate(self.features):
            x = block(x)
            if index in TAPS:
                taps.append(x)
        return tuple(reversed(taps))


def mobilenet_imagenet_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ImageNet MobileNetV2 state_dict (torchvision's or tonylins' layout) under the trunk's
    names; ``features.18`` and the classifier are dropped."""
    block_layers = {}
    for t, _, n, _ in INVERTED_RESIDUALS:
        block_layers.update({len(block_layers) + 1 + i: t for i in range(n)})
    # tonylins numbers every module of a block's Sequential (ReLU6 included); torchvision groups
    # conv+BN+ReLU6 in sub-Sequentials.
    tonylins = {1: {"0": "0.0", "1": "0.1", "3": "1", "4": "2"},
                6: {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}}
    # torchvision's names have "conv.0.0."; tonylins' never do (and "conv.1" means another module)
    renamed = not any(".conv.0.0." in key for key in state_dict)
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"^features\.(\d+)\.(.*)$", key)
        if m is None or int(m.group(1)) > 17:
            continue
        index, rest = int(m.group(1)), m.group(2)
        old = re.match(r"^conv\.(\d)\.(weight|bias|running_mean|running_var|num_batches_tracked)$", rest)
        if renamed and index > 0 and old is not None:
            rest = f"conv.{tonylins[block_layers[index]][old.group(1)]}.{old.group(2)}"
        out[f"features.{index}.{rest}"] = value
    return out


def load_mobilenet_imagenet(trunk: MobileNetV2Trunk, state_dict: Mapping[str, torch.Tensor]) -> None:
    """ImageNet weights into ``trunk``; input channels beyond RGB (the guidance maps) start at
    zero, so the trunk starts as the ImageNet network on the image."""
    load_trunk_state(trunk, mobilenet_imagenet_state(state_dict), "features.0.0.weight",
                      "not MobileNetV2 ImageNet weights")


#: channels a network with ``correction_maps`` takes after the five: the first mask and the
#: positive and negative corrections as disks (see :mod:`napari_iog.correction_maps`)
CORRECTION_CHANNELS = 3


@dataclass(frozen=True)
class MobileIOGConfig:
    """``correction_maps``: the network also takes :data:`CORRECTION_CHANNELS` maps of the
    corrections (RITM's previous mask and click disks), so that a correction is more than one
    more Gaussian among the first clicks."""

    trunk: str = "mobilenetv2"
    in_channels: int = 5
    psp_channels: int = 128
    head_channels: int = 64
    input_size: int = 320
    correction_maps: bool = False
    #: with ``correction_maps``: a small head that changes FineNet's logits where the corrections
    #: say, from its features and the maps; silent (exactly zero) for first clicks
    correction_head: bool = False
    #: with ``correction_head``: the size a sample with a correction click runs at (None:
    #: ``input_size``). Boundaries are what corrections fix, and a larger pass draws them finer
    #: while first clicks keep their faster, measured size (docs/benchmarks.md, "tenth round")
    correction_input_size: int | None = None

    @property
    def input_channels(self) -> int:
        return self.in_channels + (CORRECTION_CHANNELS if self.correction_maps else 0)

    def __post_init__(self):
        if self.correction_head and not self.correction_maps:
            raise ValueError("correction_head reads the correction maps: it needs correction_maps=True")
        for name in ("input_size", "correction_input_size"):
            size = getattr(self, name)
            if size is not None and (size % 32 or size < 64):
                raise ValueError(f"{name} must be a multiple of 32 (at least 64), not {size}")
        if self.correction_input_size is not None and not self.correction_head:
            raise ValueError("correction_input_size sizes the correction head's pass: it needs correction_head=True")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class IOGMobileNetwork(nn.Module):
    """IOG (PSP + CoarseNet + FineNet) on MobileNetV2; inputs and outputs as :class:`IOGNetwork`."""

    arch = "iog-mobilenetv2"
    #: precision="auto" keeps float32 on a CPU: with bf16 the trained default's masks agreed with
    #: float32's at a mean IoU of 0.988 but only 0.96 on the worst of 8 GrabCut objects (AMD EPYC
    #: Zen 4, benchmarks/bench_predictor.py), and float32 already takes under 50 ms a click.
    bf16_on_cpu = False

    def __init__(self, config: MobileIOGConfig | None = None):
        super().__init__()
        config = config or MobileIOGConfig()
        self.config = config
        c1, c2, c3, c4 = TAP_CHANNELS
        self.backbone = MobileNetV2Trunk(config.input_channels)
        self.psp4 = PSPModule(c4, config.psp_channels)
        self.Coarse_net = CoarseNet([config.psp_channels, c3, c2, c1], config.head_channels,
                                    upsample_first=True)
        self.Fine_net = FineNet(config.head_channels)
        self.correction_head = CorrectionHead(config.head_channels) if config.correction_head else None
        scale = torch.tensor([255.0 * s for s in IMAGENET_STD] + [255.0] * (config.input_channels - 3))
        shift = torch.tensor([255.0 * m for m in IMAGENET_MEAN] + [0.0] * (config.input_channels - 3))
        self.register_buffer("input_scale", scale.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_shift", shift.view(1, -1, 1, 1), persistent=False)

    def inner_size(self, size: tuple[int, int], larger: bool = False) -> tuple[int, int]:
        """The size the network runs at for an input of ``size`` (the 512 frame -> input_size,
        or correction_input_size for ``larger`` corrections where the config sets one)."""
        larger_size = self.config.correction_input_size     # only ever set with a correction head
        ratio = (larger_size if larger and larger_size else self.config.input_size) / FRAME
        return tuple(max(32, int(round(s * ratio / 32)) * 32) for s in size)

    @property
    def correction_clicks_from(self) -> int | None:
        """The first input channel of the correction clicks' disks (after the first mask), or None."""
        return self.config.in_channels + 1 if self.correction_head is not None else None

    def without_correction_head(self) -> IOGMobileNetwork | None:
        """For a graph that cannot skip the correction head per input (ONNX): a copy without it,
        which answers as this network wherever no correction click is drawn (the head adds exactly
        zero there); None for a network without a head."""
        if self.correction_head is None:
            return None
        first_clicks = copy.deepcopy(self)
        first_clicks.correction_head = None
        return first_clicks

    def forward(self, x: torch.Tensor, return_coarse: bool = False, larger_corrections: torch.Tensor | None = None):
        """``larger_corrections`` (with ``correction_input_size``): per sample, whether its
        correction runs at that size; None (anything that does not know the crop): none does,
        every pass is at ``input_size``. The predictor, the server and training say yes for crops
        the first clicks' size would shrink (``correction_maps.correction_sizes``)."""
        if x.ndim != 4 or x.shape[1] != self.config.input_channels:
            raise ValueError(f"x must be [B, {self.config.input_channels}, H, W], got {list(x.shape)}")
        out_size = (int(x.shape[-2]), int(x.shape[-1]))   # ints, so an exported graph holds them
        building = _building_graph()
        rows = None if self.correction_head is None or building else corrected_rows(x, self.correction_clicks_from)
        corrected = self.correction_head is not None and (building or bool(rows.any()))
        # an exported graph is the larger one (ONNX Runtime keeps another for the rest)
        larger = corrected and self.config.correction_input_size is not None and (
            building or larger_corrections is not None)
        if larger and not building:
            rows = rows & torch.as_tensor(larger_corrections, dtype=torch.bool, device=x.device)
            if not bool(rows.any()):
                larger = False
            elif not bool(rows.all()):      # each sample answers as it would alone
                return merge_rows(rows, self.forward(x[rows], return_coarse, rows[rows]),
                                  self.forward(x[~rows], return_coarse))
        inner = self.inner_size(out_size, larger)
        x = (x - self.input_shift) / self.input_scale
        if inner != out_size:
            x = F.interpolate(x, size=inner, mode="bilinear", align_corners=False, antialias=True)
        c4, c3, c2, c1 = self.backbone(x)
        head_size = tuple(c1.shape[-2:])
        fms, coarse = self.Coarse_net([self.psp4(c4), c3, c2, c1], head_size, predict=return_coarse)
        if self.correction_head is None:
            fine = self.Fine_net(fms, head_size)
        else:
            fine, features = self.Fine_net(fms, head_size, return_features=True)
            # first clicks only (no disk): the head would add exactly zero, so it is skipped
            # (about a quarter of a first click's time); a graph being traced keeps it whole
            if corrected:
                fine = fine + self.correction_head(features, fine, x[:, self.config.in_channels:])
        fine = upsample_to(fine, out_size)
        if not return_coarse:
            return fine
        return fine, [upsample_to(c, out_size) for c in coarse]


class CorrectionHead(nn.Module):
    """A change of FineNet's logits (at the heads' size) from its last features, its logits and
    the correction maps (the first mask, positive and negative disks: RITM's inputs, FocalClick's
    local refinement at the whole crop): four 3x3 convolutions dilated 1, 2, 4, 8 (a field of
    31 px at 80x80, a third of the crop) and a 1x1 to one channel. Its last weights start at
    zero and its output is multiplied by whether a sample has a correction at all, so first
    clicks get exactly the network's answer and a widened network starts as its base."""

    def __init__(self, feature_channels: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        previous = feature_channels + 1 + CORRECTION_CHANNELS
        for dilation in (1, 2, 4, 8):
            layers += [nn.Conv2d(previous, width, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
            previous = width
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, 1, 1, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, features: torch.Tensor, logits: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        maps = F.interpolate(maps, size=tuple(features.shape[-2:]), mode="bilinear", align_corners=False,
                             antialias=True)
        corrected = (maps[:, 1:].flatten(1).amax(1) > 0).to(features.dtype).view(-1, 1, 1, 1)
        return corrected * self.out(self.body(torch.cat([features, logits, maps], 1)))


def corrected_rows(x: torch.Tensor, clicks_from: int) -> torch.Tensor:
    """Per sample of ``x`` (unnormalised), whether a correction click's disk is drawn in its
    channels from ``clicks_from`` on."""
    return (x[:, clicks_from:] > 0).flatten(1).any(1)


def merge_rows(rows: torch.Tensor, chosen, others):
    """The outputs of ``x[rows]`` and ``x[~rows]`` (a tensor, or (fine, [coarse...])) put back in
    the batch's order."""
    if isinstance(chosen, torch.Tensor):
        out = chosen.new_empty((len(rows), *chosen.shape[1:]))
        out[rows], out[~rows] = chosen, others
        return out
    return merge_rows(rows, chosen[0], others[0]), [merge_rows(rows, a, b) for a, b in zip(chosen[1], others[1])]


def _building_graph() -> bool:
    """Is this forward being traced, compiled or exported (no data-dependent branches then)?"""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
                or torch.compiler.is_exporting())


def with_correction_maps(model: IOGMobileNetwork, head: bool = False) -> IOGMobileNetwork:
    """``model`` widened to take the correction maps (and, with ``head``, the
    :class:`CorrectionHead`): the new weights that read them start at zero, so the new network
    answers exactly as ``model`` until it learns to read them."""
    if model.config.correction_maps and model.config.correction_head >= head:
        return model
    wide = IOGMobileNetwork(replace(model.config, correction_maps=True, correction_head=head))
    state = model.state_dict()
    first = "backbone.features.0.0.weight"
    weight = torch.zeros(wide.get_parameter(first).shape, dtype=state[first].dtype)
    weight[:, : state[first].shape[1]] = state[first]
    state[first] = weight
    missing, unexpected = wide.load_state_dict(state, strict=False)
    if unexpected or any(not key.startswith("correction_head.") for key in missing):
        raise ValueError(f"cannot widen {model.arch}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    wide.card = dict(getattr(model, "card", None) or {})
    return wide.train(model.training)


def with_correction_input_size(model: IOGMobileNetwork, size: int | None) -> IOGMobileNetwork:
    """A copy of ``model`` (weights, card and mode; folded or not) whose samples with a correction
    click run at ``size`` (None: at its ``input_size``, as its first clicks)."""
    sized = copy.deepcopy(model)
    sized.config = replace(model.config, correction_input_size=size)
    return sized
