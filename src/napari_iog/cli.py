"""``napari-iog``: the command line (also ``python -m napari_iog``).

    napari-iog annotate [IMAGE] [--model MODEL]
    napari-iog weights list | fetch NAME | verify PATH_OR_NAME | remove FILE
    napari-iog evaluate --dataset grabcut --data-root DIR [--model iog-pascal-sbd --model box ...]
    napari-iog train --images DIR --labels DIR --out PATH [--base MODEL --steps N ...]
    napari-iog predict IMAGE --boxes boxes.csv|coco.json --out labels.tif|objects.json [--model MODEL]
    napari-iog export LABELS --out objects.json|labels.tif [--polygons]

Without ``--model`` (``--base``), the model that ships with the package is used. Each verb's
function is set on its parser (``set_defaults(func=...)``); the training options come from
:class:`~napari_iog.training.config.TrainConfig`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

from . import zoo
from .cli_common import at_least
from .cli_common import progress_bar as _bar
from .cli_evaluate import _evaluation_instances, add_evaluate_parser  # noqa: F401  (tests use the first)


def _weights_list(args) -> int:
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


def _weights_fetch(args) -> int:
    if args.name not in zoo.WEIGHTS:    # said before any progress bar is drawn
        raise zoo.UnknownModelError(f"unknown model {args.name!r}: known names are {', '.join(zoo.WEIGHTS)}")
    with _bar(None, f"fetch {args.name}", unit="B", unit_scale=True, unit_divisor=1024) as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)

        try:
            path = zoo.fetch(args.name, progress=progress)
        except (zoo.ManualDownloadRequired, zoo.DownloadError) as err:
            print(f"\nnapari-iog: {err}", file=sys.stderr)
            return 2
    print(f"{args.name}: {path}")
    return 0


def _weights_remove(args) -> int:
    removed = zoo.remove_finetuned(args.name)
    print(f"removed {', '.join(str(p) for p in removed)}")
    return 0


def _weights_verify(args) -> int:
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


def _annotate(args) -> int:
    import napari

    from .launch import open_annotator

    viewer, widget = open_annotator(args.image, args.model, args.device, show=not args.check)
    if args.check:          # for scripts and tests: open, load the model, say what runs, close
        widget.loading.work.wait(300)
        print(widget.status.value)
        if widget.annotator is not None:
            widget.annotator.close()
        viewer.close()
        return 0 if widget.annotator is not None else 1
    napari.run()
    return 0


def _serve(args) -> int:
    from .serve.main import serve
    return serve(args.model, args.device, args.host, args.port, args.token, args.no_token, args.learn,
                 args.learn_seconds, args.lanes, args.precision)


SHARED_TRAINING_SETS = {"sstem": "sstem_vnc", "cvppp": "cvppp_a1", "bsds": "bsds500_test_regions"}


def _training_pairs(args):
    from . import training
    from .evaluation.datasets import BENCHMARKS, data_root

    if args.dataset:
        if args.dataset in BENCHMARKS:
            raise ValueError(f"{args.dataset} is an evaluation benchmark: training on it would make its "
                             "figures meaningless")
        if args.dataset not in SHARED_TRAINING_SETS:
            raise ValueError(f"unknown training set {args.dataset!r}: {', '.join(SHARED_TRAINING_SETS)}")
        loader = {"sstem": training.sstem_pairs, "cvppp": training.cvppp_pairs, "bsds": training.bsds_pairs}
        return loader[args.dataset](data_root(args.data_root, SHARED_TRAINING_SETS[args.dataset])
                                    / SHARED_TRAINING_SETS[args.dataset])
    if not (args.images and args.labels):
        raise ValueError(f"give --images DIR and --labels DIR (or --dataset {'|'.join(SHARED_TRAINING_SETS)})")
    return training.pairs_from_folders(args.images, args.labels)


class _TrainingReport:
    """What ``napari-iog train`` shows of a run's events: JSON lines, or words and a bar."""

    def __init__(self, json_lines: bool, how_held_out: str):
        self.json_lines, self.how = json_lines, how_held_out
        self.bar = None

    def __call__(self, event) -> None:
        from .training import events as ev

        if self.json_lines:
            print(ev.to_json(event), flush=True)
        elif isinstance(event, ev.TrainingStarted):
            data = event.data
            print(f"{event.arch} on {event.device} x{event.world_size}: {event.objects} objects from "
                  f"{data['images']} images ({data['skipped_small']} too small skipped, {data['touching_border']} "
                  f"touching the border kept, {data['empty_images']} images without labels); "
                  f"{event.validation_objects} held-out objects ({self.how}); {event.total_steps} steps, "
                  f"{event.optimizer} lr {event.lr:g}, amp {event.amp}"
                  + (f"; resuming at step {event.resumed_from}" if event.resumed_from else ""),
                  file=sys.stderr)
            self.bar = _bar(event.total_steps, "train", unit="step", initial=event.resumed_from)
        elif isinstance(event, ev.StepDone) and self.bar is not None:
            self.bar.update(event.step - self.bar.n)
            self.bar.set_postfix_str(f"loss {event.loss:.4f}")
        elif isinstance(event, ev.Validated) and event.miou is not None:
            (self.bar.write if self.bar is not None else print)(
                f"validation mIoU@3 at step {event.step}: {event.miou:.3f}")
        elif isinstance(event, ev.TrainingEnded) and self.bar is not None:
            self.bar.close()


