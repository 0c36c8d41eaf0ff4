"""Candidates for a fast float32-only CPU path, measured on one network (issue 18's choice).

    pip install "napari-iog[fast]"
    python3 benchmarks/probe_fast_cpu.py [--arch iog-resnet101] [--threads 2] [--out FILE]
    python3 benchmarks/probe_fast_cpu.py --weights FILE [--objects 50] [--data-root ../shared/data]

One 512 x 512 forward pass of the network, median of 4, each candidate against the folded
float32 network in torch:
  * torch, BatchNorm folded, channels_last, float32 (what `precision="float32"`-only CPUs run);
  * ONNX Runtime, float32, the folded network exported with torch.onnx (dynamo exporter);
  * ONNX Runtime, int8 static quantisation (QDQ, per-channel weights, uint8 activations),
    calibrated on frames of scikit-image's sample images (a centred and an off-centre box
    each; none of the benchmark images).
With ``--weights`` (a trained network) it also reports what decides whether a candidate may be
a default: per-object mask agreement with the exact float32 network on GrabCut's objects (the
three clicks of the evaluation protocol, masks in the 512 frame). Without it the network has
random weights, whose masks say nothing; the timings do not depend on the weights.
Export and quantisation times are what a first start costs before caching.
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
from napari_iog.evaluation.clicks import initial_clicks
from napari_iog.evaluation.datasets import load_dataset
from napari_iog.models import build_model, load_model
from napari_iog.models.onnx_runtime import export_onnx, missing_packages
from napari_iog.models.precision import fuse_conv_bn
from napari_iog.predictor import IOGPredictor

#: scikit-image sample images that ship with the package (no download)
CALIBRATION_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "cell", "camera",
                      "coins", "hubble_deep_field", "retina")


def calibration_frames(predictor: IOGPredictor) -> list[np.ndarray]:
    import skimage.data

    frames = []
    for name in CALIBRATION_IMAGES:
        image = getattr(skimage.data, name)()
        h, w = image.shape[:2]
        for r0, c0, r1, c1, r, c in ((0.2, 0.2, 0.8, 0.8, 0.5, 0.5), (0.1, 0.3, 0.6, 0.9, 0.35, 0.6)):
            x, _, _ = predictor.network_input(image, [(r0 * h, c0 * w), (r1 * h, c1 * w)], (r * h, c * w))
            frames.append(x[None].numpy())
    return frames


def object_frames(data_root: Path, predictor: IOGPredictor, n: int) -> list[np.ndarray]:
    frames = []
    for instance in load_dataset("grabcut", data_root)[:n]:
        clicks = initial_clicks(instance.mask)
        x, _, _ = predictor.network_input(instance.image, clicks["corners"], clicks["inside"])
        frames.append(x[None].numpy())
    return frames


def agreement(run, frames: list[np.ndarray], exact: list[np.ndarray]) -> dict:
    ious = np.array([iou(run(x) > 0, e > 0) for x, e in zip(frames, exact)])
    return {"objects": len(ious), "mean_iou": float(ious.mean()), "min_iou": float(ious.min()),
            "below_0.98": int((ious < 0.98).sum())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="iog-resnet101")
    parser.add_argument("--weights", type=Path, default=None, help="a trained network: measure mask agreement")
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if missing_packages():
        print(f"needs {', '.join(missing_packages())}: pip install \"napari-iog[fast]\"")
        return 2
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    torch.set_num_threads(args.threads)
    network = load_model(args.weights) if args.weights else build_model(args.arch, seed=0)
    predictor = IOGPredictor(network, device="cpu", precision="float32", warmup=False)
    model = fuse_conv_bn(predictor.model).eval()
    folded = model.to(memory_format=torch.channels_last)
    calibration = calibration_frames(predictor)
    x = calibration[0]
    with torch.inference_mode():
        torch_s = median_seconds(lambda: folded(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)))
    rows = {"torch folded float32": {"seconds": torch_s}}
    measured = args.weights is not None and (args.data_root / "grabcut").is_dir()
    if measured:
        frames = object_frames(args.data_root, predictor, args.objects)
        with torch.inference_mode():
            exact = [predictor.model(torch.from_numpy(f)).numpy() for f in frames]
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, int8_path = Path(tmp, "net.onnx"), Path(tmp, "net-int8.onnx")
        start = time.perf_counter()
        fp32_path.write_bytes(export_onnx(model, torch.from_numpy(x)))
        export_s = time.perf_counter() - start

        class Frames(CalibrationDataReader):
            def __init__(self):
                self.frames = iter({"x": frame} for frame in calibration)

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
            rows[name] = {"seconds": seconds, "vs_torch_float32": seconds / torch_s, **extra}
            if measured:
                rows[name]["vs_exact_float32"] = agreement(lambda f, s=session: s.run(None, {"x": f})[0],
                                                           frames, exact)
    result = {"network": str(args.weights or args.arch), "threads": args.threads,
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "onnxruntime": ort.__version__, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    print("| backend | one forward | vs torch float32 | masks vs exact float32 (GrabCut) |\n| --- | --- | --- | --- |")
    for name, row in rows.items():
        a = row.get("vs_exact_float32")
        masks = "n/a" if a is None else (f"mean IoU {a['mean_iou']:.4f}, min {a['min_iou']:.4f}, "
                                         f"{a['below_0.98']}/{a['objects']} below 0.98")
        print(f"| {name} | {row['seconds']:.3f} s | {row.get('vs_torch_float32', 1.0):.2f}x | {masks} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
