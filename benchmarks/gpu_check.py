"""Everything a lent GPU machine should prove, in one run of a few minutes (see gpu_check.sh).

Needs only torch, numpy, scipy and scikit-image (no napari, no OpenCV, no pytest, no network):
the package is imported from ``src/``. Steps, each timed and reported even if another fails:

1. the device: name, memory, bf16 support;
2. the CUDA checks: the default model on CUDA against the CPU (mask IoU), bf16 against
   float32 on CUDA for the default model on several objects (mean and min IoU);
3. per-click latency, end to end (numpy image in, mask out), median of ``--clicks`` clicks, for
   the default model and for ResNet-101 IOG (random weights: timings do not depend on them),
   in float32 and at the default precision; a correction click for the refinement network;
4. batched throughput (objects per second) with ``predict_batch`` at several batch sizes;
5. a 1-GPU DistributedDataParallel training smoke run (torch.distributed.run, NCCL, 5 steps).

Writes one JSON (``--out``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from timing import median_seconds  # noqa: E402  (benchmarks/timing.py, beside this script)

from napari_iog import zoo  # noqa: E402
from napari_iog.evaluation import iou  # noqa: E402
from napari_iog.models import build_model  # noqa: E402
from napari_iog.predictor import IOGPredictor  # noqa: E402


def scene(seed: int, shape=(768, 1024)):
    """A photo-like image with elliptical objects, and their (corners, inside) prompts."""
    rng = np.random.default_rng(seed)
    image = rng.normal(110, 25, (*shape, 3))
    prompts = []
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    for _ in range(12):
        r, c = rng.integers(80, shape[0] - 80), rng.integers(80, shape[1] - 80)
        a, b = rng.integers(25, 75, size=2)
        inside = ((rows - r) / a) ** 2 + ((cols - c) / b) ** 2 <= 1
        image[inside] = rng.uniform(20, 235, 3)
        prompts.append({"corners": [(int(r - a), int(c - b)), (int(r + a), int(c + b))], "inside": [(int(r), int(c))]})
    return np.clip(image, 0, 255).astype(np.uint8), prompts


DEVICE = "cuda"


def check_device() -> dict:
    if DEVICE == "cpu":
        return {"name": "cpu (a dry run of this script)", "torch": torch.__version__}
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "bf16": torch.cuda.is_bf16_supported(), "torch": torch.__version__, "cuda": torch.version.cuda}


def check_agreement() -> dict:
    image, prompts = scene(1)
    cpu = IOGPredictor(device="cpu", precision="float32", warmup=False)
    exact = IOGPredictor(device=DEVICE, precision="float32", warmup=False)
    fast = IOGPredictor(device=DEVICE, precision="auto")
    cpu_vs_cuda, bf16_vs_fp32 = [], []
    for p in prompts:
        a = cpu.predict(image, **p).mask
        b = exact.predict(image, **p).mask
        c = fast.predict(image, **p).mask
        cpu_vs_cuda.append(iou(a, b))
        bf16_vs_fp32.append(iou(b, c))
    return {"objects": len(prompts), "cuda_vs_cpu_min_iou": min(cpu_vs_cuda),
            "auto_precision": fast.precision, "auto_vs_float32_mean_iou": float(np.mean(bf16_vs_fp32)),
            "auto_vs_float32_min_iou": min(bf16_vs_fp32), "warmup_check": getattr(fast, "warmup_check", None)}


def networks():
    yield "napari-iog-default", zoo.DEFAULT_MODEL
    yield "iog-resnet101", build_model("iog-resnet101", seed=0)
    yield "iog-refine-resnet101", build_model("iog-refine-resnet101", seed=0)


def check_latency(clicks: int, batches: list[int]) -> dict:
    image, prompts = scene(2)
    out = {}
    for name, model in networks():
        for precision in ("float32", "auto"):
            predictor = IOGPredictor(model, device=DEVICE, precision=precision)
            k = iter(range(10**9))

            def first(predictor=predictor, k=k):
                predictor.clear_cache()     # a first click: nothing cached for the object
                predictor.predict(image, **prompts[next(k) % len(prompts)])

            row = {"precision": predictor.precision, "first_click_ms": 1000 * median_seconds(first, clicks)}
            if predictor.is_refine:
                p = prompts[0]
                predictor.predict(image, **p)
                row["correction_ms"] = 1000 * median_seconds(
                    lambda: predictor.predict(image, **p, positive=[p["inside"][0]]), clicks)
            for batch in batches:
                many = (prompts * (batch // len(prompts) + 1))[:batch]
                start = time.perf_counter()
                predictor.predict_batch(image, many, batch_size=batch)
                row[f"objects_per_s_batch{batch}"] = batch / (time.perf_counter() - start)
            out[f"{name} {precision}"] = row
            print(f"| {name} | {row['precision']} | {row['first_click_ms']:.1f} ms | "
                  f"{row.get('correction_ms', float('nan')):.1f} ms | "
                  f"{row[f'objects_per_s_batch{batches[-1]}']:.0f} objects/s |", flush=True)
    return out


def ddp_worker(out_dir: str, device: str) -> int:
    """Run under torch.distributed.run: 5 DDP steps of the default model on synthetic objects."""
    from napari_iog.training import TrainConfig, train
    from napari_iog.training.data import pairs_from_arrays

    image, prompts = scene(3, (256, 256))
    labels = np.zeros(image.shape[:2], np.int32)
    rows, cols = np.mgrid[:256, :256]
    for i in range(6):
        labels[((rows - 40 - 30 * i) ** 2 + (cols - 128) ** 2) < 300] = i + 1
    summary = train(TrainConfig(base=zoo.DEFAULT_MODEL, out=str(Path(out_dir) / "ddp.pt"), steps=5,
                                batch_size=2, device=device, val_fraction=0.0, freeze_bn=True),
                    pairs_from_arrays(image, labels))
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out_dir, "ddp.json").write_text(json.dumps(summary, default=str))
    return 0


def check_ddp() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--standalone",
                   __file__, "--ddp-worker", tmp, "--device", DEVICE]
        done = subprocess.run(command, capture_output=True, text=True, timeout=240,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        if done.returncode != 0:
            return {"ok": False, "stderr": done.stderr[-2000:]}
        summary = json.loads(Path(tmp, "ddp.json").read_text())
        return {"ok": summary["status"] == "complete" and summary["world_size"] == 1,
                "steps": summary["steps"], "seconds": summary["seconds"], "status": summary["status"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu-check.json")
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--batches", default="16,64,128", help="batch sizes of the throughput runs")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself, for its tests")
    parser.add_argument("--ddp-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker:
        return ddp_worker(args.ddp_worker, args.device)
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: this check is for a GPU machine (it stays ready until one is lent)")
        return 2
    torch.backends.cudnn.benchmark = True
    batches = [int(b) for b in args.batches.split(",")]
    results, failed = {}, []
    print("| network | precision | first click | correction | batched |\n| --- | --- | --- | --- | --- |")
    for name, step in (("device", check_device), ("agreement", check_agreement),
                       ("latency", lambda: check_latency(args.clicks, batches)), ("ddp", check_ddp)):
        start = time.perf_counter()
        try:
            results[name] = step()
        except Exception:   # one failing step must not hide the others' figures
            results[name] = {"error": traceback.format_exc()[-2000:]}
            failed.append(name)
        results[name + "_seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps({k: v for k, v in results.items() if k != "latency"}, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
