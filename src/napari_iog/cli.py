"""``napari-iog``: the command line (also ``python -m napari_iog``).

    napari-iog weights list | fetch NAME | verify PATH_OR_NAME
    napari-iog evaluate --dataset grabcut --model iog-pascal-sbd [--model box ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


class ProgressBar:
    """A one-line progress bar on stderr: done/total, rate, ETA and a message."""

    def __init__(self, total: int | None, label: str = "", stream=None):
        self.total, self.label, self.start = total, label, time.monotonic()
        self.stream = stream or sys.stderr

    def update(self, done: int, message: str = "") -> None:
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.total:
            width = 24
            filled = int(width * done / self.total)
            eta = (self.total - done) / rate if rate > 0 else float("nan")
            text = (f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                    f"{rate:.2f}/s ETA {eta:.0f}s {message}")
        else:
            text = f"\r{self.label} {done} {message}"
        self.stream.write(text[:160].ljust(100))
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _weights(args) -> int:
    from . import zoo

    if args.action == "list":
        print(f"cache: {zoo.cache_dir()}  (set {zoo.CACHE_ENV} to move it)")
        for row in zoo.list_weights():
            mark = "present" if row["present"] else "missing"
            print(f"  {row['name']:28s} {row['arch']:22s} {mark:8s} {row['filename']}")
            print(f"  {'':28s} trained on {row['trained_on']}; {row['source']}")
        return 0
    if args.action == "fetch":
        bar = ProgressBar(None, f"fetch {args.name}")

        def progress(done, total):
            bar.total = total
            bar.update(done // (1 << 20), "MiB" if not total else "")

        try:
            path = zoo.fetch(args.name, progress=progress)
        except zoo.ManualDownloadRequired as err:
            print(err)
            return 2
        print(f"\n{args.name}: {path}")
        return 0
    report = zoo.verify(args.name)
    print(json.dumps({k: v for k, v in report.items() if k != "card"}, indent=1))
    return 0


def _method(spec: str, device: str):
    from . import evaluation as E

    if spec == "box":
        return E.BoxBaseline()
    if spec in ("grabcut", "opencv-grabcut"):
        return E.GrabCutBaseline()
    from .predictor import IOGPredictor

    return E.IOGMethod(IOGPredictor(spec, device=device), name=Path(spec).stem if Path(spec).is_file() else spec)


def _evaluate(args) -> int:
    from . import evaluation as E

    instances = E.load_dataset(args.dataset, args.data_root)
    if args.limit:
        instances = instances[:args.limit]
    out = Path(args.out)
    summaries = {}
    dataset_tag = Path(str(args.dataset)).name
    for spec in args.model:
        method = _method(spec, args.device)
        bar = ProgressBar(len(instances), f"{method.name} on {dataset_tag}")
        result = E.evaluate(method, instances, args.max_clicks,
                            progress=lambda i, n, r: bar.update(i, f"IoU@3 {r['ious'][2]:.3f}"))
        bar.close()
        result["dataset"] = str(args.dataset)
        tag = f"{dataset_tag}_{method.name}".replace("/", "_")
        E.write_results(result, out, tag)
        summaries[method.name] = result["summary"]
    print(f"\n{'method':28s} {'objects':>7s} {'mIoU@3':>7s} {'NoC@85':>7s} {'NoC@90':>7s} {'s/object':>9s}")
    for name, s in summaries.items():
        print(f"{name:28s} {s['objects']:7d} {s['miou@3']:7.3f} {s['noc85']:7.2f} {s['noc90']:7.2f} "
              f"{s['seconds_per_object']:9.2f}")
    (out / f"{dataset_tag}_summary.json").write_text(json.dumps(summaries, indent=1))
    if not args.no_plot:
        try:
            E.plot_curves(summaries, out / f"{dataset_tag}_miou.png", f"{dataset_tag}: mIoU against clicks")
        except ImportError:
            print("(no plot: matplotlib is not installed; pip install 'napari-iog[benchmark]')")
    print(f"results in {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-iog", description="IOG segmentation from the command line")
    sub = parser.add_subparsers(dest="command", required=True)
    weights = sub.add_parser("weights", help="the model zoo: list, fetch, verify")
    weights.add_argument("action", choices=["list", "fetch", "verify"])
    weights.add_argument("name", nargs="?", help="a zoo name (fetch) or a name or path (verify)")
    evaluate = sub.add_parser("evaluate", help="simulated-user evaluation (mIoU@k, NoC@85/90)")
    evaluate.add_argument("--dataset", required=True,
                          help="grabcut, berkeley, or a folder (GrabCut/Berkeley layout or images/ + labels/)")
    evaluate.add_argument("--model", action="append", required=True,
                          help="a zoo name, a checkpoint path, 'box' or 'grabcut'; repeat to compare")
    evaluate.add_argument("--data-root", default=None, help="where grabcut/ and berkeley/ are (../shared/data)")
    evaluate.add_argument("--max-clicks", type=int, default=20)
    evaluate.add_argument("--limit", type=int, default=0, help="only the first N objects")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--out", default="evaluation")
    evaluate.add_argument("--no-plot", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "weights":
            if args.action != "list" and not args.name:
                raise SystemExit(f"napari-iog weights {args.action} needs a name")
            return _weights(args)
        return _evaluate(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"napari-iog: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
