"""The recipe for a default IOG model trained on the project's shared training data.

    python3 scripts/get_imagenet_trunk.py --out mobilenetv2_imagenet.pt
    python3 scripts/train_default.py --out napari-iog-default.pt --arch iog-mobilenetv2 \
        --imagenet mobilenetv2_imagenet.pt --sets bsds,cvppp,sstem,dsb,coco,ccp,pets \
        --natural-root ../natural --dsb-images 80 --repeat coco=2,pets=2 --amp bf16 ...

(the shipped default's exact command is in its model card, ``src/napari_iog/weights/README.md``).

Data (``../shared/data``, or ``--data-root``): BSDS500 test regions (every region of one human
map is an object), CVPPP A1 leaves, the ssTEM stack1 cell profiles (``--sstem-slices``, all 20
by default) and DSB2018 nuclei (every 10th image is never trained on: it measures; ``--dsb-images``
takes an even share of the rest); with ``--natural-root`` (the folder ``get-natural.sh`` filled,
see ``shared/data/NATURAL.md``) the COCO subsets, Clothing Co-Parsing and the Oxford pets, where
``--repeat`` weighs a set more. A set that is absent is skipped with a line saying so.
Never GrabCut or Berkeley: they measure the result. A share of the images
(``--val-fraction``) is held out for the validation curve. ``--synthetic N`` adds N scenes
of random shapes and pasted objects made from the training images
(:mod:`napari_iog.training.synthetic`): they teach a network started from random weights to
follow the image's boundaries rather than fill the box.

``--init``: start from an earlier run's checkpoint instead (a second stage: a new warm-up and
cosine schedule over ``--steps``); this is how the shipped CPU-trained default was made, see
``src/napari_iog/weights/README.md``.

``--imagenet``: an ImageNet state_dict of the trunk (torchvision's resnet18/34/50/101 or
mobilenet_v2, or the MobileNetV2 file ``get_imagenet_trunk.py`` fetches); the two
guidance channels of the first conv start at zero, as in the published recipe. Without it the
network starts from random weights, which needs far more steps.

At the end the model is evaluated with the simulated user on GrabCut and Berkeley (mIoU@3,
NoC@85/90, up to ``--max-clicks``) when they are present, and the figures go into the model
card with the data and their licences. Ctrl+C (or SIGTERM) stops after the current step and
saves; ``--resume`` continues from ``OUT.state.pt``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

import torch

from napari_iog import evaluation as E
from napari_iog.models import build_model, load_imagenet_weights, load_model, save_model
from napari_iog.models.mobilenet import load_mobilenet_imagenet
from napari_iog.predictor import IOGPredictor
from napari_iog.training import TrainConfig, bsds_pairs, cvppp_pairs, split_pairs, sstem_pairs, train
from napari_iog.training.config import LOSSES
from napari_iog.training.events import to_json
from napari_iog.training.sources import (
    CCP_SOURCE,
    COCO_SOURCE,
    PETS_SOURCE,
    ccp_pairs,
    coco_pairs,
    dsb_pairs,
    pet_pairs,
)
from napari_iog.training.synthetic import synthetic_pairs

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


#: the natural sets of shared/data/NATURAL.md, as get-natural.sh lays them out
NATURAL_SETS = {"coco": ("coco_person_val2017", "coco_mini", "coco_tiny"), "ccp": ("clothing_co_parsing",),
                "pets": ("oxford_pets_sample",)}


#: sets whose terms do not allow weights for any use (research-only, NC, or photos of unclear rights)
RESTRICTED_SETS = ("bsds", "cvppp", "sstem", "ccp")


def natural_pairs(root: Path | None, sets: list[str], permissive: bool = False):
    """``permissive``: COCO without its images under non-commercial Flickr licences."""
    pairs = []
    readers = {"coco": lambda folder: coco_pairs(folder, noncommercial=not permissive), "ccp": ccp_pairs,
               "pets": pet_pairs}
    for name, folders in NATURAL_SETS.items():
        if name not in sets:
            continue
        for folder in folders:
            if root is None or not (root / folder).is_dir():
                print(f"skip {folder}: not in {root} (see shared/data/NATURAL.md)", file=sys.stderr)
                continue
            found = readers[name](root / folder)
            print(f"{folder}: {len(found)} images", file=sys.stderr)
            pairs += found
    return pairs


def training_pairs(root: Path, sstem_slices: list[int], sets: list[str], dsb_images: int | None = None,
                   cvppp_plants: list[int] | None = None):
    pairs = []
    if "dsb" in sets and (root / "dsb2018").is_dir():
        dsb = dsb_pairs(root / "dsb2018")     # every 10th image stays out: the nuclei benchmark
        pairs += dsb[::max(1, len(dsb) // dsb_images)][:dsb_images] if dsb_images else dsb
    if "bsds" in sets:
        pairs += bsds_pairs(root / "bsds500_test_regions")
    if "cvppp" in sets:
        pairs += cvppp_pairs(root / "cvppp_a1", cvppp_plants)
    if "sstem" in sets:
        pairs += sstem_pairs(root / "sstem_vnc", sstem_slices)
    return pairs


def base_checkpoint(arch: str, imagenet: Path | None, folder: Path, seed: int) -> Path:
    model = build_model(arch, seed=seed)
    card = {"name": f"{arch} start", "init": "random"}
    if imagenet is not None:
        state = torch.load(imagenet, map_location="cpu", weights_only=True)
        load = load_mobilenet_imagenet if arch == "iog-mobilenetv2" else load_imagenet_weights
        load(model.backbone, state)
        card["init"] = f"ImageNet trunk from {imagenet.name}"
    return save_model(model, folder / f"{arch}-start.pt", card)


def licence_note(sources: list[str]) -> str:
    """What the weights inherit from the terms of their data (each source names its terms)."""
    restricted = [s for s in sources if "NC" in s or "research" in s or "Flickr" in s]
    if not restricted:
        return "no set with non-commercial terms; see each set's terms"
    return ("non-commercial research use: inherited from " + "; ".join(restricted)
            + " (COCO images carry their own Flickr licences, some of them non-commercial)"
            * any("Flickr" in s for s in restricted))


def evaluate(path: Path, root: Path, device: str, max_clicks: int) -> dict:
    predictor = IOGPredictor(load_model(path), device=device)
    method = E.IOGMethod(predictor, name="default")
    results = {}
    for name in ("grabcut", "berkeley"):
        if not (root / name).is_dir():
            continue
        instances = E.load_dataset(name, root)
        summary = E.evaluate(method, instances, max_clicks=max_clicks)["summary"]
        results[name] = {"objects": summary["objects"], "miou@3": summary["miou@3"], "noc85": summary["noc85"],
                         "noc90": summary["noc90"], "max_clicks": max_clicks}
        print(f"{name}: {results[name]}", file=sys.stderr)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arch", default="iog-resnet18")
    parser.add_argument("--imagenet", type=Path, default=None, help="torchvision ImageNet weights of the trunk")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from this checkpoint (an earlier stage) instead of --arch/--imagenet")
    parser.add_argument("--synthetic", type=int, default=0,
                        help="add this many synthetic scenes made from the training images (0)")
    parser.add_argument("--sets", default="bsds,cvppp,sstem",
                        help="any of bsds, cvppp, sstem, dsb (shared/data) and coco, ccp, pets (--natural-root)")
    parser.add_argument("--natural-root", type=Path, default=None,
                        help="where get-natural.sh put the natural-image sets (shared/data/NATURAL.md)")
    parser.add_argument("--permissive", action="store_true",
                        help="weights without non-commercial terms: only coco (its CC BY/BY-SA/public images), "
                             "pets and dsb may be in --sets")
    parser.add_argument("--repeat", default="",
                        help="natural sets counted more than once, e.g. coco=2,pets=2 (to weigh the mix)")
    parser.add_argument("--dsb-images", type=int, default=None,
                        help="train on this many DSB2018 images (evenly spread), to balance the mix")
    parser.add_argument("--sstem-slices", default="0-19", help="e.g. 0-9 keeps 10-19 for the propagation benchmark")
    parser.add_argument("--cvppp-plants", default=None,
                        help="e.g. 1-80 keeps plants 81 on for measuring (default: all)")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--warmup-steps", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--val-every", type=int, default=1000)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split-seed", type=int, default=None,
                        help="seed of the held-out split (default --seed); keep it across stages")
    parser.add_argument("--half", action="store_true", help="store float16 weights (half the file)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--freeze-bn", action="store_true",
                        help="keep BatchNorm statistics fixed (a further stage from --init)")
    parser.add_argument("--correction-prob", type=float, default=0.5,
                        help="share of batches with simulated corrections (see napari-iog train --help)")
    parser.add_argument("--correction-rounds", type=int, default=3)
    parser.add_argument("--correction-maps-only", action="store_true",
                        help="with --correction-maps: train only their first-conv weights (first clicks unchanged)")
    parser.add_argument("--correction-head", action="store_true",
                        help="with --correction-maps: add the correction head (see napari-iog train --help)")
    parser.add_argument("--correction-maps", action="store_true",
                        help="widen the network to take the corrections as maps too (see napari-iog train --help)")
    parser.add_argument("--loss", default="bce", choices=LOSSES, help="bce (as published), nfl (RITM's) or bce+nfl")
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument("--data-root", type=Path, default=DATA)
    args = parser.parse_args(argv)
    if not args.data_root.is_dir():
        raise SystemExit(f"no training data at {args.data_root}")
    first, _, last = args.sstem_slices.partition("-")
    slices = list(range(int(first), int(last or first) + 1))
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if args.permissive and set(sets) & set(RESTRICTED_SETS):
        raise SystemExit(f"--permissive trains only on data whose terms allow any use: drop "
                         f"{', '.join(sorted(set(sets) & set(RESTRICTED_SETS)))} from --sets (coco, pets, dsb remain)")
    plants = None
    if args.cvppp_plants:
        low, _, high = args.cvppp_plants.partition("-")
        plants = list(range(int(low), int(high or low) + 1))
    pairs = training_pairs(args.data_root, slices, sets, args.dsb_images, plants)
    pairs += natural_pairs(args.natural_root, sets, args.permissive)
    train_pairs, val_pairs, how = split_pairs(
        pairs, args.val_fraction, args.seed if args.split_seed is None else args.split_seed)
    # Repeated after the split, so that no held-out image is also trained on.
    sources = {"coco": COCO_SOURCE, "ccp": CCP_SOURCE, "pets": PETS_SOURCE}
    for name, _, times in (r.partition("=") for r in args.repeat.split(",") if r):
        train_pairs += [p for p in train_pairs if p.source == sources[name]] * (int(times) - 1)
    if args.synthetic:
        train_pairs = train_pairs + synthetic_pairs(train_pairs, args.synthetic, seed=args.seed)
    print(f"{len(train_pairs)} training images ({args.synthetic} synthetic), {len(val_pairs)} held out ({how})",
          file=sys.stderr)
    stop = {"asked": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *a: stop.__setitem__("asked", True))
    with tempfile.TemporaryDirectory() as tmp:
        if args.init is not None:
            base = args.init
        else:
            base = base_checkpoint(args.arch, args.imagenet, Path(tmp), args.seed)
        config = TrainConfig(base=str(base), out=str(args.out), steps=args.steps, batch_size=args.batch_size,
                             lr=args.lr, warmup_steps=args.warmup_steps, device=args.device, amp=args.amp,
                             workers=args.workers, blend=1.0,    # a stage of the default keeps all it learns
                             val_every=args.val_every, checkpoint_every=args.checkpoint_every,
                             val_objects=200, seed=args.seed, freeze_bn=args.freeze_bn, resume=args.resume,
                             half=args.half, correction_prob=args.correction_prob,
                             correction_rounds=args.correction_rounds, correction_maps=args.correction_maps,
                             correction_maps_only=args.correction_maps_only,
                             correction_head=args.correction_head, loss=args.loss)
        summary = train(config, train_pairs, val_pairs,
                        on_event=lambda e: print(to_json(e), flush=True) if e.kind != "step"
                        or e.step % 50 == 0 else None,
                        should_stop=lambda: stop["asked"])
    results = evaluate(args.out, args.data_root, args.device, args.max_clicks)
    model = load_model(args.out)
    card = dict(getattr(model, "card", {}) or {})
    card.update({
        "name": "napari-iog default",
        "recipe": "scripts/train_default.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "trained_on": card.get("licence_of_data", []),
        "licence_note": licence_note(card.get("licence_of_data", [])),
        "evaluation": results, "imagenet_init": bool(args.imagenet),
        "init": args.init.name if args.init is not None else card.get("init", "random"), "status": summary["status"],
    })
    save_model(model, args.out, card, half=args.half)
    print(json.dumps({"out": str(args.out), "status": summary["status"], "evaluation": results}, indent=1))
    return 0 if summary["status"] == "complete" else 3


if __name__ == "__main__":
    sys.exit(main())
