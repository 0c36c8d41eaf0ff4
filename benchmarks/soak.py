"""Soak: a long annotation session in a real viewer, watching memory, layers, Qt objects, latency.

    xvfb-run -a python3 benchmarks/soak.py [--objects 200] [--clicks-per-object 5] [--out FILE]

200 objects on a 1024 x 1024 photo (the astronaut, tiled), each made with real mouse clicks on
the canvas (two corners, one inside, then corrections) and committed with Enter, with the
bundled default model on the CPU: 1000 clicks. Every 100 clicks: resident memory (from
/proc), the viewer's layers, Qt widgets and Python objects alive, the median latency from a
click to its mask shown. The memory slope is a least-squares fit over the second half (the
first clicks warm caches up). Results: benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import napari  # noqa: E402
from gui_input import mouse_click, press_key, show_all, world_of  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402
from skimage import data  # noqa: E402


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--clicks-per-object", type=int, default=5, help="3 to make it, the rest corrections")
    parser.add_argument("--model", default=None, help="default: the bundled model")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    args = parser.parse_args()

    from napari_iog import IOGPredictor

    rng = np.random.default_rng(0)
    image = np.tile(data.astronaut(), (2, 2, 1))
    viewer = napari.Viewer()
    layer = viewer.add_image(image, name="astronaut x4")
    show_all(viewer)
    _, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
    widget.start(IOGPredictor(args.model, device="cpu"))
    ann = widget.annotator
    columns, rows = 10, -(-args.objects // 10)
    cell_h, cell_w = image.shape[0] // rows, image.shape[1] // columns
    samples, latencies, clicks = [], [], 0
    start = time.perf_counter()

    def click(pixel, negative=False):
        nonlocal clicks
        t0 = time.perf_counter()
        mouse_click(viewer, world_of(layer, pixel), ("Shift",) if negative else ())
        ann.wait()
        latencies.append(time.perf_counter() - t0)
        clicks += 1
        if clicks % 100 == 0:
            gc.collect()
            samples.append({"clicks": clicks, "resident_mb": resident_mb(), "layers": len(viewer.layers),
                            "qt_widgets": len(QApplication.allWidgets()), "python_objects": len(gc.get_objects()),
                            "median_latency_s": statistics.median(latencies[-100:]),
                            "committed": int(np.asarray(ann.labels_layer.data).max())})
            print(samples[-1], flush=True)

    for n in range(args.objects):
        r, c = divmod(n, columns)
        top, left = r * cell_h + 3, c * cell_w + 3
        bottom, right = top + cell_h - 7, left + cell_w - 7
        click((top, left))
        click((bottom, right))
        click(((top + bottom) // 2, (left + right) // 2))
        for k in range(args.clicks_per_object - 3):
            click((int(rng.integers(top, bottom)), int(rng.integers(left, right))), negative=bool(k % 2))
        press_key(viewer, "Enter")
        QApplication.processEvents()
    seconds = time.perf_counter() - start
    half = samples[len(samples) // 2:]
    slope = (float(np.polyfit([s["clicks"] for s in half], [s["resident_mb"] for s in half], 1)[0]) * 100
             if len(half) >= 2 else None)
    result = {"machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
              "model": ann.status, "clicks": clicks, "objects_committed": int(np.asarray(ann.labels_layer.data).max()),
              "seconds": round(seconds, 1), "memory_slope_mb_per_100_clicks": slope,
              "layers_first_last": [samples[0]["layers"], samples[-1]["layers"]],
              "qt_widgets_first_last": [samples[0]["qt_widgets"], samples[-1]["qt_widgets"]],
              "median_latency_first_last_s": [samples[0]["median_latency_s"], samples[-1]["median_latency_s"]],
              "samples": samples}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print({k: v for k, v in result.items() if k != "samples"})
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
