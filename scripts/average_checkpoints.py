"""The mean of several checkpoints' weights, saved as one model (a "model soup"; how stage 9 of
the bundled default was made from two points of one training run's path):

    python3 scripts/average_checkpoints.py i.pt j.pt --out ij.pt [--half]

The checkpoints must be the same network (architecture, configuration and keys); floating-point
tensors are averaged, the rest (counters) are taken from the last one, and so is the card, with
the averaged files added. Averaging pays where the points lie on one path with BatchNorm's
statistics fixed (the default's stages train with ``--freeze-bn``); points of unrelated runs
average into a worse network. Measure the result before using it (benchmarks/correction_candidates.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from napari_iog.models import load_model, save_model
from napari_iog.models.checkpoint import model_arch, model_config


def average(paths: list[Path]) -> torch.nn.Module:
    models = [load_model(path) for path in paths]
    last = models[-1]
    for path, model in zip(paths, models):
        if (model_arch(model), model_config(model)) != (model_arch(last), model_config(last)) or \
                model.state_dict().keys() != last.state_dict().keys():
            raise SystemExit(f"{path} is not the same network as {paths[-1]}: they cannot be averaged")
    states = [model.state_dict() for model in models]
    mean = {key: sum(state[key] for state in states) / len(states) if value.is_floating_point() else value
            for key, value in states[-1].items()}
    last.load_state_dict(mean)
    return last


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--half", action="store_true", help="store float16 weights (half the file)")
    args = parser.parse_args(argv)
    if len(args.checkpoints) < 2:
        parser.error("give at least two checkpoints")
    if args.out.resolve() in {path.resolve() for path in args.checkpoints}:
        parser.error(f"--out {args.out} is one of the checkpoints: write the mean to a new file")
    model = average(args.checkpoints)
    card = {**getattr(model, "card", {}), "averaged": [str(path) for path in args.checkpoints]}
    save_model(model, args.out, card, half=args.half)
    print(f"wrote {args.out}: the mean of {len(args.checkpoints)} checkpoints", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
