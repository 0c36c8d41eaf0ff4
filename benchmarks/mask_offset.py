"""Do small objects lose IoU to a systematic offset? For each held-out object, the first mask
(the tight box's corners and the most interior pixel, as the simulated user clicks) against the
object by size: IoU, the signed offset of the mask's centroid (rows, cols), the area ratio
(a mask grown or shrunk by a pixel all round shows there), and how much IoU the best whole-pixel
shift within +-2 px would win back.

    python3 benchmarks/mask_offset.py [--model napari-iog-default] [--objects 300]
        [--out benchmarks/results/mask-offset.json]

Held-out objects of ssTEM (slices 10-19), CVPPP (plants 81+), DSB2018 (every 10th image) and
GrabCut, float32 torch; the raw mask (``postprocess=False``, as the protocol scores it) and the
cleaned one (what the annotator writes).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_iog import IOGPredictor
from napari_iog import evaluation as E
from napari_iog.evaluation.clicks import initial_clicks
from napari_iog.evaluation.metrics import iou
from napari_iog.training.data import validation_instances
from napari_iog.training.sources import held_out_domain

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SETS = ("dsb2018", "sstem", "cvppp", "grabcut")
#: object sizes (pixels) the rows are grouped by
SIZE_EDGES = (0, 200, 500, 1500, 5000, 20000, np.inf)
SHIFTS = [(dr, dc) for dr in range(-2, 3) for dc in range(-2, 3)]


def shifted(mask: np.ndarray, dr: int, dc: int) -> np.ndarray:
    return ndimage.shift(mask, (dr, dc), order=0, mode="constant", cval=False)


def measure(mask: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None) -> dict:
    first = iou(mask, truth, ignore)
    shifts = {s: iou(shifted(mask, *s), truth, ignore) for s in SHIFTS}
    best = max(shifts, key=shifts.get)
    centre = np.array(ndimage.center_of_mass(truth))
    offset = np.array(ndimage.center_of_mass(mask)) - centre if mask.any() else np.array([np.nan, np.nan])
    return {"area": int(truth.sum()), "iou": first, "offset_r": float(offset[0]), "offset_c": float(offset[1]),
            "area_ratio": float(mask.sum() / truth.sum()), "best_shift": list(best),
            "shift_gain": shifts[best] - first}


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for low, high in zip(SIZE_EDGES[:-1], SIZE_EDGES[1:]):
        group = [r for r in rows if low <= r["area"] < high]
        if not group:
            continue
        values = {k: np.array([r[k] for r in group], float) for k in ("iou", "offset_r", "offset_c", "area_ratio",
                                                                        "shift_gain")}
        table.append({"area": f"{low:g}-{high:g}", "objects": len(group),
                      "miou": round(float(values["iou"].mean()), 3),
                      "mean_offset_r": round(float(np.nanmean(values["offset_r"])), 2),
                      "mean_offset_c": round(float(np.nanmean(values["offset_c"])), 2),
                      "mean_abs_offset": round(float(np.nanmean(np.hypot(values["offset_r"], values["offset_c"]))), 2),
                      "median_area_ratio": round(float(np.median(values["area_ratio"])), 3),
                      "mean_shift_gain": round(float(values["shift_gain"].mean()), 4),
                      "shifted_best": round(float(np.mean([r["best_shift"] != [0, 0] for r in group])), 3)})
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="napari-iog-default")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--objects", type=int, default=300, help="held-out objects per domain (300)")
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    predictor = IOGPredictor(args.model, device="cpu", precision="float32", backend="torch", warmup=False)
    results = {}
    for name in args.sets:
        try:
            objects = (E.load_dataset(name, args.data_root) if name == "grabcut" else
                       validation_instances(held_out_domain(name, args.data_root), limit=args.objects, seed=0))
        except FileNotFoundError as err:
            print(f"skip {name}: {err}", file=sys.stderr)
            continue
        for cleaned in (False, True):
            rows = []
            for inst in objects:
                clicks = initial_clicks(inst.mask)
                mask = predictor.predict(inst.image, corners=clicks["corners"], inside=clicks["inside"],
                                         postprocess=cleaned).mask
                rows.append(measure(mask, inst.mask, inst.ignore))
            which = f"{name} {'cleaned' if cleaned else 'raw'}"
            results[which] = summarise(rows)
            for row in results[which]:
                print(which, row, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "machine": platform.processor() or platform.machine(),
                                        "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
