r"""Print the evaluation table of docs/benchmarks.md from the result files of `napari-iog evaluate`.

    napari-iog evaluate --dataset grabcut --data-root ../shared/data --model box --model grabcut \
        --out benchmarks/results/evaluation
    napari-iog evaluate --dataset berkeley --data-root ../shared/data --model box --model grabcut \
        --out benchmarks/results/evaluation
    python3 benchmarks/evaluation_table.py [benchmarks/results/evaluation]
"""

import json
import sys
from pathlib import Path


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results" / "evaluation")
    print("| dataset | method | objects | mIoU@3 | mIoU@5 | mIoU@10 | NoC@85 | NoC@90 | s/object |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for path in sorted(folder.glob("*.json")):
        if path.stem.endswith("_summary"):
            continue
        result = json.loads(path.read_text())
        s = result["summary"]
        dataset = Path(result.get("dataset", path.stem.split("_")[0])).name
        at = {int(k): v for k, v in s["miou_at"].items()}
        print(f"| {dataset} | {result['method']} | {s['objects']} | {s['miou@3']:.3f} | {at[5]:.3f} | "
              f"{at[10]:.3f} | {s['noc85']:.2f} | {s['noc90']:.2f} | {s['seconds_per_object']:.2f} |")


if __name__ == "__main__":
    main()
