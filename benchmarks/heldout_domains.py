"""mIoU@3 (and NoC) of models on held-out microscopy and plant objects, beside the box and
OpenCV GrabCut from the same clicks.

    python3 benchmarks/heldout_domains.py --models napari-iog-default old-default.pt \\
        --out benchmarks/results/heldout-domains.json

Held out from the shipped default's training (``scripts/train_default.py``): DSB2018 every
10th image (light-microscopy nuclei), ssTEM stack1 slices 10-19 (cell profiles), CVPPP A1
plants 81 on (leaves). At most ``--objects`` per domain, a fixed random choice.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_iog import IOGPredictor
from napari_iog import evaluation as E
from napari_iog.training.data import validation_instances
from napari_iog.training.sources import held_out_domain

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DOMAINS = {   # the result file's label -> the held-out domain (training.sources.held_out_domain)
    "dsb2018 (every 10th image)": "dsb2018",
    "sstem (slices 10-19)": "sstem",
    "cvppp (plants 81+)": "cvppp",
}


def methods(models: list[str]):
    for spec in models:
        predictor = IOGPredictor(spec, device="cpu", precision="float32", warmup=False)   # a zoo name or a file
        yield spec, E.IOGMethod(predictor, name=spec)
    yield "box", E.BoxBaseline()
    try:
        yield "opencv-grabcut", E.GrabCutBaseline()
    except ImportError:
        print("skip OpenCV GrabCut: cv2 is not installed", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["napari-iog-default"])
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--max-clicks", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results: dict[str, dict] = {}
    for domain, name in DOMAINS.items():
        try:
            pairs = held_out_domain(name, args.data_root)
        except FileNotFoundError as err:
            print(f"skip {domain}: {err}", file=sys.stderr)
            continue
        instances = validation_instances(pairs, limit=args.objects, seed=0)
        results[domain] = {"objects": len(instances)}
        for name, method in methods(args.models):
            summary = E.evaluate(method, instances, max_clicks=args.max_clicks)["summary"]
            results[domain][name] = {k: summary[k] for k in summary if k.startswith(("miou", "noc"))}
            print(f"{domain} | {name} | mIoU@3 {summary['miou@3']:.3f}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"max_clicks": args.max_clicks, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
