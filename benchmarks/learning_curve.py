"""Held-out mIoU@3 against training samples seen, from checkpoints' cards, as a PNG and a table.

    python3 benchmarks/learning_curve.py src/napari_iog/weights/napari-iog-default.pt \\
        --out docs/images/default-model-curve.png

Each checkpoint written by ``napari-iog train`` or ``scripts/train_default.py`` keeps its
validation history (step, mIoU@3 of its held-out objects) and its batch size in its card.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_iog.models import read_checkpoint


def curve(path: Path) -> tuple[str, list[tuple[int, float]]]:
    card = read_checkpoint(path)["card"]
    config = card.get("config", {})
    per_step = int(config.get("batch_size", 1)) * int(config.get("accumulate", 1))
    points = [(int(step) * per_step, float(miou)) for step, miou in card.get("val_history", []) if miou is not None]
    return card.get("arch", path.stem), points


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for path in args.checkpoints:
        arch, points = curve(path)
        print(f"{path.name} ({arch})\n| samples seen | held-out mIoU@3 |\n| --- | --- |")
        for samples, miou in points:
            print(f"| {samples:,} | {miou:.3f} |")
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=f"{path.name} ({arch})")
    ax.set_xlabel("training samples seen")
    ax.set_ylabel("held-out mIoU after 3 clicks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
