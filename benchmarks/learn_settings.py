"""Which learner settings pay off in a simulated session (``napari-iog evaluate --learn``'s), at
a fixed number of training steps per committed object (not wall clock, so runs compare).

    python3 benchmarks/learn_settings.py --dataset cvppp --settings "lr=1e-4,coarse_weight=1" \\
        "lr=3e-4,coarse_weight=0.1" [--objects 50] [--warmup 30] [--steps 6] [--commit true] [--out FILE]

Each setting is ``LearnSettings`` fields, ``name=value`` separated by commas; the rest at their
defaults. The same objects (the held-out part of ``--dataset``, in file order) are annotated by
the simulated user with and without learning; printed and written: mIoU@3 and NoC@90 of the
objects after ``--warmup``, with and without, per setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from napari_iog import zoo
from napari_iog.cli_evaluate import _evaluation_instances
from napari_iog.learning import LearnSettings, simulate
from napari_iog.models import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_recipe import recipe  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cvppp")
    parser.add_argument("--settings", nargs="+", default=["lr=1e-4,coarse_weight=1", "lr=3e-4,coarse_weight=0.1"])
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--commit", choices=("shown", "true"), default="true")
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    instances = _evaluation_instances(args.dataset, str(args.data_root))[:args.objects]
    results = {"dataset": args.dataset, "objects": len(instances), "warmup": args.warmup, "steps": args.steps,
               "commit": args.commit, "date": time.strftime("%Y-%m-%d"), "settings": {}}
    out = args.out or Path(__file__).parent / "results" / f"learn-settings-{args.dataset}.json"
    for text in args.settings:
        started = time.perf_counter()
        settings = LearnSettings(**recipe(text, LearnSettings, fixed=()))
        result = simulate(load_model(zoo.resolve(zoo.DEFAULT_MODEL)), instances, settings,
                          learn_steps=args.steps, warmup=args.warmup, commit=args.commit)
        after = result["after_warmup"]
        # the objects after whose check the candidate trained at the unseen-domain rate (UNSEEN_LR)
        faster = sum(row["report"]["lr"] != settings.lr for row in result["objects"])
        results["settings"][text] = {**after, "swaps": result.get("swaps"), "objects_at_unseen_lr": faster,
                                     "seconds": round(time.perf_counter() - started)}
        print(text, results["settings"][text], flush=True)
        out.write_text(json.dumps(results, indent=1))     # after each setting: a stopped run keeps those done
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
