"""``napari-iog``: the command line (also ``python -m napari_iog``).

    napari-iog weights list | fetch NAME | verify PATH_OR_NAME
    napari-iog evaluate --dataset grabcut [--model iog-pascal-sbd --model box ...]
    napari-iog train --images DIR --labels DIR --out PATH [--base MODEL --steps N ...]
    napari-iog predict IMAGE --boxes boxes.csv|coco.json --out labels.tif|objects.json [--model MODEL]

Without ``--model`` (``--base``), the model that ships with the package is used.
    napari-iog export LABELS --out objects.json|labels.tif [--polygons]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from . import zoo


class ProgressBar:
    """A one-line progress bar on stderr: done/total, rate, ETA and a message."""

    def __init__(self, total: int | None, label: str = "", stream=None):
        self.total, self.label, self.start = total, label, time.monotonic()
        self.stream = stream or sys.stderr

    def update(self, done: int, message: str = "") -> None:
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.total:
            width = 24
            filled = int(width * done / self.total)
            eta = (self.total - done) / rate if rate > 0 else float("nan")
            text = (f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                    f"{rate:.2f}/s ETA {eta:.0f}s {message}")
        else:
            text = f"\r{self.label} {done} {message}"
        self.stream.write(text[:160].ljust(100))
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _weights(args) -> int:
    if args.action == "list":
        print(f"cache: {zoo.cache_dir()}  (set {zoo.CACHE_ENV} to move it)")
        for row in zoo.list_weights():
            mark = "bundled" if row["bundled"] else "present" if row["present"] else "missing"
            print(f"  {row['name']:28s} {row['arch']:22s} {mark:8s} {row['filename']}")
            print(f"  {'':28s} trained on {row['trained_on']}; {row['source']}")
        tuned = zoo.list_finetuned()
        if tuned:
            print(f"fine-tuned ({zoo.finetuned_dir()}; remove with `napari-iog weights remove FILE`):")
            for path in tuned:
                print(f"  {path.name:50s} {path.stat().st_size / 1e6:6.1f} MB")
        return 0
    if args.action == "fetch":
        bar = ProgressBar(None, f"fetch {args.name}")

        def progress(done, total):
            bar.total = total
            bar.update(done // (1 << 20), "MiB" if not total else "")

        try:
            path = zoo.fetch(args.name, progress=progress)
        except (zoo.ManualDownloadRequired, zoo.DownloadError) as err:
            print(f"\nnapari-iog: {err}", file=sys.stderr)
            return 2
        bar.close()
        print(f"{args.name}: {path}")
        return 0
    if args.action == "remove":
        removed = zoo.remove_finetuned(args.name)
        print(f"removed {', '.join(str(p) for p in removed)}")
        return 0
    report = zoo.verify(args.name)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    card = report["card"] or {}
    print(f"{report['path']}\n  {report['arch']}, {report['state_dict_values']:,} values"
          + (f" ({report['zoo_name']})" if report["zoo_name"] else "")
          + f"\n  sha256 {report['sha256']}: {report['status']}")
    for key in ("name", "trained_on", "base", "steps", "licence"):
        value = card.get(key)
        if value in (None, "", []):
            continue
        if key == "base":       # the trainer's own path says nothing to a user
            value = Path(str(value)).name
        if isinstance(value, (list, tuple)):
            value = "; ".join(map(str, value))
        print(f"  {key.replace('_', ' ')}: {value}")
    return 0


def _method(spec: str, device: str, postprocess: bool = False):
    from . import evaluation as E

    if spec == "box":
        return E.BoxBaseline()
    if spec in ("grabcut", "opencv-grabcut"):
        return E.GrabCutBaseline()
    from .predictor import IOGPredictor

    return E.IOGMethod(IOGPredictor(spec, device=device), name=Path(spec).stem if Path(spec).is_file() else spec,
                       postprocess=postprocess)


def _evaluate(args) -> int:
    from . import evaluation as E

    instances = E.load_dataset(args.dataset, args.data_root)
    if args.limit:
        instances = instances[:args.limit]
    out = Path(args.out)
    summaries = {}
    dataset_tag = Path(str(args.dataset)).name
    for spec in args.model or [zoo.DEFAULT_MODEL]:
        method = _method(spec, args.device, args.postprocess)
        bar = ProgressBar(len(instances), f"{method.name} on {dataset_tag}")
        result = E.evaluate(method, instances, args.max_clicks,
                            progress=lambda i, n, r: bar.update(i, f"IoU@3 {r['ious'][2]:.3f}"))
        bar.close()
        result["dataset"] = str(args.dataset)
        tag = f"{dataset_tag}_{method.name}".replace("/", "_")
        E.write_results(result, out, tag)
        summaries[method.name] = result["summary"]
    print(f"\n{'method':28s} {'objects':>7s} {'mIoU@3':>7s} {'NoC@85':>7s} {'NoC@90':>7s} {'s/object':>9s}")
    for name, s in summaries.items():
        print(f"{name:28s} {s['objects']:7d} {s['miou@3']:7.3f} {s['noc85']:7.2f} {s['noc90']:7.2f} "
              f"{s['seconds_per_object']:9.2f}")
    (out / f"{dataset_tag}_summary.json").write_text(json.dumps(summaries, indent=1))
    if not args.no_plot:
        try:
            E.plot_curves(summaries, out / f"{dataset_tag}_miou.png", f"{dataset_tag}: mIoU against clicks")
        except ImportError:
            print("(no plot: matplotlib is not installed; pip install 'napari-iog[benchmark]')")
    print(f"results in {out}")
    return 0


SHARED_TRAINING_SETS = ("sstem", "cvppp", "bsds")
CANCELLED_EXIT = 3


def _training_pairs(args):
    from .training import bsds_pairs, cvppp_pairs, pairs_from_folders, sstem_pairs

    if args.dataset:
        if args.dataset in ("grabcut", "berkeley"):
            raise ValueError(f"{args.dataset} is an evaluation benchmark: training on it would make its "
                             "figures meaningless")
        if args.dataset not in SHARED_TRAINING_SETS:
            raise ValueError(f"unknown training set {args.dataset!r}: {', '.join(SHARED_TRAINING_SETS)}")
        root = Path(args.data_root) if args.data_root else Path("..") / "shared" / "data"
        loader, folder = {"sstem": (sstem_pairs, "sstem_vnc"), "cvppp": (cvppp_pairs, "cvppp_a1"),
                          "bsds": (bsds_pairs, "bsds500_test_regions")}[args.dataset]
        return loader(root / folder)
    if not (args.images and args.labels):
        raise ValueError("give --images DIR and --labels DIR (or --dataset sstem|cvppp|bsds)")
    return pairs_from_folders(args.images, args.labels)


def _train(args) -> int:
    from .training import TrainConfig, pairs_from_folders, split_pairs, train

    rank = int(os.environ.get("RANK", "0"))
    pairs = _training_pairs(args)
    if not pairs:
        raise ValueError("no image has a matching label file with objects in it: label files are matched "
                         "to images by name (a.png or a.tif for a.jpg)")
    if args.val_images or args.val_labels:
        if not (args.val_images and args.val_labels):
            raise ValueError("give both --val-images and --val-labels")
        train_pairs, val_pairs, how = pairs, pairs_from_folders(args.val_images, args.val_labels), "given"
    else:
        train_pairs, val_pairs, how = split_pairs(pairs, args.val_fraction, args.seed)
    config = TrainConfig(base=args.base, out=args.out, epochs=args.epochs, steps=args.steps, lr=args.lr,
                         optimizer=args.optimizer, batch_size=args.batch_size, accumulate=args.accumulate,
                         device=args.device, amp=args.amp, freeze_backbone=args.freeze_backbone,
                         val_fraction=args.val_fraction, val_objects=args.val_objects, seed=args.seed,
                         min_area=args.min_area, workers=args.workers, checkpoint_every=args.checkpoint_every,
                         val_every=args.val_every, resume=args.resume, half=args.half)
    cancel = {"asked": False}

    def ask_to_stop(signum, frame):
        if cancel["asked"]:            # a second Ctrl+C: stop now, the last checkpoint stays
            raise KeyboardInterrupt
        cancel["asked"] = True
        if rank == 0:
            print("\nstopping after this step (the checkpoint will be saved; Ctrl+C again to abort)",
                  file=sys.stderr)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, ask_to_stop)
    json_lines = args.progress == "json"
    bar = ProgressBar(None, "train")

    def on_event(event):
        if json_lines:
            print(json.dumps(event), flush=True)
            return
        kind = event["event"]
        if kind == "start":
            data = event["data"]
            print(f"{event['arch']} on {event['device']} x{event['world_size']}: {event['objects']} objects from "
                  f"{data['images']} images ({data['skipped_small']} too small skipped, {data['touching_border']} "
                  f"touching the border kept, {data['empty_images']} images without labels); "
                  f"{event['validation_objects']} held-out objects ({how}); {event['total_steps']} steps, "
                  f"amp {event['amp']}" + (f"; resuming at step {event['resumed_from']}" if event["resumed_from"] else ""),
                  file=sys.stderr)
            bar.total, bar.start = event["total_steps"], time.monotonic()
        elif kind == "step":
            eta = f"{event['eta_s']:.0f}s" if event["eta_s"] is not None else "?"
            bar.stream.write(f"\rtrain step {event['step']}/{event['total_steps']} loss {event['loss']:.4f} "
                             f"{event['steps_per_s']:.2f} steps/s ETA {eta}".ljust(80))
            bar.stream.flush()
        elif kind == "validation":
            print(f"\nvalidation mIoU@3 at step {event['step']}: {event['miou']:.3f}", file=sys.stderr)

    summary = train(config, train_pairs, val_pairs, on_event=on_event, should_stop=lambda: cancel["asked"])
    if rank != 0:
        return 0
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=1))
    if not json_lines:
        before, after = summary["val_miou_before"], summary["val_miou_after"]
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
        agree = len(set(summary["rank_digests"])) == 1
        print(f"\n{summary['status']}: {summary['steps']}/{summary['total_steps']} steps in {summary['seconds']:.0f} s; "
              f"held-out mIoU@3 {fmt(before)} -> {fmt(after)}; model: {summary['out']}"
              + (f"; weights identical on all {summary['world_size']} ranks: {'yes' if agree else 'NO'}"
                 if summary["world_size"] > 1 else ""))
    return 0 if summary["status"] == "complete" else CANCELLED_EXIT


def _export(args) -> int:
    from . import io

    source = Path(args.labels)
    labels = io.open_array(source, "labels") if source.is_dir() else io.read_labels(source)
    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix == ".json":
        io.write_coco(out, labels, image_name=args.image_name or source.stem,
                             encoding="polygon" if args.polygons else "rle", category=args.category)
    elif suffix in (".tif", ".tiff"):
        io.write_labels_tif(out, labels)
    else:
        raise ValueError(f"{out.name}: export writes COCO .json or label-image .tif files")
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _predict(args) -> int:
    from . import batch, io
    from .predictor import IOGPredictor
    from .training.loop import distributed_context

    out = Path(args.out)
    if out.suffix.lower() not in (".json", ".tif", ".tiff"):
        raise ValueError(f"{out.name}: predict writes a label-image .tif or COCO .json (the suffix says which); "
                         f"{out.suffix or 'no suffix'} is not written")
    rank, world, device, started = distributed_context(args.device)
    try:
        image = io.open_array(args.image, "image")
        prompts = batch.read_box_file(args.boxes)
        if not prompts:
            raise ValueError(f"{args.boxes}: no boxes")
        spatial = batch.spatial_shape(image, prompts)
        predictor = IOGPredictor(args.model, device=device)
        checked = batch.check_boxes(spatial, prompts)
        bar = ProgressBar(len(prompts), "predict") if rank == 0 else None
        cancel = {"asked": False}
        signal.signal(signal.SIGINT, lambda *a: cancel.__setitem__("asked", True))
        mine = range(rank, len(prompts), world)
        results = batch.predict_boxes(
            predictor, image, prompts, checked, mine, args.batch_size,
            on_progress=(lambda done, total: bar.update(done * world)) if bar else None,
            should_stop=lambda: cancel["asked"])
        if world > 1:
            import torch.distributed as dist

            gathered = [None] * world if rank == 0 else None
            dist.gather_object(results, gathered, dst=0)
            if rank == 0:
                results = {i: r for part in gathered for i, r in part.items()}
        if rank != 0:
            return 0
        bar.close()
        labels = np.zeros(spatial, np.uint32)
        report = batch.write_boxes(labels, prompts, results)
        if out.suffix.lower() == ".json":
            single = [Path(args.image).name] if labels.ndim == 2 else None   # the file the boxes are on
            io.write_coco(out, labels, image_name=Path(args.image).stem, image_files=single,
                                 encoding="polygon" if args.polygons else "rle")
        else:
            io.write_labels_tif(out, labels)
        print(f"{report.written} of {report.objects} objects written to {out}"
              + (f"; empty or covered by earlier ones: {', '.join(report.empty)}" if report.empty else "")
              + ("; CANCELLED: the rest were not segmented" if report.cancelled else ""), file=sys.stderr)
        return CANCELLED_EXIT if report.cancelled else 0
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-iog", description="IOG segmentation from the command line")
    sub = parser.add_subparsers(dest="command", required=True)
    weights = sub.add_parser(
        "weights", help="the model zoo: list, fetch, verify, remove",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The models napari-iog knows, and the cache folder that holds them.\n\n"
                    "  list           every zoo model (here or not) and the fine-tuned models in the cache\n"
                    "  fetch NAME     download a zoo model into the cache, verified (size, sha256, loadable)\n"
                    "  verify PATH    load a checkpoint (a path or a zoo name); report its architecture and\n"
                    "                 sha256, checked against the recorded one\n"
                    "  remove FILE    delete a fine-tuned model (and its resume state) from the cache\n\n"
                    f"The cache folder is moved with {zoo.CACHE_ENV}.")
    weights.add_argument("action", choices=["list", "fetch", "verify", "remove"], help="see above")
    weights.add_argument("name", nargs="?", help="a zoo name (fetch), a name or path (verify), a fine-tuned "
                                                 "model's file name (remove)")
    weights.add_argument("--json", action="store_true", help="verify: the whole report as JSON")
    evaluate = sub.add_parser("evaluate", help="simulated-user evaluation (mIoU@k, NoC@85/90)")
    evaluate.add_argument("--dataset", required=True,
                          help="grabcut, berkeley, or a folder (GrabCut/Berkeley layout or images/ + labels/)")
    evaluate.add_argument("--model", action="append", default=None,
                          help="a zoo name, a checkpoint path, 'box' or 'grabcut'; repeat to compare "
                               f"(default: {zoo.DEFAULT_MODEL}, the model that ships with napari-iog)")
    evaluate.add_argument("--data-root", default=None, help="where grabcut/ and berkeley/ are (../shared/data)")
    evaluate.add_argument("--max-clicks", type=int, default=20)
    evaluate.add_argument("--limit", type=int, default=0, help="only the first N objects")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--out", default="evaluation")
    evaluate.add_argument("--no-plot", action="store_true")
    evaluate.add_argument("--postprocess", action="store_true",
                          help="score the cleaned masks the annotator commits (only the clicked piece, inside "
                               "the box) instead of the network's raw output, which the published figures score")

    train = sub.add_parser("train", help="train or fine-tune a model on your annotated images",
                           description="Train or fine-tune an IOG model. Ctrl+C (or SIGTERM) stops after the "
                           "current step and saves; --resume continues. Multi-GPU: torchrun --nproc_per_node N "
                           "-m napari_iog train ...")
    data = train.add_argument_group("data")
    data.add_argument("--images", help="folder of images (tif, png, jpg)")
    data.add_argument("--labels", help="folder of instance-label files with the images' names (0 = background)")
    data.add_argument("--dataset", help=f"a dataset of ../shared/data instead: {', '.join(SHARED_TRAINING_SETS)}")
    data.add_argument("--data-root", default=None, help="where --dataset lives (../shared/data)")
    data.add_argument("--val-images", help="validation images (default: --val-fraction of the images)")
    data.add_argument("--val-labels")
    data.add_argument("--val-fraction", type=float, default=0.2, help="images held out for validation (0.2)")
    data.add_argument("--val-objects", type=int, default=200, help="at most this many validation objects (200)")
    data.add_argument("--min-area", type=int, default=64, help="skip objects smaller than this, in pixels (64)")
    train.add_argument("--base", default=zoo.DEFAULT_MODEL,
                       help="model to start from: a zoo name, a checkpoint path, or an architecture "
                            "(iog-resnet18, iog-refine-resnet101 ...) for random weights "
                            f"(default: {zoo.DEFAULT_MODEL})")
    train.add_argument("--out", required=True, help="checkpoint to write (and PATH.state.pt to resume from)")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    train.add_argument("--lr", type=float, default=None, help="learning rate (AdamW 1e-4, SGD 1e-8 as published)")
    train.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    train.add_argument("--batch-size", type=int, default=4, help="per process (4)")
    train.add_argument("--accumulate", type=int, default=1, help="micro-batches per optimizer step (1)")
    train.add_argument("--device", default="auto")
    train.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto",
                       help="mixed precision (auto: bf16 on CUDA, off on CPU)")
    train.add_argument("--freeze-backbone", action="store_true", help="train the heads only (fast on a CPU)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--workers", type=int, default=0, help="data-loading processes (0)")
    train.add_argument("--val-every", type=int, default=0, help="also validate every N steps")
    train.add_argument("--checkpoint-every", type=int, default=0, help="also save every N steps")
    train.add_argument("--resume", action="store_true", help="continue from OUT.state.pt")
    train.add_argument("--half", action="store_true", help="store the weights as float16 (half the size)")
    train.add_argument("--progress", choices=["bar", "json"], default="bar",
                       help="json: one event per line on stdout (for programs)")
    train.add_argument("--summary", help="write the final summary as JSON here")

    predict = sub.add_parser("predict", help="segment the boxes of a CSV or COCO file, without clicking",
                             description="Segment one object per box (the inside click is the given point, else "
                             "the box centre) and write instance labels (.tif) or COCO (.json). Later boxes "
                             "never take pixels of earlier ones. Several GPUs: torchrun --nproc_per_node N "
                             "-m napari_iog predict ...")
    predict.add_argument("image", help="an image file (tif, png, jpg, npy) or a zarr folder")
    predict.add_argument("--boxes", required=True,
                         help="CSV with x0,y0,x1,y1[,x,y][,plane][,label] (pixels, inclusive), or a COCO .json "
                              "with bbox [x, y, w, h]")
    predict.add_argument("--model", default=zoo.DEFAULT_MODEL,
                         help=f"a zoo name or a checkpoint path (default: {zoo.DEFAULT_MODEL})")
    predict.add_argument("--out", required=True, help="labels.tif or objects.json (COCO)")
    predict.add_argument("--polygons", action="store_true", help="COCO polygons instead of RLE")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--batch-size", type=int, default=None, help="objects per forward pass (4 CPU, 16 GPU)")

    export = sub.add_parser("export", help="labels to COCO JSON or a label-image TIFF",
                            description="Write instance labels (a .tif/.png/.npy/COCO .json file or a zarr folder) "
                            "as COCO JSON (one image per plane; RLE, or --polygons) or as a label-image TIFF.")
    export.add_argument("labels", help="labels file or zarr folder")
    export.add_argument("--out", required=True, help="objects.json (COCO) or labels.tif")
    export.add_argument("--polygons", action="store_true", help="COCO polygons instead of RLE (approximate)")
    export.add_argument("--image-name", default=None, help="file_name stem of the COCO images (the labels' name)")
    export.add_argument("--category", default="object", help="the COCO category name")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "weights":
            if args.action != "list" and not args.name:
                raise SystemExit(f"napari-iog weights {args.action} needs a name")
            return _weights(args)
        if args.command == "train":
            return _train(args)
        if args.command == "predict":
            return _predict(args)
        if args.command == "export":
            return _export(args)
        return _evaluate(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"napari-iog: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
