"""Domain adaptation on real data: mIoU@3 on held-out images before and after fine-tuning.

    python benchmarks/domain_adaptation.py --dataset sstem --base iog-resnet18 --steps 200
    python benchmarks/domain_adaptation.py --dataset cvppp --base path/to/IOG_PASCAL_SBD.pth

ssTEM (``../shared/data/sstem_vnc``): train on slices 0-15, evaluate on slices 16-19.
CVPPP A1 (``../shared/data/cvppp_a1``): split by plant, plants 1-80 train, 81 on evaluate.
Validation runs the predictor with the simulated user's three clicks (mIoU@3) before training,
every ``--val-every`` steps and at the end. Writes ``<dataset>_<base>.json`` (events, the loss
and mIoU curves, wall-clock time) and a PNG of the curves into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from napari_iog.training import TrainConfig, cvppp_pairs, sstem_pairs, train
from napari_iog.training.events import to_json

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def splits(dataset: str, root: Path):
    if dataset == "sstem":
        return sstem_pairs(root / "sstem_vnc", range(0, 16)), sstem_pairs(root / "sstem_vnc", range(16, 20))
    if dataset == "cvppp":
        return cvppp_pairs(root / "cvppp_a1", range(1, 81)), cvppp_pairs(root / "cvppp_a1", range(81, 1000))
    raise SystemExit(f"unknown dataset {dataset}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("sstem", "cvppp"), required=True)
    parser.add_argument("--base", required=True, help="zoo name, checkpoint path or architecture name")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--val-every", type=int, default=50)
    parser.add_argument("--val-objects", type=int, default=200)
    parser.add_argument("--freeze-backbone", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results" / "domain_adaptation")
    args = parser.parse_args(argv)
    if not args.data_root.is_dir():
        print(f"no data at {args.data_root}: nothing to measure", file=sys.stderr)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    train_pairs, val_pairs = splits(args.dataset, args.data_root)
    tag = f"{args.dataset}_{Path(args.base).stem}{'_frozen' if args.freeze_backbone else ''}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(base=args.base, out=str(args.out_dir / f"{tag}.pt"), steps=args.steps,
                         batch_size=args.batch_size, lr=args.lr, device=args.device,
                         freeze_backbone=args.freeze_backbone, val_every=args.val_every,
                         val_objects=args.val_objects)
    events = []

    def log(event):
        record = json.loads(to_json(event))
        events.append(record)
        if event.kind in ("start", "validation", "end") or record.get("step", 0) % 10 == 0:
            brief = {k: v for k, v in record.items() if k not in ("data", "val_history", "rank_digests")}
            print(json.dumps(brief), flush=True)

    start = time.perf_counter()
    summary = train(config, train_pairs, val_pairs, on_event=log)
    summary["wall_clock_s"] = time.perf_counter() - start
    summary["threads"] = torch.get_num_threads()
    summary["train_images"] = [p.name for p in train_pairs]
    summary["eval_images"] = [p.name for p in val_pairs]
    (args.out_dir / f"{tag}.json").write_text(json.dumps({"summary": summary, "events": events}, indent=1))
    try:
        plot(events, args.out_dir / f"{tag}.png", f"{args.dataset}: {args.base}")
    except ImportError:
        pass
    print(f"mIoU@3 on held-out images: {summary['val_miou_before']:.3f} -> {summary['val_miou_after']:.3f} "
          f"after {summary['steps']} steps, {summary['wall_clock_s'] / 60:.1f} min")
    return 0


def plot(events, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e for e in events if e["event"] == "step"]
    vals = [e for e in events if e["event"] == "validation"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot([e["step"] for e in steps], [e["loss"] for e in steps], lw=0.8)
    a.set_xlabel("step"), a.set_ylabel("loss (mean BCE per pixel)"), a.set_yscale("log")
    b.plot([e["step"] for e in vals], [e["miou"] for e in vals], "o-")
    b.set_xlabel("step"), b.set_ylabel("held-out mIoU@3"), b.set_ylim(0, 1)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
