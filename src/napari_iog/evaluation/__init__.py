"""Evaluation by simulated users, the protocol the interactive segmentation field reports.

* Clicks 1-3 (IOG): the two opposite corners of the object's tight bounding box, then one
  inside click at the most interior pixel (distance transform maximum). DEXTR models get the
  four extreme points instead (clicks 1-4).
* Click k > 3: at the most interior pixel of the larger error region, the largest connected
  region of false negatives (a positive click) or of false positives (a negative click),
  up to ``max_clicks`` (20).
* IoU excludes "ignore" pixels where a dataset has them (GrabCut's 128 band).
* mIoU@k over objects for each k; NoC@85 / NoC@90: the clicks needed to reach IoU 0.85 / 0.90,
  ``max_clicks`` when never reached. A method's IoU before it has enough clicks (k < 3 for
  IOG) counts as 0.

``datasets`` (the benchmarks and folders as objects), ``clicks`` (the simulated user, shared
with training), ``metrics``, ``methods`` (IOG and the baselines) and ``runner`` (a method
over a dataset, results written and plotted).
"""

from .clicks import extreme_points, initial_clicks, next_click
from .datasets import (
    Instance,
    berkeley_dataset,
    folder_dataset,
    folder_pairs,
    grabcut_dataset,
    labels_instances,
    load_dataset,
)
from .methods import BoxBaseline, GrabCutBaseline, IOGMethod
from .metrics import DEFAULT_MAX_CLICKS, iou, noc, summarize
from .runner import evaluate, evaluate_instance, plot_curves, summary_table, write_results

__all__ = [
    "DEFAULT_MAX_CLICKS", "BoxBaseline", "GrabCutBaseline", "IOGMethod", "Instance", "berkeley_dataset",
    "evaluate", "evaluate_instance", "extreme_points", "folder_dataset", "folder_pairs", "grabcut_dataset",
    "initial_clicks", "iou", "labels_instances", "load_dataset", "next_click", "noc", "plot_curves",
    "summarize", "summary_table", "write_results",
]
