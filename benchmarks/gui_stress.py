"""GUI stress: random annotation sessions in a real napari viewer, invariants after every step.

    xvfb-run -a python3 benchmarks/gui_stress.py [--steps 1000] [--seeds 0 1 2] [--out FILE]

Each seed is one session of ``--steps`` random operations (tests/gui_stress.py says which
and what is checked) against a stand-in network slowed by 0-40 ms per prediction, so that
predictions overlap clicks. Results: benchmarks/results/gui-stress.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import napari  # noqa: E402
from gui_stress import start_stress  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="operations per session (1000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one session per seed")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gui-stress.json")
    args = parser.parse_args()
    sessions = []
    for seed in args.seeds:
        viewer = napari.Viewer()
        stress = start_stress(viewer, seed=seed)
        report = stress.run(args.steps)
        viewer.close()
        sessions.append({"seed": seed, **asdict(report)})
        print(f"seed {seed}: {report.steps} steps in {report.seconds:.0f} s, {report.commits} commits, "
              f"{report.undone_commits} undone, {report.warnings} warnings to the user, "
              f"{len(report.violations)} violations, {len(report.errors)} errors", flush=True)
        for line in report.violations[:10] + report.errors[:10]:
            print("  ", line)
    total = {key: sum(s[key] if isinstance(s[key], int) else len(s[key]) for s in sessions)
             for key in ("steps", "commits", "undone_commits", "warnings", "violations", "errors")}
    result = {"machine": platform.processor() or platform.machine(), "napari": napari.__version__,
              "date": time.strftime("%Y-%m-%d"), "total": total, "sessions": sessions}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"total: {total}; written to {args.out}")
    return 0 if total["violations"] == 0 and total["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
