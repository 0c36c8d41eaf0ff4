"""The fixed short protocol that compares candidates for training with corrections: the whole
click curve (20 clicks) on GrabCut (50 objects) and on 40 held-out objects of each domain the
default was not trained on (ssTEM slices 10-19, CVPPP plants 81+, every 10th DSB2018 image).

    python3 benchmarks/correction_candidates.py --models napari-iog-default a.pt c.pt \\
        --out benchmarks/results/correction-candidates.json

float32 torch, the raw output (``postprocess=False``, as the published protocol scores it),
~5 minutes a model on two CPU cores. ``--latency`` times instead a click end to end as the
annotator makes it (cleaned mask, 2 threads): an object's first three clicks, and then one
correction (which reuses the object's first mask where the network reads correction maps), in
each ``--latency-setups``: ``exact`` (the float32 network as it is, torch), ``torch`` (what
``IOGPredictor()`` runs without the fast extra: float32, BatchNorm folded, channels_last) and
``auto`` (with the fast extra installed: ONNX Runtime where it is faster here).
The candidates are made with ``scripts/train_default.py``
(docs/benchmarks.md, "Training with corrections", has the commands).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from napari_iog import IOGPredictor, zoo
from napari_iog import evaluation as E
from napari_iog.models import load_model
from napari_iog.models.mobilenet import with_correction_input_size
from napari_iog.training.data import validation_instances
from napari_iog.training.sources import held_out_domain

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SETS = ("grabcut", "sstem", "cvppp", "dsb2018")
KEPT = ("miou@3", "miou@5", "miou@10", "miou@20", "noc85", "noc90", "never90", "worse_corrections",
        "clearly_worse_corrections")


def instances(name: str, root: Path, objects: int):
    if name in ("grabcut", "berkeley"):
        return E.load_dataset(name, root)
    return validation_instances(held_out_domain(name, root), limit=objects, seed=0)


LATENCY_SETUPS = {"exact": ("float32", "torch"), "torch": ("auto", "torch"), "auto": ("auto", "auto")}


def click_latency(model: str, objects, setup: str = "exact") -> dict:
    """Median milliseconds of a first click (corners + inside) and of one correction after it."""
    from napari_iog.evaluation.clicks import initial_clicks

    torch.set_num_threads(2)
    precision, backend = LATENCY_SETUPS[setup]
    predictor = IOGPredictor(model, device="cpu", precision=precision, backend=backend, warmup=setup != "exact")
    first, correction = [], []
    for n, inst in enumerate(objects):
        clicks = initial_clicks(inst.mask)
        start = time.perf_counter()
        predictor.predict(inst.image, corners=clicks["corners"], inside=clicks["inside"])
        middle = time.perf_counter()
        predictor.predict(inst.image, corners=clicks["corners"], inside=clicks["inside"], positive=clicks["inside"])
        end = time.perf_counter()
        if n >= 2:                      # the first objects warm the process up
            first.append(middle - start)
            correction.append(end - middle)
    return {"setup": setup, "backend": predictor.backend, "objects": len(first),
            "first_click_ms": round(1000 * statistics.median(first), 1),
            "correction_ms": round(1000 * statistics.median(correction), 1)}


def mirror_averaged(predictor: IOGPredictor) -> None:
    """Make ``predictor`` average each forward pass with that of the mirrored input."""
    forward = predictor._forward

    def averaged(x: torch.Tensor, clicks: torch.Tensor | None = None, **sizes) -> torch.Tensor:
        return (forward(x, clicks, **sizes) + forward(x.flip(-1), clicks, **sizes).flip(-1)) / 2

    predictor._forward = averaged


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["napari-iog-default"])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS + ("berkeley",))
    parser.add_argument("--objects", type=int, default=40, help="held-out objects per domain (40)")
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--latency", action="store_true", help="time clicks on GrabCut instead (see above)")
    parser.add_argument("--latency-setups", nargs="+", default=["exact"], choices=tuple(LATENCY_SETUPS),
                        help="how the predictor runs while --latency times it (see above)")
    parser.add_argument("--precision", default="float32", choices=("float32", "int8"),
                        help="float32 torch (the protocol), or int8 (the quantized network on ONNX Runtime)")
    parser.add_argument("--correction-input-size", type=int, default=None,
                        help="run each model's corrections at this size inside the frame (its weights as they "
                             "are; 0: at its first clicks' size), whatever its file says")
    parser.add_argument("--flip", action="store_true",
                        help="average the network's logits with those of the left-right mirrored input "
                             "(test-time augmentation: twice the work a click)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="the probability above which a pixel is the object (the predictor's: 0.5)")
    parser.add_argument("--cleaned", action="store_true",
                        help="score the cleaned mask the annotator writes (clicks enforced), not the raw output")
    args = parser.parse_args(argv)
    results: dict[str, dict] = {}
    if args.latency:
        objects = E.load_dataset("grabcut", args.data_root)
        for setup in args.latency_setups:
            for model in args.models:
                results.setdefault(model, {})[setup] = click_latency(model, objects, setup)
                print(model, results[model][setup], flush=True)
        if args.out:
            args.out.write_text(json.dumps({"latency": results}, indent=1))
        return 0
    for model in args.models:
        results[model] = {}
        for name in args.sets:
            try:
                objects = instances(name, args.data_root, args.objects)
            except FileNotFoundError as err:
                print(f"skip {name}: {err}", file=sys.stderr)
                continue
            network = model if args.correction_input_size is None else with_correction_input_size(
                load_model(zoo.resolve(model)), args.correction_input_size or None)
            predictor = IOGPredictor(network, device="cpu", precision=args.precision,
                                     backend="torch" if args.precision == "float32" else None, warmup=False,
                                     threshold=args.threshold)
            if args.flip:
                if predictor.is_refine:
                    raise SystemExit("--flip: plain IOG networks only (a refinement network takes click coordinates)")
                mirror_averaged(predictor)
            method = E.IOGMethod(predictor, name=model, postprocess=args.cleaned)
            summary = E.evaluate(method, objects, max_clicks=20)["summary"]
            results[model][name] = {"objects": summary["objects"], **{k: summary[k] for k in KEPT}}
            print(f"{model} | {name} | " + " ".join(f"{k} {summary[k]:.3f}" for k in KEPT), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"max_clicks": 20, "cleaned": args.cleaned, "precision": args.precision,
                                         "flip": args.flip, "threshold": args.threshold,
                                         "correction_input_size": args.correction_input_size,
                                         "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
