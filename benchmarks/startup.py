"""How long making an IOGPredictor takes: the first start (the ONNX export is made and cached)
and the second (it is loaded), at ``precision="auto"``, ``backend="auto"``, on the CPU.

    python3 benchmarks/startup.py [--models napari-iog-default iog-resnet101] [--threads 2] [--no-bf16]
                                  [--out benchmarks/results/startup-cpu.json]

A model is a zoo name, a checkpoint, or an architecture (random weights: the time to start
does not depend on them). Each start runs in a fresh process, as a user's would, with a cache
folder of its own made for this run; the time is that of ``IOGPredictor(model)`` (loading,
folding, the warm-up and its checks, the export or its loading), not of importing torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ONE_START = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
from napari_iog.models import ARCHITECTURES, build_model, precision
from napari_iog.predictor import IOGPredictor
if sys.argv[3] == "1":
    precision.cpu_has_fast_bf16 = lambda: False
model = build_model(sys.argv[1], seed=0) if sys.argv[1] in ARCHITECTURES else sys.argv[1]
start = time.perf_counter()
p = IOGPredictor(model, device="cpu")
print(json.dumps({"seconds": time.perf_counter() - start, "backend": p.backend, "precision": p.precision,
                  "warmup_check": getattr(p, "warmup_check", None)}))
"""


def start_once(model: str, threads: int, no_bf16: bool, cache: Path) -> dict:
    env = {**os.environ, "NAPARI_IOG_CACHE": str(cache)}
    env.pop("NAPARI_IOG_BACKEND", None)
    out = subprocess.run([sys.executable, "-c", ONE_START, model, str(threads), "1" if no_bf16 else "0"],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["napari-iog-default", "iog-resnet101"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-bf16", action="store_true", help="choose as on a CPU without fast bf16")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            cache = Path(tmp, model.replace("/", "_"))
            first = start_once(model, args.threads, args.no_bf16, cache)
            second = start_once(model, args.threads, args.no_bf16, cache)
            rows.append({"model": model, "first_start_s": first["seconds"], "second_start_s": second["seconds"],
                         "backend": second["backend"], "precision": second["precision"],
                         "warmup_check": second["warmup_check"]})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| model | first start (export) | second start (cached) | runs |\n| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['model']} | {row['first_start_s']:.1f} s | {row['second_start_s']:.1f} s | "
              f"{row['precision']}, {row['backend']} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"threads": args.threads, "no_bf16": args.no_bf16,
                                        "machine": platform.machine(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
