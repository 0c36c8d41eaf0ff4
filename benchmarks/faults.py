"""Faults: writers killed at random moments, and training runs stopped at random steps.

    python3 benchmarks/faults.py [--kills 10] [--trainings 20] [--out FILE]

1. Each writer is started in a child process that rewrites its file again and again, and the
   child is killed (SIGKILL) after a random 0.05-1.5 s, ``--kills`` times per writer:
   label TIFF export, COCO export, model checkpoint, training resume state, a commit into a
   zarr labels array on disk, a weights download (from a slow local server). After each kill:
   is the file whole (the previous version or a complete new one, never half), are earlier
   labels intact (zarr), and what did the kill leave beside the file (a temporary file, which
   the next write of the file removes)?
2. ``napari-iog train`` is stopped with SIGTERM at a random moment ``--trainings`` times; each
   stop must leave a loadable checkpoint, and ``--resume`` must finish the run.
Results: benchmarks/results/faults.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from local_server import SlowFileServer  # noqa: E402

# Each child rewrites TARGET (argv[1]) forever, printing "wrote N" after each complete write.
CHILDREN = {
    "label tiff": """
import sys, numpy as np
from napari_iog import io
labels = np.random.default_rng(0).integers(0, 50, (3000, 3000)).astype(np.uint32)
n = 0
while True:
    n += 1; labels[0, 0] = n; io.write_labels_tif(sys.argv[1], labels); print("wrote", n, flush=True)
""",
    "coco": """
import sys, numpy as np
from napari_iog import io
labels = np.zeros((1500, 1500), np.uint32)
for i in range(400):
    r, c = divmod(i, 20); labels[r * 70 + 5:r * 70 + 60, c * 70 + 5:c * 70 + 60] = i + 1
n = 0
while True:
    n += 1; io.write_coco(sys.argv[1], labels, image_name=f"v{n}"); print("wrote", n, flush=True)
""",
    "model": """
import sys
from napari_iog.models import build_model, save_model
n = 0
while True:
    n += 1; save_model(build_model("iog-resnet50", seed=n), sys.argv[1], card={"n": n}); print("wrote", n, flush=True)
""",
    "resume state": """
import sys, torch
from napari_iog.models.checkpoint import atomic_save
n = 0
while True:
    n += 1; atomic_save({"step": n, "weights": torch.randn(8_000_000)}, sys.argv[1]); print("wrote", n, flush=True)
""",
    "zarr commit": """
import sys, numpy as np, zarr
sys.path.insert(0, "tests")
from conftest import ThresholdPredictor
from napari_iog.session import AnnotationSession
labels = zarr.open(sys.argv[1], mode="a", shape=(2048, 2048), chunks=(256, 256), dtype="uint32")
image = np.zeros((2048, 2048), np.uint8)
for i in range(64):
    r, c = divmod(i, 8); image[r * 256 + 20:r * 256 + 236, c * 256 + 20:c * 256 + 236] = 200
session = AnnotationSession(ThresholdPredictor(), image, labels, overwrite=True)
n = 0
while True:
    i = n % 64; r, c = divmod(i, 8); n += 1
    session.set_clicks([("corner", (r * 256 + 10, c * 256 + 10)), ("corner", (r * 256 + 245, c * 256 + 245)),
                        ("inside", (r * 256 + 128, c * 256 + 128))])
    print("committed", session.commit(), i, flush=True)