def _train(args) -> int:
    from .training import CANCELLED_EXIT, TrainConfig, pairs_from_folders, split_pairs, train
    from .training.events import blend_in_words

    rank = int(os.environ.get("RANK", "0"))
    config = TrainConfig.from_args(args)
    pairs = _training_pairs(args)
    if not pairs:
        raise ValueError("no image has a matching label file with objects in it: label files are matched "
                         "to images by name (a.png or a.tif for a.jpg)")
    if args.val_images or args.val_labels:
        if not (args.val_images and args.val_labels):
            raise ValueError("give both --val-images and --val-labels")
        train_pairs, val_pairs, how = pairs, pairs_from_folders(args.val_images, args.val_labels), "given"
    else:
        train_pairs, val_pairs, how = split_pairs(pairs, config.val_fraction, config.seed)
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
    report = _TrainingReport(args.progress == "json", how)
    summary = train(config, train_pairs, val_pairs, on_event=report, should_stop=lambda: cancel["asked"])
    if rank != 0:
        return 0
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=1))
    if not report.json_lines:
        before, after = summary["val_miou_before"], summary["val_miou_after"]
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
        agree = len(set(summary["rank_digests"])) == 1
        print(f"\n{summary['status']}: {summary['steps']}/{summary['total_steps']} steps in "
              f"{summary['seconds']:.0f} s; "
              f"held-out mIoU@3 {fmt(before)} -> {fmt(after)}"
              f"{blend_in_words(summary['blend'], summary['blend_scores'])}; model: {summary['out']}"
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
    from .models.devices import distributed_context
    from .predictor import IOGPredictor
    from .training.events import CANCELLED_EXIT

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
        bar = _bar(len(prompts), "predict", unit="object") if rank == 0 else None
        cancel = {"asked": False}
        signal.signal(signal.SIGINT, lambda *a: cancel.__setitem__("asked", True))
        mine = range(rank, len(prompts), world)
        results = batch.predict_boxes(
            predictor, image, prompts, checked, mine, args.batch_size,
            on_progress=(lambda done, total: bar.update(min(done * world, total) - bar.n)) if bar else None,
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
    from .training.config import TrainConfig

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
    verbs = weights.add_subparsers(dest="action", required=True, metavar="{list,fetch,verify,remove}")
    verbs.add_parser("list", help="every zoo model and the fine-tuned ones").set_defaults(func=_weights_list)
    fetch = verbs.add_parser("fetch", help="download a zoo model into the cache, verified")
    fetch.add_argument("name", help="a zoo name (napari-iog weights list)")
    fetch.set_defaults(func=_weights_fetch)
    verify = verbs.add_parser("verify", help="load a checkpoint and report what it is")
    verify.add_argument("name", help="a zoo name or a checkpoint path")
    verify.add_argument("--json", action="store_true", help="the whole report as JSON")
    verify.set_defaults(func=_weights_verify)
    remove = verbs.add_parser("remove", help="delete a fine-tuned model from the cache")
    remove.add_argument("name", help="the fine-tuned model's file name")
    remove.set_defaults(func=_weights_remove)

    annotate = sub.add_parser("annotate", help="open napari with an image and the IOG annotator started")
    annotate.add_argument("image", nargs="?", default=None,
                          help="an image file napari reads, or a sample: photo, microscopy (default: photo)")
    annotate.add_argument("--model", default=None, help="a zoo name or a model file (default: the bundled model)")
    annotate.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    annotate.add_argument("--check", action="store_true",
                          help="open, load the model, print what runs, and close (no window is shown)")
    annotate.set_defaults(func=_annotate)

    serve = sub.add_parser("serve", help="the model as an HTTP service for annotators elsewhere (extra: serve)")
    serve.add_argument("--model", default=None, help="a zoo name or a model file (default: the bundled model)")
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    serve.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default): this machine only")
    serve.add_argument("--port", type=at_least(1), default=8765, help="8765 by default")
    serve.add_argument("--token", default=None, help="default: $NAPARI_IOG_TOKEN, else one made at the first start")
    serve.add_argument("--no-token", action="store_true", help="serve without a token (trusted networks only)")
    serve.add_argument("--learn", action="store_true",
                       help="objects the annotators commit teach the model (a low-priority learner on --device); "
                            "a better model becomes the next version for every annotator")
    serve.add_argument("--lanes", type=at_least(1), default=None,
                       help="on a CPU: forward passes at once, each on its share of the cores (default: one a "
                            "core, at most 4)")
    serve.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16", "float16", "int8"),
                       help="auto (as the annotator chooses), float32, bfloat16, float16, or int8 (CPU: the "
                            "network quantized, its pass in ~0.6x the time; docs/benchmarks.md)")
    serve.add_argument("--learn-seconds", type=float, default=5.0,
                       help="training time each committed object adds (5 s by default)")
    serve.set_defaults(func=_serve)

    add_evaluate_parser(sub)

    train = sub.add_parser("train", help="train or fine-tune a model on your annotated images",
                           description="Train or fine-tune an IOG model. Ctrl+C (or SIGTERM) stops after the "
                           "current step and saves; --resume continues. Multi-GPU: torchrun --nproc_per_node N "
                           "-m napari_iog train ...")
    data = train.add_argument_group("data")
    data.add_argument("--images", help="folder of images (tif, png, jpg)")
    data.add_argument("--labels", help="folder of instance-label files with the images' names (0 = background)")
    data.add_argument("--dataset", help=f"a named dataset instead: {', '.join(SHARED_TRAINING_SETS)} (in --data-root)")
    data.add_argument("--data-root", default=None, help="the folder holding --dataset (default: $NAPARI_IOG_DATA)")
    data.add_argument("--val-images", help="validation images (default: --val-fraction of the images)")
    data.add_argument("--val-labels")
    TrainConfig.add_arguments(train, groups={"data": data})
    train.add_argument("--progress", choices=["bar", "json"], default="bar",
                       help="json: one event per line on stdout (for programs)")
    train.add_argument("--summary", help="write the final summary as JSON here")
    train.set_defaults(func=_train)

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
    predict.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    predict.add_argument("--batch-size", type=at_least(1), default=None,
                         help="objects per forward pass (default 4 on a CPU, 16 on a GPU)")
    predict.set_defaults(func=_predict)

    export = sub.add_parser("export", help="labels to COCO JSON or a label-image TIFF",
                            description="Write instance labels (a .tif/.png/.npy/COCO .json file or a zarr folder) "
                            "as COCO JSON (one image per plane; RLE, or --polygons) or as a label-image TIFF.")
    export.add_argument("labels", help="labels file or zarr folder")
    export.add_argument("--out", required=True, help="objects.json (COCO) or labels.tif")
    export.add_argument("--polygons", action="store_true", help="COCO polygons instead of RLE (approximate)")
    export.add_argument("--image-name", default=None, help="file_name stem of the COCO images (the labels' name)")
    export.add_argument("--category", default="object", help="the COCO category name")
    export.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as err:     # OSError: missing files, a full disk ...
        print(f"napari-iog: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
