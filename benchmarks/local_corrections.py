"""Would keeping a correction's change local help? A correction re-runs the whole network, so
the mask may also move far from the click. Here, of what changed between the object's first
(cleaned) mask and the corrected one, only the 8-connected pieces within ``--touch`` px of a
correction click are kept; the rest of the mask stays the first mask. Scored by the simulated
user (20 clicks) against the plain corrected mask.

    python3 benchmarks/local_corrections.py [--sets grabcut berkeley] [--touch 2] [--opened]
        [--out benchmarks/results/local-corrections.json]

``--opened``: the change is opened (3x3) first, so thin seams along the edge do not join far
parts to the click's piece.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from napari_iog.evaluation import IOGMethod, evaluate
from napari_iog.predictor import IOGPredictor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from correction_candidates import DATA, KEPT, instances  # noqa: E402


class LocalCorrections(IOGMethod):
    """The cleaned mask a user gets, with each correction's change kept near its click."""

    def __init__(self, predictor, touch: int, opened: bool):
        super().__init__(predictor, f"local, {touch} px{', opened' if opened else ''}", postprocess=True)
        self.touch, self.opened = touch, opened
        self._first: tuple | None = None

    def segment(self, image, clicks) -> np.ndarray:
        corrected = super().segment(image, clicks)
        points = [*clicks["positive"], *clicks["negative"]]
        if not points:
            self._first = (id(image), str(clicks["corners"]), corrected)
            return corrected
        first = self._first[2] if self._first[:2] == (id(image), str(clicks["corners"])) else \
            super().segment(image, {**clicks, "positive": [], "negative": []})
        change = corrected != first
        if self.opened:
            change = ndimage.binary_opening(change, np.ones((3, 3), bool))
        pieces, _ = ndimage.label(change, np.ones((3, 3), bool))
        t = self.touch
        near = {int(v) for r, c in points for v in np.unique(pieces[max(r - t, 0):r + t + 1, max(c - t, 0):c + t + 1])}
        out = first.copy()
        kept = np.isin(pieces, sorted(near - {0}))
        out[kept] = corrected[kept]
        for r, c in points:                    # the clicked pixels answer as the corrected mask does
            out[r, c] = corrected[r, c]
        return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["grabcut", "berkeley"])
    parser.add_argument("--touch", type=int, default=2)
    parser.add_argument("--opened", action="store_true")
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "local-corrections.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    predictor = IOGPredictor("napari-iog-default", device="cpu", precision="float32", backend="torch", warmup=False)
    results = {}
    for name in args.sets:
        objects = instances(name, DATA, args.objects)[:args.objects]
        for method in (IOGMethod(predictor, "as it is", postprocess=True),
                       LocalCorrections(predictor, args.touch, args.opened)):
            summary = evaluate(method, objects, max_clicks=20)["summary"]
            results[f"{name}: {method.name}"] = {k: round(float(summary[k]), 4) for k in KEPT}
            print(name, method.name, results[f"{name}: {method.name}"], flush=True)
    args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