""",
}


def check_file(kind: str, path: Path, previous: bytes | None) -> str:
    """'previous', 'new' (a complete newer file) or 'HALF' (unreadable / partial)."""
    if not path.exists():
        return "previous" if previous is None else "MISSING"
    data = path.read_bytes()
    if previous is not None and data == previous:
        return "previous"
    try:
        if kind == "label tiff":
            from napari_iog import io

            assert io.read_labels(path).shape == (3000, 3000)
        elif kind == "coco":
            assert len(json.loads(data)["annotations"]) == 400
        elif kind == "model":
            from napari_iog.models import load_model

            load_model(path)
        elif kind == "resume state":
            import torch

            assert torch.load(path, weights_only=True)["weights"].numel() == 8_000_000
    except Exception:
        return "HALF"
    return "new"


def kill_writers(kills: int, rng: random.Random, work: Path) -> dict:
    results = {}
    for kind, code in CHILDREN.items():
        target = work / {"label tiff": "labels.tif", "coco": "objects.json", "model": "model.pt",
                         "resume state": "run.pt.state.pt", "zarr commit": "labels.zarr"}[kind]
        outcome = {"kills": 0, "previous": 0, "new": 0, "half": 0, "leftovers_after_kill": 0,
                   "leftovers_after_next_write": 0, "lost_labels": 0, "unreadable_chunks": 0}
        committed: dict[int, int] = {}      # zarr: id -> tile it was committed to
        once = code.replace("while True:", "for _ in range(1):")
        if kind != "zarr commit":           # a previous version for the kills to threaten
            subprocess.run([sys.executable, "-c", once, str(target)], cwd=ROOT, capture_output=True, check=True)
        for _ in range(kills):
            previous = target.read_bytes() if target.is_file() else None
            child = subprocess.Popen([sys.executable, "-c", code, str(target)], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
            time.sleep(rng.uniform(0.05, 3.0) + (4.0 if kind == "zarr commit" else 1.5))   # + start-up
            child.send_signal(signal.SIGKILL)
            out, _ = child.communicate()
            outcome["kills"] += 1
            if kind == "zarr commit":
                for line in out.splitlines():
                    if line.startswith("committed"):
                        _, label_id, tile = line.split()
                        committed[int(tile)] = int(label_id)
                        outcome["commits_before_kills"] = outcome.get("commits_before_kills", 0) + 1
                outcome.update(check_zarr(target, committed, outcome))
                continue
            state = check_file(kind, target, previous)
            outcome["half" if state == "HALF" else state if state in ("previous", "new") else "half"] += 1
            leftovers = list(target.parent.glob(f".{target.name}.*.part"))
            outcome["leftovers_after_kill"] += len(leftovers)
        if kind != "zarr commit":
            subprocess.run([sys.executable, "-c", once, str(target)], cwd=ROOT, capture_output=True, check=True)
            outcome["leftovers_after_next_write"] = len(list(target.parent.glob(f".{target.name}.*.part")))
        results[kind] = outcome
        print(kind, outcome, flush=True)
    return results


def check_zarr(target: Path, committed: dict[int, int], outcome: dict) -> dict:
    """Every chunk readable; every tile's last reported commit holds its id (a tile written
    again after it may hold the next one)."""
    import zarr

    labels = zarr.open(str(target), mode="r")
    unreadable = 0
    for r in range(0, 2048, 256):
        for c in range(0, 2048, 256):
            try:
                np.asarray(labels[r:r + 256, c:c + 256])
            except Exception:
                unreadable += 1
    lost = 0
    for tile, label_id in committed.items():
        r, c = divmod(tile, 8)
        block = np.asarray(labels[r * 256 + 20:r * 256 + 236, c * 256 + 20:c * 256 + 236])
        if not ((block == label_id) | (block > label_id)).all():
            lost += 1
    return {"unreadable_chunks": outcome["unreadable_chunks"] + unreadable, "lost_labels": lost}


def kill_downloads(kills: int, rng: random.Random, work: Path) -> dict:
    from napari_iog.models import build_model, save_model

    model_file = work / "served.pt"
    save_model(build_model("iog-resnet18", seed=1), model_file)
    payload = model_file.read_bytes()
    server = SlowFileServer(payload, chunk=1 << 16, delay=0.01)
    url = f"{server.url}/served.pt"
    cache = work / "cache"
    code = f"""
import sys
from napari_iog import zoo
zoo.WEIGHTS["served"] = zoo.WeightsEntry("served", "served.pth", "iog-resnet18", "test", "test", "{url}", url="{url}",
                                         size={len(payload)})
