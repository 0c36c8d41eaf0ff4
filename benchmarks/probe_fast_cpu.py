"""Candidates for a fast float32-only CPU path, measured on one network (issue 18's choice).

    pip install onnxruntime onnx onnxscript      # not napari-iog dependencies
    python3 benchmarks/probe_fast_cpu.py [--arch iog-resnet101] [--threads 2] [--out FILE]

One 512 x 512 forward pass of the network (random weights: timings do not depend on them),
median of 4, each candidate against the folded float32 network in torch:
  * torch, BatchNorm folded, channels_last, float32 (what `precision="float32"`-only CPUs run);
  * ONNX Runtime, float32, the folded network exported with torch.onnx (dynamo exporter);
  * ONNX Runtime, int8 static quantisation (QDQ, per-channel weights, uint8 activations),
    calibrated on ``--calibration`` random frames.
Mask agreement with the torch float32 network is reported too, but on random weights it says
little: the published weights are needed to judge int8's masks. Export and quantisation times
are what a first start would cost before caching.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds

from napari_iog.evaluation import iou
from napari_iog.models import build_model
from napari_iog.models.precision import fuse_conv_bn


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="iog-resnet101")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError:
        print("needs onnxruntime, onnx and onnxscript (pip install onnxruntime onnx onnxscript)")
        return 2
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = (rng.random((1, 5, 512, 512)) * 255).astype(np.float32)
    model = fuse_conv_bn(build_model(args.arch, seed=0)).eval()
    folded = model.to(memory_format=torch.channels_last)
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch_s = median_seconds(lambda: folded(xt))
        exact = folded(xt).numpy()
    rows = {"torch folded float32": {"seconds": torch_s}}
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, int8_path = Path(tmp, "net.onnx"), Path(tmp, "net-int8.onnx")
        start = time.perf_counter()
        torch.onnx.export(model, (torch.from_numpy(x),), str(fp32_path), input_names=["x"], output_names=["y"],
                          dynamo=True)
        export_s = time.perf_counter() - start

        class Frames(CalibrationDataReader):
            def __init__(self):
                self.frames = iter({"x": (rng.random(x.shape) * 255).astype(np.float32)}
                                   for _ in range(args.calibration))

            def get_next(self):
                return next(self.frames, None)

        start = time.perf_counter()
        quantize_static(str(fp32_path), str(int8_path), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        quantize_s = time.perf_counter() - start
        for name, path, extra in (("onnxruntime float32", fp32_path, {"export_s": export_s}),
                                  ("onnxruntime int8 (QDQ, static)", int8_path, {"quantize_s": quantize_s})):
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            seconds = median_seconds(lambda session=session: session.run(None, {"x": x}))
            out = session.run(None, {"x": x})[0]
            rows[name] = {"seconds": seconds, "vs_torch_float32": seconds / torch_s,
                          "mask_iou_vs_torch_float32_random_weights": iou(out > 0, exact > 0), **extra}
    result = {"arch": args.arch, "threads": args.threads, "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "onnxruntime": ort.__version__, "date": time.strftime("%Y-%m-%d"),
              "rows": rows}
    print("| backend | one forward | vs torch float32 | mask IoU (random weights) |\n| --- | --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | {row['seconds']:.3f} s | {row.get('vs_torch_float32', 1.0):.2f}x | "
              f"{row.get('mask_iou_vs_torch_float32_random_weights', 1.0):.4f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
