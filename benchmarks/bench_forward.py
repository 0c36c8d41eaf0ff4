"""Time one forward pass of each network on this machine.

    python3 benchmarks/bench_forward.py [--device cpu] [--threads 2] [--repeats 5] [--arch NAME ...]

Writes benchmarks/results/forward-<device>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from napari_iog.models import build_model, resolve_device

DEFAULT_ARCHS = ["iog-resnet101", "iog-refine-resnet101", "dextr-resnet101", "iog-resnet50",
                 "iog-resnet34", "iog-resnet18"]


def time_forward(model, x, repeats: int, device: torch.device) -> list[float]:
    times = []
    with torch.inference_mode():
        model(x)  # warm-up
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--arch", nargs="*", default=DEFAULT_ARCHS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    rows = []
    for arch in args.arch:
        model = build_model(arch, seed=0).to(device)
        channels = 4 if arch.startswith("dextr") else 5
        x = torch.rand(1, channels, 512, 512, device=device) * 255
        times = time_forward(model, x, args.repeats, device)
        rows.append({"arch": arch, "median_s": statistics.median(times), "min_s": min(times),
                     "params": sum(p.numel() for p in model.parameters())})
        print(f"{arch}: median {rows[-1]['median_s']:.3f} s", flush=True)
    result = {"device": str(device), "threads": args.threads, "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "repeats": args.repeats,
              "input": "1x(5|4)x512x512 float32", "rows": rows}
    out = Path(__file__).parent / "results" / f"forward-{device.type}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("\n| network | parameters | median forward (s) |\n| --- | --- | --- |")
    for r in rows:
        print(f"| `{r['arch']}` | {r['params']:,} | {r['median_s']:.3f} |")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
