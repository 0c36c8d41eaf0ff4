"""Is 0.5 the right probability threshold for the default's masks? The first mask (the tight
box's corners and the most interior pixel) of each object, scored at several thresholds from
one forward pass. The threshold is chosen on objects the default trained on (ssTEM slices 0-9,
CVPPP plants 1-80, DSB2018 apart from every 10th image, BSDS500) and checked on the held-out
ones (ssTEM 10-19, CVPPP 81+, every 10th DSB2018 image, GrabCut, Berkeley).

    python3 benchmarks/threshold_calibration.py [--model napari-iog-default] [--objects 120]
        [--out benchmarks/results/threshold-calibration.json]

float32 torch, the raw mask (``postprocess=False``, as the protocol scores it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

from napari_iog import IOGPredictor
from napari_iog import evaluation as E
from napari_iog.evaluation.clicks import initial_clicks
from napari_iog.evaluation.metrics import iou
from napari_iog.training.data import bsds_pairs, cvppp_pairs, sstem_pairs, validation_instances
from napari_iog.training.sources import dsb_pairs, held_out_domain

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
THRESHOLDS = (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8)


def trained_on(name: str, root: Path) -> list:
    readers = {"sstem": lambda: sstem_pairs(root / "sstem_vnc", range(10)),
               "cvppp": lambda: cvppp_pairs(root / "cvppp_a1", range(1, 81)),
               "dsb2018": lambda: dsb_pairs(root / "dsb2018"),
               "bsds": lambda: bsds_pairs(root / "bsds500_test_regions", limit=60)}
    return readers[name]()


def scores(predictor: IOGPredictor, objects) -> dict[str, float]:
    """mIoU of the first mask at each threshold."""
    per_threshold = {t: [] for t in THRESHOLDS}
    for inst in objects:
        clicks = initial_clicks(inst.mask)
        probability = predictor.predict(inst.image, corners=clicks["corners"], inside=clicks["inside"],
                                        postprocess=False).probability
        for t in THRESHOLDS:
            per_threshold[t].append(iou(probability > t, inst.mask, inst.ignore))
    return {str(t): float(np.mean(v)) for t, v in per_threshold.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="napari-iog-default")
    parser.add_argument("--objects", type=int, default=120, help="objects per set (120)")
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    predictor = IOGPredictor(args.model, device="cpu", precision="float32", backend="torch", warmup=False)
    results: dict[str, dict] = {"trained_on": {}, "held_out": {}}
    for split, names in (("trained_on", ("sstem", "cvppp", "dsb2018", "bsds")),
                         ("held_out", ("sstem", "cvppp", "dsb2018", "grabcut", "berkeley"))):
        for name in names:
            try:
                if name in ("grabcut", "berkeley"):
                    objects = E.load_dataset(name, args.data_root)
                elif split == "held_out":
                    objects = validation_instances(held_out_domain(name, args.data_root), limit=args.objects, seed=1)
                else:
                    objects = validation_instances(trained_on(name, args.data_root), limit=args.objects, seed=1)
            except FileNotFoundError as err:
                print(f"skip {split} {name}: {err}", file=sys.stderr)
                continue
            results[split][name] = scores(predictor, objects)
            row = results[split][name]
            print(f"{split:10s} {name:9s} " + " ".join(f"{t}:{row[t]:.4f}" for t in row), flush=True)
    for split, sets in results.items():
        if sets:
            mean = {t: float(np.mean([s[t] for s in sets.values()])) for t in map(str, THRESHOLDS)}
            results[split]["mean"] = mean
            print(f"{split:10s} mean      " + " ".join(f"{t}:{v:.4f}" for t, v in mean.items()), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "cpu": platform.processor() or platform.machine(),
                                        "thresholds": THRESHOLDS, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
