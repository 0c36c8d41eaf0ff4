"""Training speed and peak memory of each architecture: optimizer steps per second on real
training samples (512x512, the published loss, AdamW), full network and frozen backbone.

    python3 benchmarks/bench_train.py [--device cpu] [--threads 2] [--batch-size 2] [--steps 3]
    python3 benchmarks/bench_train.py --device cuda --amp bf16 --batch-size 8     # on a GPU
    python3 benchmarks/bench_train.py --arch iog-mobilenetv2 --batch-size 8 --amp bf16 --layout contiguous
        # the layout before training went channels_last, to compare

Each configuration runs in its own process, so that its peak memory (CPU: the process's
maximum resident set; CUDA: torch.cuda.max_memory_allocated) is its own. Writes
benchmarks/results/train-<device>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_ARCHS = ["iog-resnet18", "iog-resnet50", "iog-resnet101", "iog-refine-resnet101"]


def one(arch: str, device: str, batch_size: int, steps: int, frozen: bool, amp: str, threads: int,
        layout: str) -> dict:
    import numpy as np
    import torch

    from napari_iog.models import build_model
    from napari_iog.training import InstanceDataset, pairs_from_arrays
    from napari_iog.training.loop import _amp_dtype, freeze, iog_loss, set_train_mode

    torch.set_num_threads(threads)
    target = torch.device(device)
    model = build_model(arch, seed=0)
    freeze(model, backbone=frozen, batchnorm=True)
    layouts = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
    model.to(target, memory_format=layouts[layout])     # training.loop trains channels_last
    set_train_mode(model, freeze_bn=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (256, 256, 3)).astype(np.uint8)
    labels = np.zeros((256, 256), np.int32)
    labels[60:180, 50:200] = 1
    dataset = InstanceDataset(pairs_from_arrays(image, labels), refine=arch.startswith("iog-refine"))
    batch = torch.utils.data.default_collate([dataset[0] for _ in range(batch_size)])
    batch = {k: v.to(target) for k, v in batch.items()}
    dtype = _amp_dtype(amp, target)
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)
    times = []
    for i in range(steps + 1):
        if target.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(target.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            args = (batch["x"], batch["clicks"]) if "clicks" in batch else (batch["x"],)
            fine, coarse = model(*args, return_coarse=True)
        loss = iog_loss(fine, coarse, batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if target.type == "cuda":
            torch.cuda.synchronize()
        if i:                       # the first step is warm-up
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(target) if target.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    step_s = sorted(times)[len(times) // 2]
    return {"arch": arch, "frozen_backbone": frozen, "batch_size": batch_size, "device": device,
            "amp": str(dtype).replace("torch.", "") if dtype else "off", "threads": threads, "layout": layout,
            "median_step_s": step_s, "steps_per_s": 1.0 / step_s, "samples_per_s": batch_size / step_s,
            "peak_memory_gib": peak / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"])
    parser.add_argument("--arch", action="append", default=None)
    parser.add_argument("--layout", default="channels_last", choices=["channels_last", "contiguous"],
                        help="the weights' memory layout (training runs channels_last)")
    parser.add_argument("--out", type=Path, help="the results JSON (default: results/train-<device>.json)")
    parser.add_argument("--one", help=argparse.SUPPRESS)     # internal: run one configuration, print JSON
    parser.add_argument("--frozen", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.device, args.batch_size, args.steps, args.frozen, args.amp, args.threads,
                             args.layout)))
        return
    rows = []
    for arch in args.arch or DEFAULT_ARCHS:
        for frozen in (False, True):
            command = [sys.executable, __file__, "--one", arch, "--device", args.device, "--threads",
                       str(args.threads), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                       "--amp", args.amp, "--layout", args.layout] + (["--frozen"] if frozen else [])
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(f"{arch} frozen={frozen} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    out = args.out or Path(__file__).parent / "results" / f"train-{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows}, indent=1))
    print("\n| architecture | backbone | batch | amp | layout | steps/s | samples/s | peak memory (GiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['arch']} | {'frozen' if r['frozen_backbone'] else 'trained'} | {r['batch_size']} | {r['amp']} | "
              f"{r['layout']} | {r['steps_per_s']:.3f} | {r['samples_per_s']:.2f} | {r['peak_memory_gib']:.2f} |")
    print(f"\n{out}")


if __name__ == "__main__":
    main()
