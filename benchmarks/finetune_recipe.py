"""Which fine-tuning recipe adapts the default to a domain, at a fixed CPU budget.

    python benchmarks/finetune_recipe.py --domains sstem cvppp dsb2018 \\
        --recipes lr=1e-4 lr=1e-3 "lr=3e-4,coarse_weight=0.1" "optimizer=sgd,lr=1e-3,coarse_weight=0" \\
        [--steps 200] [--batch-size 4] [--objects 100] [--out FILE]

For each domain, ``napari-iog train``'s loop fine-tunes the shipped default on the domain's
training part (ssTEM slices 0-9, CVPPP plants 1-80, the first 60 DSB2018 images that are not held out;
for the two domains the default never saw, from ``get-more.sh``'s folder ``--more-root``: MoNuSeg's 13
training tiles with their XML, CWFID's training images),
``--steps`` steps of ``--batch-size``, once per recipe (``TrainConfig`` fields, ``name=value``
separated by commas; the rest at ``napari-iog train``'s defaults), and the simulated user (20
clicks) scores the result on ``--objects`` held-out objects (``evaluate --dataset
sstem|cvppp|dsb2018``), a fixed random choice over every held-out image (``--held-out first``: the
first in file order, as the runs before 2026-12-05's sixth session); the default itself is scored first. Writes
mIoU@3, mIoU@5, NoC@90, the share of objects never at 0.90, the share of corrections that made
the mask worse and the training seconds of each run as JSON. ``--training-objects N`` also scores N
objects of the training part itself (a fixed random choice), under ``"training_part"``: a recipe
that lowers even the objects it trained on is spoiling the network, not failing to generalise.
``--validate 0.2`` holds out that share of the training part's images as ``napari-iog train`` does; their
objects validate the run, and (with ``blend=default`` in the recipe) choose at its end between keeping all
that training changed and halfway, as ``napari-iog train`` saves by default.
Each run keeps all that training changed (``blend=1``, unless the recipe names a ``blend``); ``--blends
0.5 ...`` also scores its weights moved back toward the default's (base + share x (tuned - base), as
WiSE-FT does), without training again: 0.5 is what ``napari-iog train`` saves by default. (Runs before
2026-12-06's twelfth session left the blend at that default, so their "recipe" rows were halfway and
their "blend 0.5" rows a quarter of the way.)
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import torch

from napari_iog import zoo
from napari_iog.evaluation import IOGMethod, evaluate
from napari_iog.models.checkpoint import load_model
from napari_iog.predictor import IOGPredictor
from napari_iog.training import TrainConfig, split_pairs, train, validation_instances
from napari_iog.training.config import _kind
from napari_iog.training.loop import blended_weights
from napari_iog.training.sources import held_out_domain

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


#: the domains the shipped default never trained on, read from ``get-more.sh``'s folder
UNSEEN = ("monuseg", "cwfid")


def training_part(domain: str, root: Path):
    from napari_iog.training.data import cvppp_pairs, sstem_pairs
    from napari_iog.training.sources import cwfid_pairs, dsb_pairs, monuseg_pairs

    if domain == "monuseg":
        return monuseg_pairs(root / "monuseg")
    if domain == "cwfid":
        return cwfid_pairs(root / "cwfid")
    if domain == "sstem":
        return sstem_pairs(root / "sstem_vnc", range(0, 10))
    if domain == "cvppp":
        return cvppp_pairs(root / "cvppp_a1", range(1, 81))
    return dsb_pairs(root / "dsb2018")[:60]


def simulate(model, instances) -> dict:
    """The simulated user's run (20 clicks, the cleaned masks the annotator commits, float32 torch)."""
    predictor = IOGPredictor(model, device="cpu", precision="float32", warmup=False, backend="torch")
    return evaluate(IOGMethod(predictor, postprocess=True), instances, max_clicks=20)


def score(model, instances) -> dict:
    summary = simulate(model, instances)["summary"]
    return {"miou@3": round(summary["miou@3"], 4), "miou@5": round(summary["miou@5"], 4),
            "noc@90": summary["noc90"], "never@90": round(summary["never90"], 3),
            "worse": round(summary["worse_corrections"], 3)}


