"""ResNet trunks in plain torch.

Two layouts live here:

* :class:`ResNet` follows torchvision's module layout and parameter names
  (``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``layer4``), with the stride on the 3x3
  convolution, so an ImageNet state_dict made by torchvision loads into it unchanged
  (its ``fc`` entries are dropped). Dilation and multi-grid are supported so that IOG
  can run layer4 at output stride 16.
* :class:`CaffeResNet` is the DeepLab-v2 "Caffe-style" ResNet that DEXTR uses: the stride
  sits on the first 1x1 convolution and every layer has a downsample branch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# name -> (block kind, blocks per layer)
TRUNK_LAYOUTS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}


def trunk_channels(name: str) -> tuple[int, int, int, int]:
    """Output channels of layer1..layer4 for a trunk name."""
    if name not in TRUNK_LAYOUTS:
        raise ValueError(f"unknown trunk {name!r}; known: {', '.join(TRUNK_LAYOUTS)}")
    expansion = 4 if TRUNK_LAYOUTS[name][0] == "bottleneck" else 1
    return tuple(c * expansion for c in (64, 128, 256, 512))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual block (expansion 4).

    torchvision's (ResNet v1.5) puts the stride on the 3x3 convolution; the Caffe/DeepLab-v2
    variant DEXTR uses (``stride_in_1x1=True``) puts it on the first 1x1. Parameter names
    are the same in both.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, stride_in_1x1: bool = False):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=s1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=s3, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision-layout ResNet trunk returning the four stage outputs.

    ``strides`` and ``dilations`` are per layer; ``multi_grid`` multiplies the dilation of
    the successive blocks of layer4 (DeepLab-v3's multi-grid), cycling if layer4 has more
    blocks than entries. IOG uses strides (1, 2, 2, 1), dilations (1, 1, 1, 2) and
    multi-grid (1, 2, 4): layer4 then runs at 1/16 with dilations 2, 4, 8.
    """

    def __init__(self, name: str = "resnet101", in_channels: int = 3,
                 strides: Sequence[int] = (1, 2, 2, 1), dilations: Sequence[int] = (1, 1, 1, 2),
                 multi_grid: Sequence[int] = (1, 2, 4)):
        super().__init__()
        self.out_channels = trunk_channels(name)
        kind, layers = TRUNK_LAYOUTS[name]
        block = Bottleneck if kind == "bottleneck" else BasicBlock
        self.name = name
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], strides[0], [dilations[0]] * layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], strides[1], [dilations[1]] * layers[1])
        self.layer3 = self._make_layer(block, 256, layers[2], strides[2], [dilations[2]] * layers[2])
        grid = [dilations[3] * multi_grid[i % len(multi_grid)] for i in range(layers[3])]
        self.layer4 = self._make_layer(block, 512, layers[3], strides[3], grid)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int,
                    block_dilations: Sequence[int]) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, block_dilations[0], downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, d) for d in block_dilations[1:]]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (layer4, layer3, layer2, layer1), deepest first, as IOG consumes them."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c4, c3, c2, c1


class CaffeResNet(nn.Module):
    """DEXTR's ResNet-101 trunk at output stride 8 (layer3 dilation 2, layer4 dilation 4).

    Every layer carries a downsample branch, as in the published DEXTR weights. The max-pool
    uses floor rounding so a 512x512 input gives 64x64 features.
    """

    def __init__(self, in_channels: int = 4, layers: Sequence[int] = (3, 4, 23, 3)):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=False)
        self.layer1 = self._make_layer(64, layers[0], stride=1, dilation=1)
        self.layer2 = self._make_layer(128, layers[1], stride=2, dilation=1)
        self.layer3 = self._make_layer(256, layers[2], stride=1, dilation=2)
        self.layer4 = self._make_layer(512, layers[3], stride=1, dilation=4)

    def _make_layer(self, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * 4),
        )
        layers = [Bottleneck(self.inplanes, planes, stride, dilation, downsample, stride_in_1x1=True)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, 1, dilation, stride_in_1x1=True) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def load_imagenet_weights(trunk: ResNet, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a torchvision ImageNet state_dict into ``trunk``.

    ``fc.*`` entries are dropped. When the trunk takes more input channels than the
    checkpoint (IOG's 5 = RGB + two guidance maps), the extra ``conv1`` input channels are
    zero-initialised, as in the published training recipe, so the trunk starts out as the
    ImageNet network on the RGB part.
    """
    state = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    load_trunk_state(trunk, state, "conv1.weight", f"ImageNet weights do not match trunk {trunk.name}")


def load_trunk_state(trunk: nn.Module, state: dict[str, torch.Tensor], first_conv: str, refusal: str) -> None:
    """Load an ImageNet ``state`` (in the trunk's names, classifier dropped) into ``trunk``.

    Input channels the trunk has beyond the checkpoint's (IOG's two guidance maps) start at zero,
    as in the published recipe, so the trunk starts as the ImageNet network on the image. A key
    missing or left over raises ``ValueError(refusal: ...)``.
    """
    weight, target = state.get(first_conv), trunk.get_parameter(first_conv)
    if weight is not None and weight.shape[1] < target.shape[1]:
        widened = torch.zeros(target.shape, dtype=weight.dtype)
        widened[:, : weight.shape[1]] = weight
        state[first_conv] = widened
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{refusal}: missing {missing[:5]}, unexpected {unexpected[:5]}")
