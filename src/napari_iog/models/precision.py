"""Precision and the inference fast path: which dtype to run in, the folded network, and the
rule that decides whether the fast path may replace the exact float32 network.

The fast path folds each BatchNorm into the convolution before it (in eval mode BN is a
per-channel affine map, so conv -> BN is one convolution with a scaled weight and a bias; the
folded copy skips the BN kernels and, under autocast, the dtype copies around them), runs in
channels_last and, where the hardware is fast at it, under bf16/fp16 autocast. It is for
inference only: the folded copy cannot be trained or saved in the original layout.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .heads import FineNet

#: "int8": a quantized ONNX Runtime network on the CPU (models/int8.py)
PRECISIONS = ("auto", "float32", "bfloat16", "float16", "int8")
#: the fast path is kept only if, on the warm-up object, its mask agrees with the exact one
MIN_MASK_IOU = 0.98
MAX_MEAN_ABS_DP = 0.02


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16: CPUs where bf16 convolutions beat float32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def choose_precision(precision: str, device: torch.device, bf16_on_cpu: bool = True) -> str:
    """``"auto"`` -> bf16 (fp16 on CUDA without bf16) where it is fast, else float32.
    ``bf16_on_cpu=False``: a network whose bf16 masks are not close enough to float32's on a CPU
    (see the network's ``bf16_on_cpu``) stays in float32 there."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision 'int8' runs on the CPU (ONNX Runtime), not on {device.type}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.type == "cpu" and bf16_on_cpu and cpu_has_fast_bf16():
        return "bfloat16"
    return "float32"


def autocast(precision: str, device: torch.device):
    if precision not in ("bfloat16", "float16"):       # float32, and int8's torch copy before export
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _conv_bn_pairs(module: nn.Module):
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
        for parent, conv_name, bn_name in list(_conv_bn_pairs(module)):
            conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
            if conv.out_channels != bn.num_features:
                continue
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(parent, bn_name, nn.Identity())
    return fused


def fast_copy(model: nn.Module) -> nn.Module:
    """The folded, channels_last copy the fast path runs (the caller's module is left as it is),
    with FineNet's 1x1 projections moved before its upsampling (``heads.FineNet``)."""
    fast = fuse_conv_bn(model)
    for module in fast.modules():
        if isinstance(module, FineNet):
            module.project_before_upsampling = True
    return fast.to(memory_format=torch.channels_last)


@dataclass
class FastPathCheck:
    """How the fast path compared with the exact network on the warm-up object."""

    precision: str
    iou: float
    mean_abs_dp: float
    kept: bool

    @classmethod
    def compare(cls, precision: str, fast: torch.Tensor, exact: torch.Tensor) -> FastPathCheck:
        """Probabilities of both paths on one input -> whether the fast path may be used."""
        a, b = fast > 0.5, exact > 0.5
        union = int((a | b).sum())
        iou = 1.0 if union == 0 else int((a & b).sum()) / union
        mean_dp = float((fast - exact).abs().mean())
        return cls(precision, iou, mean_dp, iou >= MIN_MASK_IOU and mean_dp <= MAX_MEAN_ABS_DP)

    def to_dict(self) -> dict:
        return asdict(self)
