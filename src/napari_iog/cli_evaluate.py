"""``napari-iog evaluate``: the simulated user over a benchmark, a held-out domain or a folder,
and with ``--learn`` a simulated annotation session with and without learning."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import zoo
from .cli_common import at_least
from .cli_common import progress_bar as _bar


def _method(spec: str, device: str, postprocess: bool = False, precision: str = "auto", backend: str = "auto"):
    from . import evaluation as E

    if spec == "box":
        return E.BoxBaseline()
    if spec in ("grabcut", "opencv-grabcut"):
        return E.GrabCutBaseline()
    from .predictor import IOGPredictor

    name = Path(spec).stem if Path(spec).is_file() else spec
    predictor = IOGPredictor(spec, device=device, precision=precision, backend=backend)
    print(f"{name}: {predictor.precision} on {predictor.device} ({predictor.backend})", file=sys.stderr)
    return E.IOGMethod(predictor, name=name, postprocess=postprocess)


def _evaluation_instances(dataset: str, data_root: str | None) -> list:
    """A benchmark (grabcut, berkeley), a held-out domain by name (sstem, cvppp, dsb2018: the
    objects the default never trained on; monuseg, cwfid: domains it never saw) or a folder."""
    from . import evaluation as E
    from .training.data import validation_instances
    from .training.sources import HELD_OUT_DOMAINS, held_out_domain

    if dataset not in HELD_OUT_DOMAINS:
        return E.load_dataset(dataset, data_root)
    from .evaluation.datasets import data_root as root_of

    pairs = held_out_domain(dataset, root_of(data_root, dataset))
    return validation_instances(pairs, limit=None)


def _evaluate(args) -> int:
    from . import evaluation as E

    instances = _evaluation_instances(str(args.dataset), args.data_root)
    if args.limit is not None:
        instances = instances[:args.limit]
    out = Path(args.out)
    summaries = {}
    dataset_tag = Path(str(args.dataset)).name
    if args.learn:
        return _learn(args, instances, out, dataset_tag)
    specs = args.model or [zoo.DEFAULT_MODEL]
    if args.vs_grabcut and not {"grabcut", "opencv-grabcut"} & set(specs):
        specs = [*specs, "opencv-grabcut"]
    for spec in specs:
        method = _method(spec, args.device, args.postprocess, args.precision, args.backend)
        with _bar(len(instances), f"{method.name} on {dataset_tag}", unit="object") as bar:
            def progress(done, total, result):
                bar.update(1)
                bar.set_postfix_str(f"IoU@3 {result['ious'][2]:.3f}")

            result = E.evaluate(method, instances, args.max_clicks, progress=progress)
        result["dataset"] = str(args.dataset)
        tag = f"{dataset_tag}_{method.name}".replace("/", "_")
        E.write_results(result, out, tag)
        summaries[method.name] = result["summary"]
    print(E.summary_table(summaries))
    (out / f"{dataset_tag}_summary.json").write_text(json.dumps(summaries, indent=1))
    if not args.no_plot:
        try:
            E.plot_curves(summaries, out / f"{dataset_tag}_miou.png", f"{dataset_tag}: mIoU against clicks")
        except ImportError:
            print("(no plot: matplotlib is not installed; pip install 'napari-iog[benchmark]')")
    print(f"results in {out}")
    return 0


def _learn(args, instances: list, out: Path, dataset_tag: str) -> int:
    """A simulated session with and without learning (``--learn``), the first model given."""
    import torch

    from .learning import LearnSettings, simulate
    from .models import load_model

    spec = (args.model or [zoo.DEFAULT_MODEL])[0]
    model = load_model(zoo.resolve(spec))
    settings = LearnSettings(seconds_per_object=args.learn_seconds)
    print(f"{Path(spec).stem}: learning on {len(instances)} objects of {dataset_tag}, "
          f"{args.learn_steps or 0} step(s) or {args.learn_seconds} s per object, {torch.get_num_threads()} threads",
          file=sys.stderr)
    with _bar(len(instances), f"session on {dataset_tag}", unit="object") as bar:
        def progress(done, total, row):
            bar.update(1)
            bar.set_postfix_str(f"IoU@3 {row['with'][2]:.3f} (fixed model {row['without'][2]:.3f}), "
                                f"model v{row['model_version']}")

        result = simulate(model, instances, settings, learn_seconds=args.learn_seconds, learn_steps=args.learn_steps,
                          max_clicks=args.max_clicks, warmup=args.learn_warmup, postprocess=True,
                          device="cpu" if args.device == "auto" else args.device, commit=args.learn_commit,
                          progress=progress)
    result.update(dataset=str(args.dataset), model=str(spec))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{dataset_tag}_learn.json"
    path.write_text(json.dumps(result, indent=1))
    after = result["after_warmup"]
    for which in ("without", "with"):
        figures = after[which]
        if figures["objects"]:
            print(f"{which:>7} learning, objects {args.learn_warmup + 1}-{len(instances)}: "
                  f"mIoU@3 {figures['miou@3']:.3f}, NoC@90 {figures['noc@90']:.2f}")
    print(f"{result['swaps']} model swaps; results in {path}")
    return 0


def add_evaluate_parser(sub) -> None:
    evaluate = sub.add_parser("evaluate", help="simulated-user evaluation (mIoU@k, NoC@85/90)")
    evaluate.add_argument("--dataset", required=True,
                          help="grabcut, berkeley, a held-out domain (sstem, cvppp, dsb2018: what the default "
                               "never trained on; monuseg, cwfid: domains it never saw, in get-more.sh's folder), "
                               "or a folder (GrabCut/Berkeley layout or images/ + labels/)")
    evaluate.add_argument("--model", action="append", default=None,
                          help="a zoo name, a checkpoint path, 'box' or 'grabcut'; repeat to compare "
                               f"(default: {zoo.DEFAULT_MODEL}, the model that ships with napari-iog)")
    evaluate.add_argument("--data-root", default=None,
                          help="the folder holding grabcut/ and berkeley/ (default: $NAPARI_IOG_DATA)")
    evaluate.add_argument("--max-clicks", type=at_least(3), default=20,
                          help="clicks per object, the three first ones included (at least 3; default 20)")
    evaluate.add_argument("--limit", type=at_least(1), default=None, help="only the first N objects (N >= 1)")
    evaluate.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    evaluate.add_argument("--precision", default="auto",
                          help="auto (bf16 where the CPU or GPU is fast at it), float32 (the exact network), "
                               "bfloat16, float16, or int8 (CPU, ONNX Runtime: the network quantized)")
    evaluate.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime"),
                          help="auto (on a CPU, ONNX Runtime where the warm-up finds it faster and agreeing), "
                               "torch, or onnxruntime (float32, CPU; needs napari-iog[fast])")
    evaluate.add_argument("--out", default="evaluation",
                          help="folder for the results (JSON per method and dataset, summary, plot)")
    evaluate.add_argument("--no-plot", action="store_true", help="write no PNG of the curves")
    evaluate.add_argument("--vs-grabcut", action="store_true",
                          help="also run OpenCV GrabCut from the same clicks, for its curve beside the models'")
    evaluate.add_argument("--postprocess", action="store_true",
                          help="score the cleaned masks the annotator commits (only the clicked piece, inside "
                               "the box) instead of the network's raw output, which the published figures score")
    learn = evaluate.add_argument_group("a simulated session that learns (--learn)")
    learn.add_argument("--learn", action="store_true",
                       help="annotate the objects in file order, learning from each commit as the annotator does, "
                            "and again without learning; results per block of 10 objects")
    learn.add_argument("--learn-seconds", type=float, default=5.0,
                       help="training time per committed object (5 s: what a user's time per object allows on "
                            "two CPU cores)")
    learn.add_argument("--learn-steps", type=at_least(1), default=None,
                       help="training steps per committed object instead of seconds (the same on every machine)")
    learn.add_argument("--learn-warmup", type=at_least(0), default=30,
                       help="the figures 'after warmup' leave out this many first objects (30)")
    learn.add_argument("--learn-commit", choices=("shown", "true"), default="shown",
                       help="what the simulated user commits: 'shown' (the model's mask after the clicks) or 'true' "
                            "(touched up with the brush to the true object first)")
    evaluate.set_defaults(func=_evaluate)