print(zoo.fetch("served"), flush=True)
"""
    env = {**os.environ, "NAPARI_IOG_CACHE": str(cache)}
    outcome = {"kills": 0, "half": 0, "complete": 0, "absent": 0, "debris": 0, "fetched_after": 0}
    for _ in range(kills):
        child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))
        child.send_signal(signal.SIGKILL)
        child.wait()
        outcome["kills"] += 1
        target = cache / "served.pth"
        if target.exists():
            state = "complete" if target.read_bytes() == payload else "half"
            outcome[state] += 1
            target.unlink()
        else:
            outcome["absent"] += 1
        outcome["debris"] += len([p for p in cache.iterdir() if p.name != zoo_checksums()]) if cache.exists() else 0
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        fetched = done.returncode == 0 and (cache / "served.pth").read_bytes() == payload
        outcome["fetched_after"] += int(fetched)
        (cache / "served.pth").unlink(missing_ok=True)
        for leftover in cache.iterdir():
            if leftover.name != zoo_checksums():
                leftover.unlink()
    server.close()
    print("download", outcome, flush=True)
    return outcome


def zoo_checksums() -> str:
    from napari_iog import zoo

    return zoo.CHECKSUMS_FILE


def stop_trainings(runs: int, rng: random.Random, work: Path) -> dict:
    import tifffile
    from PIL import Image

    from napari_iog.models import build_model, load_model, save_model

    images, labels = work / "images", work / "labels"
    images.mkdir(exist_ok=True)
    labels.mkdir(exist_ok=True)
    generator = np.random.default_rng(0)
    for n in range(3):
        image = np.full((96, 96, 3), 40, np.uint8)
        label = np.zeros((96, 96), np.uint32)
        for i in range(4):
            r, c = generator.integers(5, 60, 2)
            image[r:r + 25, c:c + 25] = generator.integers(120, 250, 3)
            label[r:r + 25, c:c + 25] = i + 1
        Image.fromarray(image).save(images / f"s{n}.png")
        tifffile.imwrite(labels / f"s{n}.tif", label)
    base = work / "base.pt"
    save_model(build_model("iog-resnet18", seed=0), base)
    outcome = {"runs": 0, "stopped_with_checkpoint": 0, "finished_before_stop": 0, "loadable": 0, "resumed": 0,
               "failures": []}
    for n in range(runs):
        out = work / f"run{n}.pt"
        argv = [sys.executable, "-m", "napari_iog", "train", "--images", str(images), "--labels", str(labels),
                "--base", str(base), "--out", str(out), "--steps", "40", "--batch-size", "2", "--freeze-backbone",
                "--val-objects", "2", "--progress", "json"]
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in child.stdout:                   # training has begun: its first event
            if '"event": "start"' in line:
                break
        time.sleep(rng.uniform(0.0, 4.0))           # then a random moment of the run
        child.send_signal(signal.SIGTERM)
        stdout, stderr = child.communicate(timeout=300)
        outcome["runs"] += 1
        if child.returncode == 0:
            outcome["finished_before_stop"] += 1
        elif child.returncode == 3:
            outcome["stopped_with_checkpoint"] += 1
        else:
            outcome["failures"].append(f"run {n}: exit {child.returncode}: {stderr[-300:]}")
            continue
        try:
            stopped_at = load_model(out).card.get("steps")
            outcome["loadable"] += 1
        except Exception as err:
            outcome["failures"].append(f"run {n}: checkpoint not loadable: {err}")
            continue
        resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=600)
        card = load_model(out).card if resumed.returncode == 0 else {}
        if resumed.returncode == 0 and card.get("status") == "complete" and card.get("steps") == 40:
            outcome["resumed"] += 1
        else:
            outcome["failures"].append(f"run {n}: resume exit {resumed.returncode}: {resumed.stderr[-300:]}")
        print(f"training {n}: exit {child.returncode}, resumed to step {card.get('steps')}", flush=True)
        outcome.setdefault("stopped_at_steps", []).append(stopped_at if child.returncode == 3 else None)
    print("trainings", outcome, flush=True)
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--trainings", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["writers", "downloads", "trainings"], nargs="*")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "faults.json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    parts = args.only or ["writers", "downloads", "trainings"]
    result: dict = {"date": time.strftime("%Y-%m-%d"), "seed": args.seed}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "writers" in parts:
            result["writers"] = kill_writers(args.kills, rng, work)
        if "downloads" in parts:
            result["download"] = kill_downloads(args.kills, rng, work)
        if "trainings" in parts:
            result["trainings"] = stop_trainings(args.trainings, rng, work)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**previous, **result}, indent=1))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
