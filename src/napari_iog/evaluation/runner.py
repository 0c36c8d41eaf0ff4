"""The benchmark runner: a method over a dataset under the simulated user, its results written as
JSON and CSV, and the mIoU curves plotted.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .clicks import extreme_points, initial_clicks, next_click
from .datasets import Instance
from .metrics import DEFAULT_MAX_CLICKS, iou, noc, summarize

#: A correction "made the mask worse" when the IoU fell by more than this (not by rounding).
WORSE_BY = 1e-4


@dataclass
class ClickSession:
    """One simulated user's object: the IoU after each click (index k-1 for click k), the last
    mask, the clicks, and how many corrections were made and made the mask worse."""

    ious: list[float]
    prediction: np.ndarray
    clicks: dict[str, list]
    corrections: int
    worse: int


def click_session(method, instance: Instance, max_clicks: int = DEFAULT_MAX_CLICKS,
                  stop_at: float | None = None) -> ClickSession:
    """Simulate one user on one object, up to ``max_clicks`` (or until the IoU reaches
    ``stop_at``); the IoUs are padded with the last one up to ``max_clicks``."""
    mask, ignore = instance.mask.astype(bool), instance.ignore
    if getattr(method, "dextr", False):
        clicks: dict[str, list] = {"extreme": extreme_points(mask)}
    else:
        clicks = {**initial_clicks(mask), "positive": [], "negative": []}
    ious = [0.0] * (method.first_click - 1)
    prediction = method.segment(instance.image, clicks)
    ious.append(iou(prediction, mask, ignore))
    corrections = worse = 0
    while len(ious) < max_clicks:
        done = stop_at is not None and ious[-1] >= stop_at
        click = next_click(prediction, mask, ignore) if method.takes_corrections() and not done else None
        if click is None:   # no error left, done, or a method without corrections: the result stays
            ious.append(ious[-1])
            continue
        point, positive = click
        clicks["positive" if positive else "negative"].append(point)
        prediction = method.segment(instance.image, clicks)
        ious.append(iou(prediction, mask, ignore))
        corrections += 1
        worse += int(ious[-1] < ious[-2] - WORSE_BY)
    return ClickSession(ious, prediction, clicks, corrections, worse)


def evaluate_instance(method, instance: Instance, max_clicks: int = DEFAULT_MAX_CLICKS) -> dict[str, Any]:
    """Simulate one user on one object; returns per-click IoUs (index k-1 for click k) and NoC."""
    start = time.perf_counter()
    session = click_session(method, instance, max_clicks)
    ious = session.ious
    return {"name": instance.name, "ious": ious, "noc85": noc(ious, 0.85, max_clicks),
            "noc90": noc(ious, 0.90, max_clicks), "corrections": session.corrections, "worse": session.worse,
            "seconds": time.perf_counter() - start}


def evaluate(method, instances: Iterable[Instance], max_clicks: int = DEFAULT_MAX_CLICKS,
             progress: Callable[[int, int, dict], None] | None = None) -> dict[str, Any]:
    """Run the simulated user over a dataset; returns ``{"method", "summary", "instances"}``."""
    instances = list(instances)
    results = []
    for i, instance in enumerate(instances):
        results.append(evaluate_instance(method, instance, max_clicks))
        if progress:
            progress(i + 1, len(instances), results[-1])
    return {"method": method.name, "max_clicks": max_clicks, "summary": summarize(results, method.first_click),
            "instances": results}


def write_results(result: dict[str, Any], out_dir: str | Path, tag: str) -> dict[str, Path]:
    """``<tag>.json`` (everything) and ``<tag>.csv`` (one row per object)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / f"{tag}.json", out / f"{tag}.csv"
    json_path.write_text(json.dumps(result, indent=1))
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        k = result["max_clicks"]
        writer.writerow(["name", "noc85", "noc90", "seconds"] + [f"iou@{i}" for i in range(1, k + 1)])
        for r in result["instances"]:
            writer.writerow([r["name"], r["noc85"], r["noc90"], f"{r['seconds']:.3f}"]
                            + [f"{v:.4f}" for v in r["ious"]])
    return {"json": json_path, "csv": csv_path}


def plot_curves(summaries: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """mIoU against clicks for several methods, as a PNG (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, summary in summaries.items():
        if not summary.get("miou_at"):
            continue
        first = summary.get("first_click", 1)
        ks = [k for k in map(int, summary["miou_at"]) if k >= first]
        ax.plot(ks, [summary["miou_at"][k] if k in summary["miou_at"] else summary["miou_at"][str(k)]
                     for k in ks], marker="o", markersize=3, label=label)
    ax.set_xlabel("clicks")
    ax.set_ylabel("mIoU")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def summary_table(summaries: dict[str, dict[str, Any]]) -> str:
    """The click curve's main points, a line per method, as the CLI prints them."""
    def at(s, k):
        value = s.get(f"miou@{k}")
        return f"{value:7.3f}" if value is not None else f"{'-':>7s}"

    lines = [f"\n{'method':26s} {'objects':>7s} {'mIoU@3':>7s} {'@5':>7s} {'@10':>7s} {'NoC@85':>7s} "
             f"{'NoC@90':>7s} {'never90':>7s} {'worse':>6s} {'>0.01':>6s} {'s/obj':>6s}"]
    for name, s in summaries.items():
        lines.append(f"{name:26s} {s['objects']:7d} {at(s, 3)} {at(s, 5)} {at(s, 10)} {s['noc85']:7.2f} "
                     f"{s['noc90']:7.2f} {s['never90']:7.1%} {s['worse_corrections']:6.1%} "
                     f"{s.get('clearly_worse_corrections', 0.0):6.1%} "
                     f"{s['seconds_per_object']:6.2f}")
    lines.append("never90: objects never at IoU 0.90 within the clicks; worse: corrections after which the IoU fell "
                 "(>0.01: by more than 0.01)")
    return "\n".join(lines)
