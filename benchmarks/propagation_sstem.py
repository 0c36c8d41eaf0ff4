"""3D propagation on a real EM stack: how well does an object carried from one slice match
the true object on the slices around it?

    python benchmarks/propagation_sstem.py --model path/to/model.pt [--start 15] [--reach 5]
                                           [--objects 100] [--device cpu]

Data: ``../shared/data/sstem_vnc`` stack1 (20 labelled 1024 x 1024 slices; instances are the
connected components of the cell-interior classes, >= 200 px, as its SOURCE.txt derives them).
For each object of slice ``--start`` (at least ``--min-area`` px, not touching the border, up to
``--objects``): the clicks a user would give (the object's box and its most interior point)
segment it on that slice, it is committed, then propagated both ways through ``--reach``
slices with the annotator's default stop rules. On every slice at distance d the propagated
mask is scored by its IoU with the best-matching true object of that slice (objects are
labelled per slice; the stack has no 3D ids). A direction that stopped early scores 0 on the
slices it did not reach; the fraction reached is reported too.
Baselines, scored the same way: the committed start mask copied unchanged to the other
slices (what propagation must beat), and the true start mask copied (how much the cells
themselves change from slice to slice).
Results: ``benchmarks/results/propagation-sstem.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_iog import geometry as G
from napari_iog.predictor import IOGPredictor
from napari_iog.session import AnnotationSession
from napari_iog.training import sstem_pairs

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "sstem_vnc"


def best_iou(mask: np.ndarray, instances: np.ndarray) -> float:
    """IoU of ``mask`` with the true object it overlaps best."""
    ids, overlap = np.unique(instances[mask], return_counts=True)
    keep = ids != 0
    if not keep.any():
        return 0.0
    sizes = np.bincount(instances.ravel())
    area = int(mask.sum())
    ious = overlap[keep] / (area + sizes[ids[keep]] - overlap[keep])
    return float(ious.max())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a zoo name or checkpoint path")
    parser.add_argument("--start", type=int, default=15)
    parser.add_argument("--reach", type=int, default=5, help="slices each way (the stack has 20)")
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--min-area", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "propagation-sstem.json")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"no data at {DATA}: nothing to measure", file=sys.stderr)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = sstem_pairs(DATA)
    gray = np.stack([p.rgb[..., 0] for p in pairs])                 # the raw slices (gray)
    truth = np.stack([p.labels for p in pairs])
    predictor = IOGPredictor(args.model, device=args.device)
    labels = np.zeros(truth.shape, np.uint16)
    session = AnnotationSession(predictor, gray, labels)
    start = args.start
    ids = [i for i in np.unique(truth[start]) if i]
    chosen = []
    for i in ids:
        mask = truth[start] == i
        box = G.mask_box(mask)
        border = box.r0 == 0 or box.c0 == 0 or box.r1 == gray.shape[1] - 1 or box.c1 == gray.shape[2] - 1
        if mask.sum() >= args.min_area and not border:
            chosen.append(i)
    chosen = chosen[:args.objects]
    distances = [d for d in range(-args.reach, args.reach + 1) if d and 0 <= start + d < len(pairs)]
    scores = {d: [] for d in [0, *distances]}
    copy = {d: [] for d in distances}
    copy_committed = {d: [] for d in distances}
    reached = {d: 0 for d in distances}
    t0 = time.perf_counter()
    for n, i in enumerate(chosen):
        mask = truth[start] == i
        box = G.mask_box(mask)
        session.set_clicks([("corner", (box.r0, box.c0)), ("corner", (box.r1, box.c1)),
                            ("inside", G.most_interior_point(mask))], (start,))
        session.commit()
        result = session.propagate(max_planes=args.reach)
        committed = labels[start] != 0
        scores[0].append(best_iou(committed, truth[start]))
        for d in distances:
            z = start + d
            written = labels[z] != 0
            if written.any():
                reached[d] += 1
            scores[d].append(best_iou(written, truth[z]) if written.any() else 0.0)
            copy[d].append(best_iou(mask, truth[z]))
            copy_committed[d].append(best_iou(committed, truth[z]))
        if result.steps:
            session.undo()
        session.undo()
        assert not labels.any()
        print(f"\r{n + 1}/{len(chosen)} objects", end="", file=sys.stderr)
    print(file=sys.stderr)
    seconds = time.perf_counter() - t0
    by_distance = {}
    for d in sorted(scores):
        row = {"propagated_miou": float(np.mean(scores[d])) if scores[d] else None}
        if d:
            row["reached"] = reached[d] / len(chosen)
            row["propagated_miou_where_reached"] = row["propagated_miou"] / row["reached"] if reached[d] else None
            row["copy_miou"] = float(np.mean(copy[d]))
            row["copy_committed_miou"] = float(np.mean(copy_committed[d]))
        by_distance[str(d)] = row
    card = predictor.card
    out = {"model": str(args.model), "model_name": card.get("name"), "arch": predictor.arch,
           "device": str(predictor.device), "precision": predictor.precision, "start_slice": start,
           "reach": args.reach, "objects": len(chosen), "min_area": args.min_area, "seconds": seconds,
           "by_distance": by_distance}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print("| distance | propagated mIoU | reached | mIoU where reached | copy of the committed mask | "
          "copy of the true mask |\n|---|---|---|---|---|---|")
    for d, row in by_distance.items():
        if d == "0":
            print(f"| 0 (the clicked slice) | {row['propagated_miou']:.3f} | 1.00 | | | |")
            continue
        where = row["propagated_miou_where_reached"]
        print(f"| {d} | {row['propagated_miou']:.3f} | {row['reached']:.2f} | "
              f"{'n/a' if where is None else f'{where:.3f}'} | {row['copy_committed_miou']:.3f} | "
              f"{row['copy_miou']:.3f} |")
    print(f"{len(chosen)} objects of slice {start}, {seconds:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
