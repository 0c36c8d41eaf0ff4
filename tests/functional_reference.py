"""An independent, functional transcription of the published forward passes.

Written from shared/spec/IOG-SPEC.md against the raw state_dict (no nn.Module), with the
published fixed sizes (128x128 heads, 512x512 output). The package's modules must compute the
same numbers; this file exists only to check that.
"""

import torch
import torch.nn.functional as F

relu = F.relu


def bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                        sd[p + ".bias"], False, 0.0, 1e-5)


def conv(x, sd, p, stride=1, padding=0, dilation=1):
    return F.conv2d(x, sd[p + ".weight"], sd.get(p + ".bias"), stride, padding, dilation)


def up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _torchvision_bottleneck(x, sd, p, stride, dilation):
    out = relu(bn(conv(x, sd, p + ".conv1"), sd, p + ".bn1"))
    out = relu(bn(conv(out, sd, p + ".conv2", stride, dilation, dilation), sd, p + ".bn2"))
    out = bn(conv(out, sd, p + ".conv3"), sd, p + ".bn3")
    if p + ".downsample.0.weight" in sd:
        x = bn(conv(x, sd, p + ".downsample.0", stride), sd, p + ".downsample.1")
    return relu(out + x)


def iog_backbone(x, sd):
    x = relu(bn(conv(x, sd, "backbone.conv1", 2, 3), sd, "backbone.bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    feats = []
    plan = [(1, 1, [1] * 3), (2, 2, [1] * 4), (3, 2, [1] * 23), (4, 1, [2, 4, 8])]
    for layer, stride, dilations in plan:
        for b, d in enumerate(dilations):
            x = _torchvision_bottleneck(x, sd, f"backbone.layer{layer}.{b}", stride if b == 0 else 1, d)
        feats.append(x)
    return feats[3], feats[2], feats[1], feats[0]


def psp(x, sd, p):
    size = x.shape[-2:]
    priors = []
    for i, s in enumerate((1, 2, 3, 6)):
        y = F.adaptive_avg_pool2d(x, (s, s))
        priors.append(up(relu(bn(conv(y, sd, f"{p}.stages.{i}.1"), sd, f"{p}.stages.{i}.2")), size))
    out = relu(bn(conv(torch.cat(priors + [x], 1), sd, p + ".bottleneck.0"), sd, p + ".bottleneck.1"))
    out = relu(out)
    if p + ".final.weight" in sd:
        out = conv(out, sd, p + ".final")
    return out


def _fine_bottleneck(x, sd, p):
    out = relu(bn(conv(x, sd, p + ".conv1"), sd, p + ".bn1"))
    out = relu(bn(conv(out, sd, p + ".conv2", 1, 1), sd, p + ".bn2"))
    out = bn(conv(out, sd, p + ".conv3"), sd, p + ".bn3")
    return relu(out + bn(conv(x, sd, p + ".downsample.0"), sd, p + ".downsample.1"))


def iog_heads(deep, c3, c2, c1, sd):
    """psp4 -> Coarse_net -> Fine_net; returns (fine, coarse list), all 512x512."""
    lat = lambda x, i: relu(bn(conv(x, sd, f"Coarse_net.laterals.{i}.0"), sd, f"Coarse_net.laterals.{i}.1"))
    ups = lambda x, i: bn(conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
                               sd, f"Coarse_net.upsamples.{i}.1"), sd, f"Coarse_net.upsamples.{i}.2")
    f0 = lat(psp(deep, sd, "psp4"), 0)
    f1 = lat(c3, 1) + f0
    f2 = lat(c2, 2) + ups(f1, 1)
    f3 = lat(c1, 3) + ups(f2, 2)
    coarse = []
    for i, f in enumerate((f0, f1, f2, f3)):
        p = f"Coarse_net.predict.{i}"
        y = relu(bn(conv(f, sd, p + ".0"), sd, p + ".1"))
        y = up(conv(y, sd, p + ".3", 1, 1), (128, 128))
        coarse.append(up(bn(y, sd, p + ".5"), (512, 512)))
    cascaded = []
    for i, f in enumerate((f0, f1, f2, f3)):
        for b in range(3 - i):
            f = _fine_bottleneck(f, sd, f"Fine_net.cascade.{i}.{b}")
        cascaded.append(up(f, (128, 128)))
    y = _fine_bottleneck(torch.cat(cascaded, 1), sd, "Fine_net.final_predict.0")
    y = bn(conv(y, sd, "Fine_net.final_predict.1", 1, 1), sd, "Fine_net.final_predict.2")
    return up(y, (512, 512)), coarse


def iog_forward(x, sd):
    c4, c3, c2, c1 = iog_backbone(x, sd)
    return iog_heads(c4, c3, c2, c1, sd)


def iog_refine_forward(x, clicks, sd):
    c4, c3, c2, c1 = iog_backbone(x, sd)
    y = clicks
    for i in (0, 3, 6, 9):
        y = relu(bn(conv(y, sd, f"iog_points.{i}", 2, 1), sd, f"iog_points.{i + 1}"))
    y = relu(bn(conv(y, sd, "iog_points.12"), sd, "iog_points.13"))
    return iog_heads(torch.cat((c4, y), 1), c3, c2, c1, sd)


def dextr_forward(x, sd):
    x = relu(bn(conv(x, sd, "conv1", 2, 3), sd, "bn1"))
    x = F.max_pool2d(x, 3, 2, 1, ceil_mode=False)
    for layer, blocks, stride, dilation in [(1, 3, 1, 1), (2, 4, 2, 1), (3, 23, 1, 2), (4, 3, 1, 4)]:
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            s = stride if b == 0 else 1
            out = relu(bn(conv(x, sd, p + ".conv1", s), sd, p + ".bn1"))
            out = relu(bn(conv(out, sd, p + ".conv2", 1, dilation, dilation), sd, p + ".bn2"))
            out = bn(conv(out, sd, p + ".conv3"), sd, p + ".bn3")
            if p + ".downsample.0.weight" in sd:
                x = bn(conv(x, sd, p + ".downsample.0", s), sd, p + ".downsample.1")
            x = relu(out + x)
    return up(psp(x, sd, "layer5"), (512, 512))
