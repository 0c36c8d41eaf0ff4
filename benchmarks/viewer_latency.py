"""The latency a user feels: from the click on the canvas to the mask painted in the viewer.

    xvfb-run -a -s "-screen 0 1280x800x24" python3 benchmarks/viewer_latency.py \\
        [--models napari-iog-default iog-resnet101] [--objects 10] [--learning] [--out FILE]

A real napari viewer (1280 x 800) shows the astronaut (512 x 512); for each object the user
clicks two corners and an inside point with the mouse (real Qt events on the canvas), then one
correction. For the clicks that ask for a mask (the inside click and the correction) it
records, from the mouse press:
  * shown: the annotator has the mask and has drawn it into its layers;
  * painted: the canvas has finished its next draw after that (what the eye gets);
and beside them the predictor's own time for the same prompt, called directly (what
``bench_predictor.py`` reports). An architecture name (``iog-resnet101``) runs with random
weights: the time does not depend on them. Median over the objects, in milliseconds.

``--learning``: first commits six objects with real clicks, so that the annotator's learner
(its own process, nice 19, one thread) is training through the whole measurement, and says
how many steps it made meanwhile; without it, learning is turned off.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import napari  # noqa: E402
from gui_input import mouse_click, press_key, show_all, world_of  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402
from skimage import data  # noqa: E402


def predictor_for(spec: str, precision: str):
    from napari_iog import IOGPredictor
    from napari_iog.models import ARCHITECTURES, build_model

    model = build_model(spec, seed=0) if spec in ARCHITECTURES else spec
    return IOGPredictor(model, device="cpu", precision=precision)


def start_learning(viewer, layer, widget, objects: int = 6) -> None:
    """Commit ``objects`` objects with real clicks and wait until the learner trains."""
    ann, learning = widget.annotator, widget.learning.learning
    learning.settings.seconds_per_object = 600.0        # busy through the measurement
    ann.overwrite = True
    for n in range(objects):
        top, left = 60 + 40 * (n % 3), 60 + 50 * n
        for point in ((top, left), (top + 120, left + 100), (top + 60, left + 50)):
            mouse_click(viewer, world_of(layer, point))
        ann.wait()
        press_key(viewer, "Enter")
    if learning.learner is None:
        raise SystemExit(f"nothing committed: {widget.message.value or widget.status.value}")
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline and not (learning.learner.report and learning.learner.report.steps):
        learning.poll(timeout=0.5)
        QApplication.processEvents()
    print("learner training:", learning.learner.report, flush=True)


def measure(viewer, layer, widget, predictor, objects: int) -> dict:
    ann = widget.annotator
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    marks: dict[str, float] = {}
    canvas.events.draw.connect(lambda event: marks.setdefault("painted", time.perf_counter())
                               if "shown" in marks else None)
    ann.prediction_shown.connect(lambda: marks.setdefault("shown", time.perf_counter()))
    rows = {"first": {"shown": [], "painted": [], "predictor": []},
            "correction": {"shown": [], "painted": [], "predictor": []}}
    size = 512 // objects
    for n in range(objects):
        top, left = 40 + (n % 4) * 20, 30 + n * (size // 2)
        bottom, right = min(top + 180, 500), min(left + 160, 500)
        mouse_click(viewer, world_of(layer, (top, left)))
        mouse_click(viewer, world_of(layer, (bottom, right)))
        ann.wait()
        inside, correction = ((top + bottom) // 2, (left + right) // 2), (top + 15, left + 15)
        for kind, point in (("first", inside), ("correction", correction)):
            marks.clear()
            start = time.perf_counter()
            mouse_click(viewer, world_of(layer, point), ("Shift",) if kind == "correction" else ())
            ann.wait()
            deadline = time.perf_counter() + 5
            while "painted" not in marks and time.perf_counter() < deadline:
                QApplication.processEvents()
            rows[kind]["shown"].append(marks["shown"] - start)
            rows[kind]["painted"].append(marks.get("painted", float("nan")) - start)
        press_key(viewer, "Escape")     # the next object starts afresh
        negative = [correction]
        predictor.clear_cache()     # a refinement model would reuse the viewer's features: not a first click
        t0 = time.perf_counter()
        predictor.predict(layer.data, corners=[(top, left), (bottom, right)], inside=[inside])
        rows["first"]["predictor"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        predictor.predict(layer.data, corners=[(top, left), (bottom, right)], inside=[inside], negative=negative)
        rows["correction"]["predictor"].append(time.perf_counter() - t0)
    return {kind: {k: round(1000 * statistics.median(v), 1) for k, v in values.items()}
            for kind, values in rows.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["napari-iog-default", "iog-resnet101"])
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--no-bf16", action="store_true", help="choose precision as on a CPU without fast bf16")
    parser.add_argument("--learning", action="store_true", help="measure while the annotator's learner trains")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    from napari_iog.models import precision

    if args.no_bf16:
        precision.cpu_has_fast_bf16 = lambda: False
    results = {}
    for spec in args.models:
        viewer = napari.Viewer()
        layer = viewer.add_image(data.astronaut(), name="astronaut")
        show_all(viewer)
        _, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
        predictor = predictor_for(spec, args.precision)
        widget.start(predictor)
        if args.learning:
            start_learning(viewer, layer, widget)
        else:
            widget.learning.toggle.value = False
        runs = predictor.precision + ("" if predictor.backend == "torch" else f", {predictor.backend}")
        results[spec] = {"precision": runs, **measure(viewer, layer, widget, predictor, args.objects)}
        if args.learning:
            learning = widget.learning.learning
            learning.poll()
            results[spec]["learner_steps_during"] = learning.learner.report.steps if learning.learner.report else 0
        print(spec, results[spec], flush=True)
        viewer.close()
    out = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "date": time.strftime("%Y-%m-%d"), "objects": args.objects, "no_bf16": args.no_bf16,
           "learning": args.learning, "results_ms": results}
    name = "viewer-latency-learning.json" if args.learning else "viewer-latency.json"
    args.out = args.out or ROOT / "benchmarks" / "results" / name
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print("| model | runs | click | predictor | shown | painted |\n| --- | --- | --- | --- | --- | --- |")
    for spec, r in results.items():
        for kind in ("first", "correction"):
            print(f"| {spec} | {r['precision']} | {kind} | {r[kind]['predictor']} | {r[kind]['shown']} | "
                  f"{r[kind]['painted']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