def blend(base: str, tuned: str, share: float) -> torch.nn.Module:
    """The network whose weights lie ``share`` of the way from ``base``'s to ``tuned``'s."""
    model = load_model(tuned)
    model.load_state_dict(blended_weights(load_model(zoo.resolve(base)).state_dict(), model.state_dict(), share))
    return model


def recipe(text: str, of=TrainConfig, fixed=("out", "steps", "batch_size")) -> dict:
    """``"lr=1e-3,coarse_weight=0.1"`` as fields of the dataclass ``of``, of their types (the
    ``fixed`` ones are the benchmark's to set)."""
    types = {f.name: _kind(f.type) for f in fields(of)}
    settings = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in types or name in fixed:
            raise SystemExit(f"not a setting here: {name!r}")
        kind = types[name]
        if value == "default":
            settings[name] = None
        else:
            settings[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return settings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=["sstem", "cvppp", "dsb2018"])
    parser.add_argument("--recipes", nargs="+", default=["lr=1e-4", "lr=1e-3"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--held-out", choices=("spread", "first"), default="spread",
                        help="which held-out objects score: a fixed random choice over every held-out image "
                             "(spread), or the first in file order (first: the runs before 2026-12-05's sixth "
                             "session, which took 60 objects from 1-5 images)")
    parser.add_argument("--validate", type=float, default=0.0,
                        help="hold out this share of the training part's images for the run's validation, as "
                             "napari-iog train does (0.2 there); 0 (default): none")
    parser.add_argument("--training-objects", type=int, default=0,
                        help="also score this many objects of the training part (0: none)")
    parser.add_argument("--blends", nargs="*", type=float, default=[],
                        help="also score base + a (tuned - base) for each a given (weight-space ensembles, "
                             "WiSE-FT): a < 1 keeps part of what the default knew")
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--more-root", type=Path, default=None,
                        help=f"get-more.sh's folder, for the domains {' and '.join(UNSEEN)}")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finetune-recipe.json")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep each run's weights (as training saved them) in this folder, as DOMAIN-N.pt "
                             "for the Nth recipe, for a later look (noc_by_size.py --models)")
    args = parser.parse_args(argv)
    results: dict = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                     "date": time.strftime("%Y-%m-%d"), "base": zoo.DEFAULT_MODEL, "steps": args.steps,
                     "batch_size": args.batch_size, "objects": args.objects, "held_out": args.held_out,
                     "domains": {}}
    for domain in args.domains:
        root = args.data_root
        if domain in UNSEEN:
            if args.more_root is None:
                raise SystemExit(f"{domain}: give --more-root, the folder get-more.sh wrote")
            root = args.more_root
        held_out = held_out_domain(domain, root)
        if args.held_out == "first":
            instances = validation_instances(held_out, limit=None)[:args.objects]
        else:
            instances = validation_instances(held_out, limit=args.objects, seed=0)
        pairs, val_pairs, _ = split_pairs(training_part(domain, root), args.validate)
        seen = validation_instances(pairs, limit=args.training_objects, seed=0) if args.training_objects else []

        def scores(model) -> dict:
            return {**score(model, instances), **({"training_part": score(model, seen)} if seen else {})}

        runs = {"default": scores(zoo.DEFAULT_MODEL)}
        print(domain, "default", runs["default"], flush=True)
        for index, text in enumerate(args.recipes, 1):
            with tempfile.TemporaryDirectory() as folder:
                out = Path(folder) / "tuned.pt"
                config = TrainConfig(out=str(out), steps=args.steps, batch_size=args.batch_size,
                                     **{"val_objects": 200 if val_pairs else 0, "blend": 1.0, **recipe(text)})
                started = time.perf_counter()
                summary = train(config, pairs, val_pairs)
                seconds = time.perf_counter() - started
                runs[text] = {**scores(str(out)), "train_seconds": round(seconds, 1), "blend": summary["blend"],
                              "lr": summary["lr"], "val_miou_before": summary["val_miou_before"],
                              **({"blend_scores": summary["blend_scores"]} if summary["blend_scores"] else {})}
                print(domain, text, runs[text], flush=True)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(out, args.keep / f"{domain}-{index}.pt")
                for share in args.blends:
                    name = f"{text}, blend {share:g}"
                    runs[name] = scores(blend(zoo.DEFAULT_MODEL, str(out), share))
                    print(domain, name, runs[name], flush=True)
        results["domains"][domain] = runs
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
