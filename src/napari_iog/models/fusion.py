"""Inference-only speed-up: fold each BatchNorm into the convolution before it.

In eval mode BN is a per-channel affine map, so conv -> BN equals one convolution with a
scaled weight and a bias. The folded copy computes the same function up to float rounding
and skips the BN kernels and, under autocast, the dtype copies around them. It is for
inference only: it cannot be trained or saved as a checkpoint of the original layout.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is None:
            conv.bias = nn.Parameter(bias.clone())
        else:
            conv.bias.mul_(scale).add_(bias)


def _pairs(module: nn.Module):
    """(parent, conv name, bn name) for every conv directly followed by its BN."""
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        for a, b in zip(names, names[1:]):
            if isinstance(children[a], nn.Conv2d) and isinstance(children[b], nn.BatchNorm2d):
                yield module, a, b
    else:
        for name, child in children.items():
            if isinstance(child, nn.Conv2d) and name.startswith("conv"):
                bn_name = "bn" + name[len("conv"):]
                if isinstance(children.get(bn_name), nn.BatchNorm2d):
                    yield module, name, bn_name


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every conv -> BN pair folded into the conv."""
    fused = copy.deepcopy(model).eval()
    for module in list(fused.modules()):
        for parent, conv_name, bn_name in list(_pairs(module)):
            conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
            if conv.out_channels != bn.num_features:
                continue
            _fold(conv, bn)
            setattr(parent, bn_name, nn.Identity())
    return fused
