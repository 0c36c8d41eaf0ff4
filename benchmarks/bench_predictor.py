"""Per-click latency of IOGPredictor, end to end (numpy image in, mask out), on this machine.

    python3 benchmarks/bench_predictor.py [--device cpu] [--threads 2] [--objects 8]
                                          [--weights IOG_PASCAL_SBD.pth] [--arch NAME ...] [--out FILE]

For each network it measures, on the same images and clicks:
  * reference: the authors' protocol (OpenCV crop/resize/maps/paste, tests/opencv_protocol.py)
    driving the same network in float32: what the published code costs per click;
  * ours at precision="float32" and at the default precision ("auto");
  * for refinement networks, a correction click (cached backbone) against a first click;
  * batched throughput (predict_batch, objects per second);
  * the mask clean-up a user's mask gets (postprocess: only the clicked pieces inside the box),
    timed on its own: the figures above are the network's output, as the reference's are.
Mask agreement of the default precision against float32 is reported as mean IoU.

Images and clicks: GrabCut images from ../shared/data/grabcut when present (box = the object's
tight box, inside = its most interior pixel), else synthetic scenes. Without --weights the
networks have random weights whose BatchNorm statistics are calibrated on synthetic inputs,
so that their masks vary over the image; timings do not depend on the weights.
Results: benchmarks/results/predictor-<device>.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the OpenCV reference protocol and the calibration

import opencv_protocol  # noqa: E402
from conftest import calibrate, synthetic_scene  # noqa: E402

from napari_iog import geometry as G  # noqa: E402
from napari_iog.models import build_model, load_model, precision  # noqa: E402
from napari_iog.predictor import IOGPredictor  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "grabcut"


def load_objects(n: int):
    """[(image RGB uint8, corners, inside)] for n objects."""
    objects = []
    if DATA.exists():
        from skimage import io

        for mask_path in sorted((DATA / "boundary_GT").glob("*.bmp"))[:n]:
            stem = mask_path.stem
            image_path = next((p for p in (DATA / "data_GT").glob(stem + ".*")), None)
            if image_path is None:
                continue
            image = io.imread(image_path)
            image = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]
            mask = io.imread(mask_path)
            mask = (mask[..., 0] if mask.ndim == 3 else mask) == 255  # 128 = ignore band
            box = G.mask_box(mask)
            objects.append((image, ((box.r0, box.c0), (box.r1, box.c1)), G.most_interior_point(mask)))
        source = f"GrabCut ({len(objects)} images)"
    if not objects:
        for i in range(n):
            image, mask = synthetic_scene(480, 640, seed=i, center=(240, 320), radii=(120, 200))
            box = G.mask_box(mask)
            objects.append((image, ((box.r0, box.c0), (box.r1, box.c1)), G.most_interior_point(mask)))
        source = f"synthetic ({n} scenes)"
    return objects, source


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def bench_arch(arch, objects, device, weights=None):
    model = load_model(weights) if weights else calibrate(build_model(arch, seed=0))
    arch = model.arch
    # the network's raw masks, as the authors' protocol gives them (no clean-up)
    exact = IOGPredictor(model, device=device, precision="float32", postprocess=False)
    fast = IOGPredictor(load_model(weights) if weights else model_copy(model, arch), device=device)
    row = {"arch": arch, "precision": fast.precision, "backend": fast.backend,
           "warmup_check": getattr(fast, "warmup_check", None)}
    ref_t, exact_t, fast_t, ious, ref_ious, cleanup_t = [], [], [], [], [], []
    cpu_model = model.to("cpu").float() if device.type == "cpu" else None
    for image, corners, inside in objects:
        if cpu_model is not None and not arch.startswith("iog-refine"):
            (ref_prob, _), t = timed(
                lambda: opencv_protocol.reference_probability(cpu_model, image, corners, inside), device)
            ref_t.append(t)
        r_exact, t = timed(lambda: exact.predict(image, corners=corners, inside=inside), device)
        exact_t.append(t)
        if cpu_model is not None and not arch.startswith("iog-refine"):
            ref_ious.append(iou(r_exact.mask, ref_prob > 0.5))
        fast.clear_cache()
        r_fast, t = timed(lambda: fast.predict(image, corners=corners, inside=inside), device)
        fast_t.append(t)
        _, t = timed(lambda: r_fast.crop_mask, device)      # cached_property: computed once, here
        cleanup_t.append(t)
        ious.append(iou(r_fast.raw_crop_mask, r_exact.crop_mask))      # same crop, both raw
    row.update({
        "reference_s": statistics.median(ref_t) if ref_t else None,
        "ours_float32_s": statistics.median(exact_t),
        "ours_default_s": statistics.median(fast_t),
        "mask_cleanup_s": statistics.median(cleanup_t),
        "iou_default_vs_float32": float(np.mean(ious)),
        "min_iou_default_vs_float32": float(np.min(ious)),
        "iou_ours_vs_reference": float(np.mean(ref_ious)) if ref_ious else None,
    })
    if row["reference_s"]:
        row["default_over_reference"] = row["ours_default_s"] / row["reference_s"]
    # Correction clicks: a positive click near the box's top-left inner corner.
    corr_t = []
    for image, corners, inside in objects:
        (r0, c0), (r1, c1) = corners
        positive = [((r0 + inside[0]) // 2, (c0 + inside[1]) // 2)]
        fast.predict(image, corners=corners, inside=inside)  # first click (fills the cache)
        _, t = timed(lambda: fast.predict(image, corners=corners, inside=inside, positive=positive), device)
        corr_t.append(t)
    row["correction_s"] = statistics.median(corr_t)
    row["correction_over_first"] = row["correction_s"] / row["ours_default_s"]
    # Batched throughput: every object's clicks on its own image, in batches.
    image, corners, inside = objects[0]
    prompts = [dict(corners=corners, inside=inside)] * (32 if device.type == "cuda" else 4)
    fast.predict_batch(image, prompts[:2])
    _, t = timed(lambda: fast.predict_batch(image, prompts), device)
    row["batched_objects_per_s"] = len(prompts) / t
    return row


def model_copy(model, arch):
    copy = build_model(arch)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--weights", default=None, help="a checkpoint to use instead of calibrated random weights")
    parser.add_argument("--out", default=None, help="the JSON to write (benchmarks/results/predictor-DEVICE.json)")
    parser.add_argument("--no-bf16", action="store_true",
                        help="choose precision as on a CPU without fast bf16 (AMX/AVX512-BF16); with "
                             "ONEDNN_MAX_CPU_ISA=AVX2 torch's kernels are those of a CPU without AVX-512 too")
    parser.add_argument("--arch", nargs="*", default=["iog-resnet101", "iog-refine-resnet101", "iog-resnet50",
                                                      "iog-resnet34", "iog-resnet18"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.no_bf16:
        precision.cpu_has_fast_bf16 = lambda: False
    device = torch.device(args.device)
    objects, source = load_objects(args.objects)
    rows = []
    for arch in ([None] if args.weights else args.arch):
        row = bench_arch(arch, objects, device, args.weights)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"device": str(device), "threads": args.threads, "no_bf16": args.no_bf16, "torch": torch.__version__,
              "machine": platform.machine(), "objects": source,
              "weights": args.weights or "random, BatchNorm calibrated on synthetic inputs", "rows": rows}
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"predictor-{device.type}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nobjects: {source}; device {device}, {args.threads} threads, torch {torch.__version__}\n")
    print("| network | reference (authors' protocol, fp32) | ours fp32 | ours default | default runs | "
          "default / reference | mask IoU default vs fp32 | correction click | correction / first | "
          "batched objects/s | "
          "mask clean-up |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    fmt = lambda v, spec=".3f": "n/a" if v is None else format(v, spec)
    for r in rows:
        reference = f"{fmt(r['reference_s'])}{'' if r['reference_s'] is None else ' s'}"
        runs = r["precision"] + ("" if r["backend"] == "torch" else ", " + r["backend"])
        print(f"| `{r['arch']}` | {reference} | {r['ours_float32_s']:.3f} s | {r['ours_default_s']:.3f} s | "
              f"{runs} | {fmt(r.get('default_over_reference'), '.2f')} | {r['iou_default_vs_float32']:.4f} "
              f"(min {r['min_iou_default_vs_float32']:.4f}) | {r['correction_s']:.3f} s | "
              f"{r['correction_over_first']:.2f} | {r['batched_objects_per_s']:.1f} | "
              f"{1000 * r['mask_cleanup_s']:.1f} ms |")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
