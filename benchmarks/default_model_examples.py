"""Before/after pictures of two models on six fixed objects (photos, EM, plant, nuclei).

    python3 benchmarks/default_model_examples.py --before old-default.pt --after napari-iog-default \\
        --out docs/images/default-model-examples.png

The objects are fixed by position in their sets (not chosen by result): GrabCut images 0 and 10,
Berkeley image 0, and the first held-out object of ssTEM slice 15, CVPPP plant 90 and DSB2018's
held-out images. Each gets the simulated user's three clicks (box corners and the inside click)
and, after, the first correction click; the masks are the raw network output, as scored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from napari_iog import IOGPredictor
from napari_iog import evaluation as E
from napari_iog.training import cvppp_pairs, sstem_pairs
from napari_iog.training.data import validation_instances
from napari_iog.training.sources import dsb_pairs

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def examples(root: Path) -> list[tuple[str, E.Instance]]:
    grabcut, berkeley = E.load_dataset("grabcut", root), E.load_dataset("berkeley", root)
    first = {
        "EM (ssTEM)": validation_instances(sstem_pairs(root / "sstem_vnc", [15]), limit=None)[0],
        "plant (CVPPP)": validation_instances(cvppp_pairs(root / "cvppp_a1", [90]), limit=None)[0],
        "nuclei (DSB2018)": validation_instances(dsb_pairs(root / "dsb2018", held_out=True)[:1], limit=None)[0],
    }
    return [("photo (GrabCut)", grabcut[0]), ("photo (GrabCut)", grabcut[10]),
            ("photo (Berkeley)", berkeley[0]), *first.items()]


def masks(predictor: IOGPredictor, instance: E.Instance):
    """Masks after 3 clicks and after the first correction, and the clicks."""
    method = E.IOGMethod(predictor)
    clicks = {**E.initial_clicks(instance.mask), "positive": [], "negative": []}
    three = method.segment(instance.image, clicks)
    click = E.next_click(three, instance.mask, instance.ignore)
    four = three
    if click is not None:
        clicks["positive" if click[1] else "negative"].append(click[0])
        four = method.segment(instance.image, clicks)
    return three, four, clicks


def window(mask: np.ndarray, margin: float = 0.3) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask)
    dr, dc = int((np.ptp(rows) + 1) * margin) + 8, int((np.ptp(cols) + 1) * margin) + 8
    return (slice(max(0, rows.min() - dr), rows.max() + dr + 1), slice(max(0, cols.min() - dc), cols.max() + dc + 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    models = {name: IOGPredictor(spec, device="cpu", precision="float32", warmup=False)   # zoo name or file
              for name, spec in (("before", args.before), ("after", args.after))}
    chosen = examples(args.data_root)
    fig, axes = plt.subplots(len(chosen), 4, figsize=(12, 3 * len(chosen)), dpi=80)
    for row, (kind, instance) in enumerate(chosen):
        where = window(instance.mask)
        image = np.asarray(instance.image)
        image = image if image.ndim == 3 else np.repeat(image[..., None], 3, -1)
        for col, (name, predictor) in enumerate(models.items()):
            three, four, clicks = masks(predictor, instance)
            for k, (mask, label) in enumerate(((three, "3 clicks"), (four, "+1 correction"))):
                ax = axes[row, 2 * col + k]
                shown = image[where].astype(float) / max(1, image.max())
                overlay = shown.copy()
                overlay[mask[where]] = 0.5 * overlay[mask[where]] + 0.5 * np.array([0.1, 0.9, 0.2])
                overlay[find_boundaries(instance.mask[where])] = (1.0, 0.2, 0.8)
                ax.imshow(overlay)
                points = clicks["corners"] + clicks["inside"] + (clicks["positive"] + clicks["negative"]
                                                                 if k else [])
                for r, c in points:
                    ax.plot(c - where[1].start, r - where[0].start, "o", ms=5, mec="k",
                            mfc="red" if [r, c] in clicks["negative"] else "yellow")
                score = E.iou(mask, instance.mask, instance.ignore)
                ax.set_title(f"{kind}: {name}, {label}\nIoU {score:.2f}", fontsize=8)
                ax.axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
