"""Does a click cost more on a huge image? Click latency on a 1k x 1k image against a
50k x 50k lazily generated dask image with the same content under the clicks, and the
memory the session's labels take.

    python3 benchmarks/bench_large_image.py [--size 50000] [--clicks 15] [--arch iog-resnet18]
                                            [--device cpu] [--threads 2]

The 1k image is measured in memory (numpy) and as a dask array chunked like the large one
(512 px), so the ratio large / small compares images that differ only in size. Both tile
one 1024 x 1024 random texture with bright ellipses in it (period 1024), so
the crop around a click at (r, c) of the small image and at (r + k*1024, c + k*1024) of the
large one hold the same pixels. Each click is the whole annotation step a user waits for:
the prediction (read the crop, network, paste); committing into the labels is timed apart
(the large image's labels are compressed zarr chunks, the small one's numpy). Small and large clicks
alternate, so that a load on the machine falls on both alike. The large image's labels are a
sparse in-memory zarr array (what the annotator makes for such images): only chunks holding
objects take memory. The network has random, BatchNorm-calibrated weights: the timing does
not depend on the weights.
Results: benchmarks/results/large-image-<device>.json and a line on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import calibrate  # noqa: E402

from napari_iog.models import build_model  # noqa: E402
from napari_iog.predictor import IOGPredictor  # noqa: E402
from napari_iog.session import AnnotationSession  # noqa: E402

PERIOD = 1024


def texture_tile(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:PERIOD, :PERIOD]
    tile = 90 + 20 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 6, (PERIOD, PERIOD))
    for _ in range(12):
        r, c = rng.integers(100, PERIOD - 100, 2)
        a, b = rng.integers(25, 70, 2)
        tile[((yy - r) / a) ** 2 + ((xx - c) / b) ** 2 < 1] += 110
    rgb = np.stack([tile, tile * 0.9, tile * 0.7], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def lazy_tiled(size: int, tile: np.ndarray, chunk: int = 512):
    """A (size, size, 3) dask array repeating ``tile``, in chunks of ``chunk`` (a divisor of
    the tile, like a slide's 512-pixel tiles); a block is made only when read."""
    import dask.array as da

    def block(block_info=None):
        (r0, r1), (c0, c1), _ = block_info[None]["array-location"]
        r, c = r0 % PERIOD, c0 % PERIOD
        return tile[r:r + (r1 - r0), c:c + (c1 - c0)].copy()

    chunks = tuple(min(chunk, size - i) for i in range(0, size, chunk))
    return da.map_blocks(block, chunks=(chunks, chunks, (3,)), dtype=np.uint8)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def clicks(n: int, seed: int = 1):
    """n (corners, inside) around random points of the tile, away from its edges."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        r, c = rng.integers(200, PERIOD - 200, 2)
        h, w = rng.integers(60, 160, 2)
        out.append((((r - h // 2, c - w // 2), (r + h // 2, c + w // 2)), (r, c)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--clicks", type=int, default=15)
    parser.add_argument("--arch", default="iog-resnet18")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import zarr

    tile = texture_tile()
    small = np.ascontiguousarray(np.tile(tile, (1, 1, 1)))           # 1024 x 1024, in memory
    offset = (args.size // 2 // PERIOD) * PERIOD                       # the same pixels, mid-image
    large = lazy_tiled(args.size, tile)
    predictor = IOGPredictor(calibrate(build_model(args.arch, seed=0)), device=args.device)
    rss_start = rss_mib()
    small_labels = np.zeros(small.shape[:2], np.uint32)
    large_labels = zarr.zeros(shape=(args.size, args.size), chunks=(1024, 1024), dtype="uint32")
    small_lazy = lazy_tiled(PERIOD, tile)
    sessions = {"1k numpy": (AnnotationSession(predictor, small, small_labels, overwrite=True), 0),
                "1k dask": (AnnotationSession(predictor, small_lazy, small_labels.copy(), overwrite=True), 0),
                f"{args.size // 1000}k dask": (AnnotationSession(predictor, large, large_labels, overwrite=True,
                                                                  next_id_start=1), offset)}
    times = {name: [] for name in sessions}
    commits = {name: [] for name in sessions}
    agree = []
    for corners, inside in clicks(args.clicks + 1):
        masks = {}
        for name, (session, shift) in sessions.items():
            moved = [(r + shift, c + shift) for r, c in corners]
            start = time.perf_counter()
            session.set_clicks([("corner", moved[0]), ("corner", moved[1]),
                                ("inside", (inside[0] + shift, inside[1] + shift))])
            masks[name] = session.current.crop_mask.copy()
            times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            session.commit()
            commits[name].append(time.perf_counter() - start)
        first = next(iter(masks.values()))
        agree.append(all(np.array_equal(first, m) for m in masks.values()))
    for name in times:
        times[name], commits[name] = times[name][1:], commits[name][1:]   # the first click warms up
    medians = {name: statistics.median(t) for name, t in times.items()}
    names = list(sessions)
    stored = len(_store_values(large_labels))
    result = {
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "device": str(predictor.device), "precision": predictor.precision,
        "arch": args.arch, "size": args.size, "clicks": args.clicks,
        "median_click_s": medians, "all_click_s": times,
        "median_commit_s": {name: statistics.median(t) for name, t in commits.items()},
        "ratio_large_to_small": medians[names[2]] / medians[names[1]],
        "ratio_large_to_small_numpy": medians[names[2]] / medians[names[0]],
        "same_masks": all(agree),
        "large_labels_chunks_stored": stored,
        "large_labels_dense_would_be_gib": args.size * args.size * 4 / 2**30,
        "rss_growth_mib": rss_mib() - rss_start,
    }
    out = ROOT / "benchmarks" / "results" / f"large-image-{predictor.device.type}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"{args.arch} {predictor.precision} on {predictor.device} ({result['threads']} threads): median click "
          + ", ".join(f"{n} {1000 * medians[n]:.0f} ms" for n in names)
          + " (commit " + ", ".join(f"{1000 * v:.0f}" for v in result["median_commit_s"].values()) + " ms)"
          + f"; ratio {names[2]} / {names[1]} {result['ratio_large_to_small']:.2f} (/ {names[0]} "
          f"{result['ratio_large_to_small_numpy']:.2f}); same masks: {result['same_masks']}; labels: {stored} chunks "
          f"stored (dense would be {result['large_labels_dense_would_be_gib']:.1f} GiB); RSS +"
          f"{result['rss_growth_mib']:.0f} MiB -> {out.relative_to(ROOT)}")


def _store_values(array):
    """The stored chunks of an in-memory zarr array (zarr 2 and 3)."""
    store = getattr(array, "store", None)
    data = getattr(store, "_store_dict", None) or getattr(store, "_dict", None)
    if data is None and isinstance(store, dict):
        data = store
    return [v for k, v in (data or {}).items() if not str(k).endswith(("zarr.json", ".zarray", ".zattrs"))]


if __name__ == "__main__":
    main()
