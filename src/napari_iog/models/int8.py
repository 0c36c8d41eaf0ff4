"""int8 networks for CPUs: an ONNX export quantized by ONNX Runtime (static, QDQ, weights per
channel), calibrated on the inputs :mod:`napari_iog.int8_calibration` makes.

Why: a first click of the default costs 28-30 ms of network on one Zen 4 core in float32 and
~18 ms in int8, which is what lets a two-core server answer twenty annotators
(``benchmarks/serve_load.py``); what it costs in masks is measured in docs/benchmarks.md. The
quantized graph is cached beside its float32 export, so the calibration (seconds) runs once a network.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: bump when the calibration or the quantization changes, so that cached int8 graphs are made again
CALIBRATION_VERSION = 2
#: the network's first convolutions stay float32: on DSB2018's small nuclei an all-int8 default
#: fell from mIoU@3 0.816 to 0.782, with the first four (the stem and first block, at half the
#: input's resolution) in float32 to 0.814, for 17.7 instead of 15.4 ms a pass (28.5 float32; one
#: Zen 4 thread)
FLOAT32_CONVS = 4


def quantized_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}-int8c{CALIBRATION_VERSION}.onnx")


def quantize(path: Path, inputs: Callable[[], list[np.ndarray]]) -> Path:
    """The int8 graph of the float32 export at ``path``: the cached one when there is one, else
    one calibrated on what ``inputs()`` gives, written atomically beside it."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = quantized_path(path)
    if out.exists():
        os.utime(out)           # recently used: pruning the cache keeps it
        return out

    class Inputs(CalibrationDataReader):
        def __init__(self):
            self._inputs = iter(inputs())

        def get_next(self):
            x = next(self._inputs, None)
            return None if x is None else {"x": x}

    with tempfile.TemporaryDirectory(dir=path.parent) as work:
        prepared, quantized = Path(work) / "prepared.onnx", Path(work) / "int8.onnx"
        # the exporter's graph has shapes symbolic inference cannot finish; ONNX's own suffices
        quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
        convs = [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv"]
        # min-max ranges: percentiles gave the same GrabCut mIoU@3 (0.879) but keep every
        # activation of every input in memory (9 GB for the default's two graphs)
        quantize_static(str(prepared), str(quantized), Inputs(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=convs[:FLOAT32_CONVS])
        quantized.replace(out)
    log.info("made the int8 network %s", out)
    return out
