"""What the first fine-tuning steps do to the shipped default's masks: 12 steps of 8 from the
shipped weights (BatchNorm frozen, no corrections), the IoU of the fine output on 32 held-out
training samples after every 4 steps, for a loss and an optimizer:

    python3 benchmarks/finetune_first_steps.py --loss bce --optimizer adamw --lr 1e-4

``--loss``: ``bce`` (the published loss: BCE summed over the pixels of all five outputs),
``bce_fine`` (the fine output only), ``lovasz`` / ``lovasz_fine`` (the Lovasz hinge, which
leaves out pixels already right by a margin: a loss that calibration cannot lower). Data: the
default's mix without the natural sets (BSDS, CVPPP 1-80, ssTEM 0-9, 200 DSB2018 images) from
``../shared/data``; samples drawn with seed 1, the same for every run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from train_default import training_pairs  # noqa: E402

from napari_iog.models import load_model  # noqa: E402
from napari_iog.training.data import InstanceDataset  # noqa: E402
from napari_iog.training.loop import freeze, iog_loss, network_input, set_train_mode  # noqa: E402
from napari_iog.zoo import resolve  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def lovasz_hinge(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Lovasz hinge (Berman et al. 2018) of each sample, averaged; negative targets ignored."""
    total = logits.new_zeros(())
    for logit, truth in zip(logits, target):
        logit, truth = logit.flatten().float(), truth.flatten()
        known = truth >= 0
        logit, truth = logit[known], truth[known]
        errors, order = torch.sort(1 - logit * (2 * truth - 1), descending=True)
        sorted_truth = truth[order]
        positives = sorted_truth.sum()
        jaccard = 1 - (positives - sorted_truth.cumsum(0)) / (positives + (1 - sorted_truth).cumsum(0))
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
        total = total + torch.dot(F.relu(errors), jaccard)
    return total / len(logits)


def loss_of(model, batch, kind: str) -> torch.Tensor:
    fine, coarse = model(network_input(model, batch["x"]), return_coarse=True)
    outputs = (fine, *coarse) if kind in ("bce", "lovasz") else (fine,)
    if kind.startswith("bce"):
        return iog_loss(outputs[0], outputs[1:], batch["target"])
    return sum(lovasz_hinge(o, batch["target"]) for o in outputs)


def held_iou(model, batches) -> float:
    model.eval()
    scores = []
    with torch.no_grad():
        for batch in batches:
            masks, truth = model(batch["x"]) > 0, batch["target"] > 0.5
            scores += [float((m & t).sum() / (m | t).sum()) for m, t in zip(masks, truth)]
    return float(np.mean(scores))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", choices=("bce", "bce_fine", "lovasz", "lovasz_fine"), default="bce")
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--model", default="napari-iog-default")
    parser.add_argument("--data-root", type=Path, default=DATA)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    pairs = training_pairs(args.data_root, list(range(10)), ["bsds", "cvppp", "sstem", "dsb"], 200, list(range(1, 81)))
    dataset = InstanceDataset(pairs, 100, True, True, False, 0)
    dataset.set_epoch(0)
    order = np.random.default_rng(1).permutation(len(dataset))

    def batch(ids):
        items = [dataset[int(i)] for i in ids]
        return {k: torch.stack([item[k] for item in items]) for k in items[0]}

    held = [batch(order[i * 8:(i + 1) * 8]) for i in range(4)]
    train = [batch(order[100 + i * 8:100 + (i + 1) * 8]) for i in range(args.steps)]
    model = load_model(resolve(args.model))
    print(f"{args.loss} {args.optimizer} lr {args.lr:g}: held-out IoU at start {held_iou(model, held):.3f}", flush=True)
    freeze(model, backbone=False, batchnorm=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = (torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2) if args.optimizer == "adamw" else
                 torch.optim.SGD(params, lr=args.lr, momentum=0.9))
    for step, item in enumerate(train, 1):
        set_train_mode(model, freeze_bn=True)
        optimizer.zero_grad()
        loss = loss_of(model, item, args.loss)
        loss.backward()
        optimizer.step()
        if step % 4 == 0:
            print(f"step {step}: loss {loss.item():.4g}, held-out IoU {held_iou(model, held):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
