"""The whole click curve of a model (mIoU@k for k = 3..20, NoC@85/90, objects never at 0.90,
corrections that made the mask worse) on GrabCut and Berkeley, plotted against OpenCV
GrabCut's curve from the same simulated clicks.

    python3 benchmarks/click_curves.py [--model napari-iog-default] [--data-root ../shared/data] \\
        [--out benchmarks/results/click-curves.json] [--plot docs/images/click-curves.png]

The model runs in float32 on torch (the issue's protocol: no fast extra), raw output as the
published protocol scores it. GrabCut's curves come from ``benchmarks/results/evaluation``
(``napari-iog evaluate --model grabcut``, 20 clicks), which take ~10 s an object to remake.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_iog import IOGPredictor
from napari_iog import evaluation as E

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "benchmarks" / "results" / "evaluation"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="napari-iog-default")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "click-curves.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "images" / "click-curves.png")
    args = parser.parse_args(argv)
    predictor = IOGPredictor(args.model, device="cpu", precision="float32", backend="torch")
    method = E.IOGMethod(predictor, name=Path(args.model).stem)
    results = {}
    for dataset in ("grabcut", "berkeley"):
        try:
            instances = E.load_dataset(dataset, args.data_root)
        except FileNotFoundError as err:
            print(f"skip {dataset}: {err}", file=sys.stderr)
            continue
        summaries = {method.name: E.evaluate(method, instances, args.max_clicks)["summary"]}
        stored = STORED / f"{dataset}_opencv-grabcut.json"
        if stored.is_file():
            summaries["OpenCV GrabCut"] = json.loads(stored.read_text())["summary"]
        results[dataset] = summaries
        print(f"{dataset}:{E.summary_table({method.name: summaries[method.name]})}")
    args.out.write_text(json.dumps({"model": args.model, "max_clicks": args.max_clicks, "results": results},
                                   indent=1))
    _plot(results, args.plot)
    print(f"wrote {args.out} and {args.plot}")
    return 0


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), dpi=110, squeeze=False)
    for ax, (dataset, summaries) in zip(axes[0], results.items()):
        for label, summary in summaries.items():
            ks = [k for k in map(int, summary["miou_at"]) if k >= 3]
            ax.plot(ks, [summary["miou_at"][str(k)] if str(k) in summary["miou_at"] else summary["miou_at"][k]
                         for k in ks], marker="o", markersize=3, label=label)
        ax.set_title(f"{dataset}: mIoU against clicks")
        ax.set_xlabel("clicks (3 = box corners + inside)")
        ax.set_ylabel("mIoU")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
