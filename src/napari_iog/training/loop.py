"""The training / fine-tuning loop.

As published: BCE with logits on the fine output and the four coarse outputs, summed over
pixels and divided by the batch size; SGD (momentum 0.9, weight decay 5e-4, lr 1e-8 for that
summed loss) or AdamW (the default: it adapts in far fewer steps, which is what fine-tuning on
a few annotated objects needs). Linear warm-up then cosine decay; bf16 autocast on CUDA;
gradient accumulation; an optional frozen backbone (only the heads learn: fast on a CPU).
Fine-tuning trained weights has its own defaults, by measurement (``FINETUNE_LR``,
``FINETUNE_COARSE_WEIGHT``, ``FINETUNE_BLEND``): AdamW at 1e-4 (``UNSEEN_LR``, 1e-3, where the base
scores below ``UNSEEN_BELOW`` on the held-out objects before training: a domain it has not learnt),
the coarse outputs weighed 0.1, and the saved model halfway between the base's weights and the
trained ones (``blend``), unless the held-out objects score the trained ones better by
``KEEP_ALL_MARGIN`` at the end.

Validation: the held-out objects are segmented by :class:`~napari_iog.predictor.IOGPredictor`
with the simulated user's three clicks (mIoU@3), before training and after every epoch.

Checkpoints: ``out`` is a model in the project's format with a card (what it was trained
from and on, how long, validation before and after); ``out`` + ``.state.pt`` holds what a
resumed run needs (optimizer, schedule, step; the trained weights, not the blended ones). Both
are written atomically. The random draws
depend only on (seed, epoch, sample), so a resumed run sees exactly the data the first one
would have.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in
DistributedDataParallel (NCCL on CUDA, gloo on CPU) and the data split by a
DistributedSampler; rank 0 validates and writes.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .. import __version__, zoo
from .. import geometry as G
from ..evaluation import IOGMethod, evaluate
from ..models import ARCHITECTURES, IOGRefineNetwork, build_model, load_model, save_model
from ..models.checkpoint import atomic_save, state_path
from ..models.devices import distributed_context
from ..models.mobilenet import IOGMobileNetwork, with_correction_maps
from .config import (
    DEFAULT_LR,
    DEFAULT_WEIGHT_DECAY,
    FINETUNE_BLEND,
    FINETUNE_COARSE_WEIGHT,
    FINETUNE_LR,
    KEEP_ALL_MARGIN,
    NFL_GAMMA,
    UNSEEN_LR,
    TrainConfig,
    TrainingError,
    has_not_learnt,
)
from .corrections import batch_sizes, correction_map_weights, network_input, simulate_corrections
from .data import InstanceDataset, Pair, validation_instances
from .events import CheckpointSaved, StepDone, TrainingEnded, TrainingEvent, TrainingStarted, Validated

# --- pieces ------------------------------------------------------------------------------------------

def load_base(base: str, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """The model to start from and what to say of it in the card."""
    if base in ARCHITECTURES:
        if base.startswith("dextr"):
            raise TrainingError("training supports the IOG architectures, not DEXTR")
        return build_model(base, seed=seed), {"base": base, "base_init": "random"}
    try:
        path = zoo.resolve(base)
    except (FileNotFoundError, zoo.UnknownModelError) as err:
        raise TrainingError(f"base model: {err}; or give an architecture name to start from random "
                            f"weights ({', '.join(a for a in ARCHITECTURES if a.startswith('iog'))})") from err
    model = load_model(path)
    if model.arch.startswith("dextr"):
        raise TrainingError("training supports the IOG architectures, not DEXTR")
    card = dict(getattr(model, "card", {}) or {})
    return model, {"base": str(base), "base_path": str(path), "base_init": "checkpoint",
                   "base_card": {k: card[k] for k in ("arch", "trained_on", "data", "steps") if k in card}}


def iog_loss(fine: torch.Tensor, coarse: Sequence[torch.Tensor], target: torch.Tensor,
             coarse_weight: float = 1.0, loss: str = "bce") -> torch.Tensor:
    """The published loss: per-pixel BCE with logits on all five outputs, summed over pixels,
    divided by the batch size. Pixels whose target is negative (unknown) are left out.
    ``coarse_weight`` scales the four coarse outputs' terms (1: as published). ``loss="nfl"``
    weighs each pixel's BCE by (1 - p_t)^2, normalised per sample to the same total weight as
    plain BCE (RITM's normalised focal loss: the pixels still wrong get the gradient);
    ``loss="bce+nfl"`` is the mean of the two (the BCE's even pull on every pixel kept, half of it
    moved to the pixels still wrong)."""
    weight = None
    if bool((target < 0).any()):
        weight, target = (target >= 0).float(), target.clamp(min=0)

    def pixel_weight(output: torch.Tensor) -> torch.Tensor | None:
        if loss == "bce":
            return weight
        with torch.no_grad():
            p_true = torch.sigmoid(output.float()) * (2 * target - 1) + (1 - target)
            focal = (1 - p_true) ** NFL_GAMMA
            valid = torch.ones_like(focal) if weight is None else weight
            focal = focal * valid
            dims = tuple(range(1, focal.dim()))
            focal = focal * valid.sum(dims, keepdim=True) / focal.sum(dims, keepdim=True).clamp(min=1e-6)
            return focal if loss == "nfl" else (focal + valid) / 2

    def bce(output: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output.float(), target, pixel_weight(output), reduction="sum")

    total = bce(fine)
    if coarse_weight:
        total = total + coarse_weight * sum(bce(o) for o in coarse)
    return total / target.shape[0]


def batch_loss(model: nn.Module, batch: dict[str, torch.Tensor], refine: bool,
               coarse_weight: float = 1.0, loss: str = "bce") -> torch.Tensor:
    """The network on a training batch (refinement networks also take the click maps), scored
    by :func:`iog_loss`."""
    if refine:
        fine, coarse = model(batch["x"], batch["clicks"], return_coarse=True)
    else:
        fine, coarse = model(network_input(model, batch["x"]), return_coarse=True, **batch_sizes(model, batch))
    return iog_loss(fine, coarse, batch["target"], coarse_weight, loss)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def freeze(model: nn.Module, backbone: bool, batchnorm: bool) -> None:
    """Stop gradients into the backbone and/or freeze BatchNorm (statistics and affine)."""
    for p in model.backbone.parameters():
        p.requires_grad_(not backbone)
    # CoarseNet's upsamples.0 is in the published weights but in no forward pass: DDP would
    # wait for its gradients forever.
    if not model.Coarse_net.upsample_first:
        for p in model.Coarse_net.upsamples[0].parameters():
            p.requires_grad_(False)
    if batchnorm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters():
                    p.requires_grad_(False)


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Blended:
    """What a run hands out (validates and saves): the model as trained, or with ``share`` < 1 its
    weights moved back toward the base's (base + share x (trained - base), WiSE-FT), which keeps
    part of what the base knew where the new data would pull it away."""

    def __init__(self, model: nn.Module, share: float):
        self.trained, self.share = model, share
        self.base = {k: v.detach().clone() for k, v in model.state_dict().items()} if share < 1 else None

    def keep_all(self) -> None:
        self.share, self.base = 1.0, None

    def model(self) -> nn.Module:
        if self.base is None:
            return self.trained
        blended = copy.deepcopy(self.trained)
        blended.load_state_dict(blended_weights(self.base, self.trained.state_dict(), self.share))
        return blended


def blended_weights(base: dict[str, torch.Tensor], trained: dict[str, torch.Tensor],
                    share: float) -> dict[str, torch.Tensor]:
    """``base + share x (trained - base)`` for every floating-point tensor; the rest as trained."""
    return {k: base[k] + share * (v - base[k]) if v.is_floating_point() else v for k, v in trained.items()}


def validate(model: nn.Module, instances, device: torch.device) -> float | None:
    """mIoU@3 of the held-out objects, with the predictor exactly as the annotator runs it."""
    if not instances:
        return None
    from ..predictor import IOGPredictor

    frozen = copy.deepcopy(model).eval()
    predictor = IOGPredictor(frozen, device=device, precision="float32", warmup=False)
    summary = evaluate(IOGMethod(predictor), instances, max_clicks=3)["summary"]
    return float(summary["miou@3"])


# --- distributed ----------------------------------------------------------------------------------

def _validate_on_rank0(model: nn.Module, instances, device: torch.device, rank: int, world: int) -> float | None:
    """Rank 0's held-out mIoU@3 (None on the others, which wait for it)."""
    miou = validate(model, instances, device) if rank == 0 else None
    if world > 1:
        dist.barrier()
    return miou


def _any_rank(flag: bool, world: int, device: torch.device) -> bool:
    if world == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


# --- the loop ----------------------------------------------------------------------------------

def train(config: TrainConfig, train_pairs: Sequence[Pair], val_pairs: Sequence[Pair] = (),
          on_event: Callable[[TrainingEvent], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train ``config.base`` on ``train_pairs``; returns the run's summary.

    ``on_event`` receives the typed events of :mod:`~napari_iog.training.events` (only on
    rank 0); the summary returned is the last one's (:class:`TrainingEnded`) fields.
    ``should_stop`` is polled after every optimizer step; when it says yes the run saves its
    model and resume state at that step and ends with ``status`` "cancelled".
    """
    config.check()
    emit = on_event or (lambda event: None)
    rank, world, device, started_group = distributed_context(config.device)
    emit = emit if rank == 0 else (lambda event: None)
    try:
        return _train(config, train_pairs, val_pairs, emit, should_stop or (lambda: False),
                      rank, world, device)
    finally:
        if started_group:
            dist.destroy_process_group()


def _train(config, train_pairs, val_pairs, emit, should_stop, rank, world, device) -> dict[str, Any]:
    out, state_file = Path(config.out).expanduser(), state_path(Path(config.out).expanduser())
    torch.manual_seed(config.seed)
    model, base_card = load_base(config.base, config.seed)
    if config.correction_maps:
        if not isinstance(model, IOGMobileNetwork):
            raise TrainingError(f"correction maps are built for iog-mobilenetv2, not {model.arch}")
        wide = with_correction_maps(model, head=config.correction_head)
        if wide is not model:
            model, base_card = wide, {**base_card, "widened_for": "correction maps"}
    refine = isinstance(model, IOGRefineNetwork)
    dataset = InstanceDataset(train_pairs, config.min_area, config.augment, config.jitter, refine, config.seed)
    if len(dataset) == 0:
        raise TrainingError(f"no objects to train on ({dataset.stats.to_dict()}): annotate some objects of at "
                            f"least {config.min_area} pixels")
    val_instances = validation_instances(val_pairs, config.min_area, config.val_objects, config.seed)
    fine_tune = base_card["base_init"] == "checkpoint"
    freeze_bn = config.freeze_bn if config.freeze_bn is not None else fine_tune
    if not freeze_bn and config.batch_size < 2:
        raise TrainingError("BatchNorm cannot learn from batches of one (the PSP's pooled features are 1x1): "
                            "use --batch-size 2 or more (with --accumulate for memory), or start from a checkpoint")
    freeze_bn = freeze_bn or config.correction_maps_only    # BN statistics would move the first clicks' answers
    freeze(model, config.freeze_backbone, freeze_bn)
    if config.correction_maps_only:
        correction_map_weights(model)
    # oneDNN's channels_last convolutions: a step of the default's recipe 1.3x faster on a CPU (benchmarks.md)
    model.to(device, memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    state = torch.load(state_file, map_location="cpu", weights_only=True) \
        if config.resume and state_file.is_file() else None
    start = time.perf_counter()
    # the base's held-out score comes first: it sets a fine-tune's rate (a resumed run's optimizer keeps its own)
    val_before = state["val_before"] if state is not None else \
        _validate_on_rank0(model, val_instances, device, rank, world)
    lr = config.lr if config.lr is not None else (FINETUNE_LR if fine_tune else DEFAULT_LR)[config.optimizer]
    if config.lr is None and fine_tune and config.optimizer == "adamw" and _any_rank(
            rank == 0 and has_not_learnt(val_before), world, device):
        lr = UNSEEN_LR
    coarse_weight = config.coarse_weight if config.coarse_weight is not None else \
        FINETUNE_COARSE_WEIGHT if fine_tune else 1.0
    share = config.blend if config.blend is not None else FINETUNE_BLEND if fine_tune else 1.0
    handed_out = Blended(model, share)      # before a resume loads the trained weights: the base's
    choose_blend = config.blend is None and share < 1
    blend_scores: dict[str, float | None] = {}
    wd = config.weight_decay if config.weight_decay is not None else DEFAULT_WEIGHT_DECAY[config.optimizer]
    if config.correction_maps_only:
        wd = 0.0    # decay would shrink the first conv's image and guidance weights, which must not change
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=wd)
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=wd)

    per_epoch = len(dataset) // world
    batches = per_epoch // config.batch_size if per_epoch >= config.batch_size else 1
    steps_per_epoch = max(1, batches // config.accumulate)
    total = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    epochs = math.ceil(total / steps_per_epoch)
    warmup = config.warmup_steps if config.warmup_steps is not None else min(100, total // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))

    history: dict[str, list] = {"loss": [], "val": []}
    step, seconds_before = 0, 0.0
    if state is not None:
        if state["arch"] != model.arch or state["total_steps"] != total:
            raise TrainingError(f"{state_file} is a run of {state['arch']} for {state['total_steps']} steps; this "
                                f"one is {model.arch} for {total}: use the same settings, or drop --resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = int(state["step"]), state["history"]
        seconds_before = float(state.get("seconds", 0.0))
    resumed_from = step

    module = model
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    amp_dtype = _amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 and device.type == "cuda" else None
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                                  seed=config.seed, drop_last=world > 1)
    frame_pixels = 5 * G.FRAME * G.FRAME
    card_base = {**base_card, "arch": module.arch, "data": dataset.stats.to_dict(),
                 "licence_of_data": dataset.stats.sources, "objects": dataset.stats.objects,
                 "validation_objects": len(val_instances), "total_steps": total,
                 "config": {k: v for k, v in config.to_dict().items() if k not in ("out", "resume")},
                 "lr": lr, "coarse_weight": coarse_weight, "blend": share,
                 "napari_iog": __version__}

    emit(TrainingStarted(module.arch, str(device), world, dataset.stats.objects, dataset.stats.to_dict(),
                         len(val_instances), total, epochs, steps_per_epoch, resumed_from,
                         str(amp_dtype).replace("torch.", "") if amp_dtype else "off", lr, config.optimizer))

    def run_validation() -> float | None:
        return _validate_on_rank0(handed_out.model(), val_instances, device, rank, world)

    def keep_all_if_better(halfway: float | None) -> float | None:
        """The end's held-out score, after keeping all of training's change where it does better."""
        all_kept = validate(handed_out.trained, val_instances, device) if rank == 0 else None
        better = rank == 0 and halfway is not None and all_kept >= halfway + KEEP_ALL_MARGIN
        blend_scores.update({f"{handed_out.share:g}": halfway, "1": all_kept})
        if _any_rank(better, world, device):     # also keeps the other ranks waiting for rank 0
            handed_out.keep_all()
            return all_kept
        return halfway

    def save(status: str) -> None:
        if rank != 0:
            return
        elapsed = seconds_before + time.perf_counter() - start
        after = history["val"][-1][1] if history["val"] else None
        card = {**card_base, "blend": handed_out.share, **({"blend_scores": blend_scores} if blend_scores else {}),
                "status": status, "steps": step, "seconds": round(elapsed, 1),
                "val_miou_before": val_before, "val_miou_after": after,
                "val_history": [list(v) for v in history["val"]]}
        save_model(handed_out.model(), out, card, half=config.half)
        atomic_save({"arch": module.arch, "total_steps": total, "step": step, "model": module.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "history": history, "val_before": val_before, "seconds": elapsed}, state_file)
        emit(CheckpointSaved(str(out), step, status))

    if state is None and val_instances:
        history["val"].append([0, val_before])
        emit(Validated(0, 0, val_before))

    status = "complete"
    loss_sum, loss_count, window_start, window_step = 0.0, 0, time.perf_counter(), step
    set_train_mode(module, freeze_bn)
    epoch = step // steps_per_epoch
    while step < total and status == "complete":
        skip = (step - epoch * steps_per_epoch) * config.accumulate * config.batch_size
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        indices = list(sampler)[skip:]
        loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, sampler=indices,
                                             num_workers=config.workers, drop_last=len(indices) >= config.batch_size,
                                             pin_memory=device.type == "cuda")
        micro = 0
        optimizer.zero_grad(set_to_none=True)   # no leftover micro-batch leaks into this epoch
        if len(loader) == 0:
            raise TrainingError(f"epoch {epoch + 1} has no batches (resume state out of step with the data?)")
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            micro += 1
            last_micro = micro % config.accumulate == 0
            sync = model.no_sync() if (world > 1 and not last_micro) else nullcontext()
            with sync:
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    if config.correction_prob > 0:
                        # by optimizer step and micro-batch within it: a resumed run draws the same clicks
                        rng = np.random.default_rng([config.seed, step, micro % config.accumulate, rank])
                        if rng.random() < config.correction_prob:
                            simulate_corrections(module, batch, rng, config.correction_rounds)
                    loss = batch_loss(model, batch, refine, coarse_weight, config.loss)
                scaled = loss / config.accumulate
                (scaler.scale(scaled) if scaler else scaled).backward()
            loss_sum += float(loss.detach()) / frame_pixels
            loss_count += 1
            if not last_micro:
                continue
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            now = time.perf_counter()
            mean_loss = loss_sum / max(1, loss_count)
            history["loss"].append([step, mean_loss])
            rate = (step - window_step) / max(now - window_start, 1e-9)
            emit(StepDone(step, total, epoch + 1, mean_loss, optimizer.param_groups[0]["lr"], rate,
                          (total - step) / rate if rate > 0 else None))
            loss_sum, loss_count = 0.0, 0
            if _any_rank(should_stop(), world, device):
                status = "cancelled"
                break
            mid_epoch = step % steps_per_epoch and step < total
            if config.val_every and step % config.val_every == 0 and mid_epoch and val_instances:
                miou = run_validation()
                history["val"].append([step, miou])
                emit(Validated(step, epoch + 1, miou))
                set_train_mode(module, freeze_bn)
            if config.checkpoint_every and step % config.checkpoint_every == 0 and mid_epoch:
                save(f"in progress: step {step} of {total}")
            if step >= total:
                break
        if status == "cancelled":
            break
        if step % steps_per_epoch == 0 or step >= total:
            epoch += 1
            if val_instances:
                miou = run_validation()
                if choose_blend and step >= total:
                    miou = keep_all_if_better(miou)
                history["val"].append([step, miou])
                emit(Validated(step, epoch, miou))
                set_train_mode(module, freeze_bn)
            save("complete" if step >= total else f"in progress: epoch {epoch} of {epochs}")
    if status == "cancelled":
        save(f"cancelled at step {step} of {total}")

    digests = [weights_digest(handed_out.model())]     # of what was saved; the same on every rank
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, digests[0])
        digests = gathered
    after = history["val"][-1][1] if history["val"] else None
    ended = TrainingEnded(status, str(out), module.arch, step, total, resumed_from, dataset.stats.objects,
                          dataset.stats.to_dict(), len(val_instances), val_before, after, history["val"],
                          history["loss"][-1][1] if history["loss"] else None,
                          round(seconds_before + time.perf_counter() - start, 1), world, digests,
                          handed_out.share, blend_scores, lr)
    emit(ended)
    return asdict(ended)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


