"""``IOGPredictor``: three clicks (and corrections) to a full-resolution mask. numpy in, numpy out.

    p = IOGPredictor("IOG_PASCAL_SBD.pth")
    res = p.predict(image, corners=((r0, c0), (r1, c1)), inside=(r, c))
    res.mask, res.probability, res.box, res.crop_box, res.timings

The keyword API makes a :class:`~napari_iog.prompt.Prompt` (validated clicks) and calls the
typed inner path, ``predict(image, prompt=...)``, which callers that validated already (the
annotation session, batch prediction) use directly. Precision and the fast path are
``models.precision``'s.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from . import geometry as G
from . import zoo
from .correction_maps import (
    FirstMasks,
    complete_inputs,
    correction_sizes,
    no_correction_maps,
    remember_first_masks,
    takes_correction_maps,
)
from .int8_calibration import calibration_inputs
from .models import IOGRefineNetwork, load_model, onnx_runtime, resolve_device
from .models.precision import PRECISIONS, FastPathCheck, autocast, choose_precision, fast_copy
from .preprocess import ImageLayout, image_layout, intensity_range, to_rgb255
from .prompt import ExtremePrompt, Prompt

DEFAULT_THRESHOLD = 0.5
DEXTR_THRESHOLD = 0.8
BACKENDS = ("auto", "torch", "onnxruntime")
#: the default for ``backend="auto"``; "torch" keeps every predictor on torch
BACKEND_ENV = "NAPARI_IOG_BACKEND"


class BlankImageWarning(UserWarning):
    """The image holds no contrast where the object should be."""


@dataclass
class Prediction:
    """One object's result. Full-size arrays are made on first access; the crop-sized ones
    (``crop_probability``, ``crop_mask`` at ``crop_box``) are what large images should use."""

    crop_probability: np.ndarray   # float32 0..1, shape (crop_box.height, crop_box.width)
    crop_box: G.Box                # the relaxed crop, inclusive, may reach outside the image
    box: G.Box                     # the clicked box (or the extreme points' box)
    image_shape: tuple[int, int]
    threshold: float
    clicks: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    #: keep only what the clicks say is the object (inside the box, the clicked pieces);
    #: False: the raw thresholded output of the published protocol
    postprocess: bool = True

    @cached_property
    def raw_crop_mask(self) -> np.ndarray:
        return self.crop_probability > self.threshold

    @cached_property
    def crop_mask(self) -> np.ndarray:
        if not self.postprocess or "inside" not in self.clicks:
            return self.raw_crop_mask
        return G.clean_mask(self.raw_crop_mask, self.crop_box, self.box, self.clicks["inside"],
                            self.clicks.get("positive", ()), self.clicks.get("negative", ()))

    @cached_property
    def probability(self) -> np.ndarray:
        """float32 0..1 of the image's height x width; 0 outside the crop."""
        return G.paste(self.crop_probability, self.crop_box, self.image_shape, np.float32)

    @cached_property
    def mask(self) -> np.ndarray:
        """bool of the image's height x width."""
        return G.paste(self.crop_mask, self.crop_box, self.image_shape, bool)

    @property
    def window(self) -> G.Box:
        """The part of ``crop_box`` inside the image."""
        return self.crop_box.clip(self.image_shape)

    def window_mask(self) -> np.ndarray:
        """``crop_mask`` restricted to :attr:`window`, to write into ``labels[window.slices()]``."""
        return self.crop_mask[self.window.slices_within(self.crop_box)]


@dataclass
class NetworkInput:
    """What the network is fed for one prompt."""

    x: torch.Tensor                 # [5, 512, 512]: RGB 0..255 and the two guidance maps
    clicks: torch.Tensor | None     # [2, 512, 512] click maps for refinement models
    prompt: Prompt
    cache_key: tuple | None         # refinement models: the object whose features may be reused
    read_s: float
    prepare_s: float


@dataclass
class _ImageReader:
    """One image as the network reads it: its layout and intensity range, decided once."""

    image: Any
    layout: ImageLayout
    value_range: tuple[float, float] | None

    @classmethod
    def of(cls, image, channels, contrast_limits) -> _ImageReader:
        layout = image_layout(image, channels)
        return cls(image, layout, intensity_range(image, layout, contrast_limits))

    @property
    def shape(self) -> tuple[int, int]:
        return self.layout.shape

    def crop_rgb(self, crop: G.Box) -> np.ndarray:
        """The crop as RGB 0..255, zero outside the image; only the crop is read."""
        window_data, window = G.read_crop(self.image, crop, self.layout.shape)
        rgb = to_rgb255(window_data, self.layout, self.value_range, lazy=not isinstance(self.image, np.ndarray))
        return G.pad_to_crop(rgb, window, crop)


class IOGPredictor:
    """Segment objects from IOG clicks with one network.

    Args:
        model: a zoo name (``napari-iog weights list``), a checkpoint path (the authors'
            file or ours) or a loaded network; None (the default) is the model that ships with
            the package (``zoo.DEFAULT_MODEL``).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        precision: ``"auto"`` uses bf16/fp16 autocast with channels_last where the hardware
            runs it fast (CUDA; CPUs with AMX or AVX512-BF16), after checking at warm-up that
            it gives the same mask as float32 on a test input; ``"float32"`` is exact; ``"int8"``
            (CPU, ONNX Runtime): the network quantized, its pass in ~0.6x the time.
        threshold: probability above which a pixel is the object (0.5; DEXTR uses 0.8).
        warmup: run one forward pass now so that the first click is not slow.
        postprocess: keep only the part of the mask inside the clicked box (widened by positive
            clicks outside it) and connected to an inside or positive click; False gives the
            raw output of the published protocol. ``predict(..., postprocess=...)`` overrides it.
        backend: ``"auto"`` (or the ``NAPARI_IOG_BACKEND`` environment variable): on a CPU,
            with ``precision="auto"`` resolving to float32 (no fast bf16 here, or a network that
            keeps float32), the warm-up also runs the network exported to ONNX Runtime (float32,
            ``pip install "napari-iog[fast]"``) and keeps whichever is faster here, if its mask
            agrees; ``"torch"``; ``"onnxruntime"`` (float32 on the CPU only).
            ``self.backend`` says which runs.
    """

    def __init__(self, model: Any = None, device: str | torch.device = "auto", precision: str = "auto",
                 threshold: float | None = None, warmup: bool = True, cache_size: int = 8,
                 postprocess: bool = True, backend: str | None = None):
        if model is None:
            model = zoo.DEFAULT_MODEL
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.device = resolve_device(device)
        if isinstance(model, (str, os.PathLike)):
            model = zoo.resolve(model)      # a zoo name or a path
        self.model: nn.Module = load_model(model, device=self.device)
        backend = _resolve_backend(backend, precision)
        self.arch: str = self.model.arch
        #: the model card of a network saved by napari-iog ({} for others)
        self.card: dict = dict(getattr(self.model, "card", None) or {})
        self.is_dextr = self.arch.startswith("dextr")
        self.is_refine = isinstance(self.model, IOGRefineNetwork)
        default = DEXTR_THRESHOLD if self.is_dextr else DEFAULT_THRESHOLD
        self.threshold = float(default if threshold is None else threshold)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        self.postprocess = bool(postprocess)
        self._features: OrderedDict[tuple, tuple] = OrderedDict()
        self._cache_size = cache_size
        self.takes_correction_maps = takes_correction_maps(self.model)
        self._first_masks = FirstMasks(2 * cache_size)
        self.precision = choose_precision(precision, self.device, getattr(self.model, "bf16_on_cpu", True))
        self.backend = "torch"
        self.network = exact_model = self.model     # as loaded: what learning starts from
        self._fast = precision != "float32"
        if self._fast:
            self.model = fast_copy(self.model)
        if backend == "onnxruntime":
            _check_onnx_runtime_fits(self._onnx_runtime_fits(), self.is_refine, self.device, precision)
        x = warmup_input(self.is_dextr, self.takes_correction_maps)
        exact = self._warmup(x, exact_model if precision == "auto" else None) if warmup else None
        # ONNX Runtime runs float32; where bf16 was kept it is not tried (ResNet-101 on Zen 4: 0.68 s
        # against bf16's 0.40 s), which spares those CPUs the export.
        tried = backend == "auto" and exact is not None and self.precision == "float32" and self._onnx_runtime_fits()
        if backend == "onnxruntime" or tried:
            self._try_onnx_runtime(x, exact_model, exact, forced=backend == "onnxruntime")

    def _warmup(self, x: torch.Tensor, exact_model: nn.Module | None) -> torch.Tensor | None:
        """One forward pass on the warm-up object. With ``exact_model``, compare the fast path
        with the exact float32 network on it and fall back to the exact network if the mask
        changes (``models.precision.FastPathCheck``); returns the exact network's probability."""
        fast = torch.sigmoid(self._forward(x))
        if exact_model is None:
            return None
        with torch.inference_mode():
            exact = torch.sigmoid(exact_model(x.to(self.device)).float()).cpu()
        check = FastPathCheck.compare(self.precision, fast.cpu(), exact)
        self.warmup_check = check.to_dict()
        if not check.kept:
            self.model, self.precision, self._fast = exact_model, "float32", False
        return exact

    # --- the ONNX Runtime backend ----------------------------------------------------------------

    def _onnx_runtime_fits(self) -> bool:
        """One network call per click, on the CPU (refinement models split theirs in two)."""
        return self.device.type == "cpu" and not self.is_refine

    def _try_onnx_runtime(self, x: torch.Tensor, exact_model: nn.Module, exact: torch.Tensor | None,
                          forced: bool) -> None:
        """Export (or load the cached export) and, unless ``forced``, keep it only if its mask
        agrees with ``exact`` (the exact network's probability on the warm-up object) and it is
        faster than the torch path here (both timed after a warm call; the torch path had its
        in the warm-up). Why it was or was not chosen goes to ``warmup_check["onnxruntime"]``."""
        report: dict[str, Any] = {}
        try:
            folded = self.model if self._fast else fast_copy(exact_model)     # the torch fast path's copy
            int8 = self.precision == "int8"
            network = onnx_runtime.onnx_runtime_network(folded, x, zoo.cache_dir(),
                                                        int8_inputs=calibration_inputs if int8 else None)
            if exact is not None:
                torch_s, _ = _timed(lambda: self._forward(x))
                network(x)
                ort_s, ort_logits = _timed(lambda: network(x))
                agreement = FastPathCheck.compare("float32", torch.sigmoid(ort_logits), exact)
                report = {"torch_s": torch_s, "onnxruntime_s": ort_s, "iou": agreement.iou,
                          "mean_abs_dp": agreement.mean_abs_dp,
                          "kept": forced or (agreement.kept and ort_s < torch_s)}
        except Exception as err:     # not installed, not exportable, or failing to run: torch it is
            if forced:
                raise
            reason = str(err) if isinstance(err, onnx_runtime.BackendUnavailable) else f"{type(err).__name__}: {err}"
            report = {"kept": False, "reason": reason}
        else:
            if forced or report["kept"]:
                self.model, self._fast, self.backend = network, False, "onnxruntime"
                self.precision = "int8" if int8 else "float32"
        if report:
            self.warmup_check = {**getattr(self, "warmup_check", {}), "onnxruntime": report}

    # --- network calls -----------------------------------------------------------------------

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self._fast else x

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor, clicks: torch.Tensor | None = None, **sizes) -> torch.Tensor:
        with autocast(self.precision, self.device):
            x = self._to_device(x)
            out = self.model(x, **sizes) if clicks is None else self.model(x, self._to_device(clicks))
        return out.float()

    @torch.inference_mode()
    def _encode(self, x: torch.Tensor):
        """An object's click-independent part of a refinement network: the backbone features
        and the decoder's maps of them."""
        with autocast(self.precision, self.device):
            features = self.model.encode(self._to_device(x))
            return features, self.model.side_maps(features)

    @torch.inference_mode()
    def _decode(self, encoded, clicks: torch.Tensor) -> torch.Tensor:
        features, side = encoded
        with autocast(self.precision, self.device):
            return self.model.decode(features, self._to_device(clicks), side=side).float()

    # --- public API ---------------------------------------------------------------------------

    def predict(self, image, corners: Sequence[Sequence[float]] | None = None, inside=None, positive=(),
                negative=(), *, prompt: Prompt | None = None, threshold: float | None = None,
                channels: Sequence[int] | None = None, contrast_limits: Sequence[float] | None = None,
                postprocess: bool | None = None) -> Prediction:
        """Segment the object in the box spanned by ``corners`` with the ``inside`` click(s).

        ``positive``/``negative`` are correction clicks. All points are (row, col) in the
        image's pixel coordinates. A click that cannot be used raises a
        :class:`~napari_iog.geometry.ClickError` (a ``ValueError``) naming it. ``prompt``: a
        :class:`~napari_iog.prompt.Prompt` checked already, instead of the clicks.
        """
        reader = _ImageReader.of(image, channels, contrast_limits)
        if prompt is None:
            if corners is None or inside is None:
                raise G.ClickError("a prompt needs two corner clicks and at least one inside click")
            prompt = Prompt.check(reader.shape, corners, inside, positive, negative)
        return self._predict_many(reader, [prompt.on(reader.shape)], None, threshold, postprocess,
                                  use_cache=True)[0]

    def predict_batch(self, image, prompts: Sequence[Prompt | Mapping[str, Any]], *, batch_size: int | None = None,
                      threshold: float | None = None, channels: Sequence[int] | None = None,
                      contrast_limits: Sequence[float] | None = None,
                      postprocess: bool | None = None) -> list[Prediction]:
        """Segment many objects of one image in batched forward passes.

        Each prompt is a :class:`~napari_iog.prompt.Prompt` or a mapping with ``corners`` and
        ``inside`` (and optionally ``positive``, ``negative``). Every prompt is checked before
        any network work starts.
        """
        reader = _ImageReader.of(image, channels, contrast_limits)
        checked = [p.on(reader.shape) if isinstance(p, Prompt) else Prompt.from_mapping(reader.shape, p)
                   for p in prompts]
        return self._predict_many(reader, checked, batch_size, threshold, postprocess, use_cache=False)

    def _predict_many(self, reader: _ImageReader, prompts: Sequence[Prompt], batch_size: int | None,
                      threshold: float | None, postprocess: bool | None, use_cache: bool) -> list[Prediction]:
        """``use_cache``: refinement models reuse an object's backbone features across clicks."""
        if self.is_dextr:
            raise ValueError(f"{self.arch} takes four extreme points: use predict_extreme")
        start = time.perf_counter()
        threshold = self.threshold if threshold is None else float(threshold)
        postprocess = self.postprocess if postprocess is None else bool(postprocess)
        inputs = [self._prepare(reader, prompt) for prompt in prompts]
        for item in inputs:
            if float(item.x[:3].amax() - item.x[:3].amin()) == 0:
                box = item.prompt.box
                warnings.warn(f"the image is blank (one value everywhere) in the box rows {box.r0}..{box.r1}, "
                              f"cols {box.c0}..{box.c1}: there is nothing to segment, the mask only "
                              "follows the clicks", BlankImageWarning, stacklevel=3)
        if batch_size is None:   # ONNX Runtime on a CPU: batches of 2 were slower than single objects
            batch_size = 16 if self.device.type == "cuda" else 1 if self.backend == "onnxruntime" else 2
        if self.takes_correction_maps:
            complete_inputs(inputs, self._first_masks, self._forward, batch_size)
        t_prepared = time.perf_counter()
        logits: list[torch.Tensor] = []
        for i in range(0, len(inputs), batch_size):
            chunk = inputs[i:i + batch_size]
            if use_cache and self.is_refine and len(chunk) == 1:
                logits.append(self._refine_with_cache(chunk[0]))
                continue
            x = _batch([item.x for item in chunk])
            clicks = _batch([item.clicks for item in chunk]) if self.is_refine else None
            logits.extend(self._forward(x, clicks, **correction_sizes(self.network, [i.prompt.crop for i in chunk])))
        if self.takes_correction_maps:
            remember_first_masks(inputs, logits, self._first_masks)
        t_forward = time.perf_counter()
        results = [Prediction(self._to_crop(logit, item.prompt.crop), item.prompt.crop, item.prompt.box,
                              reader.shape, threshold, item.prompt.clicks(), postprocess=postprocess)
                   for item, logit in zip(inputs, logits)]
        t_end = time.perf_counter()
        n = max(len(inputs), 1)
        for result, item in zip(results, inputs):
            result.timings = {"read": item.read_s, "prepare": item.prepare_s, "forward": (t_forward - t_prepared) / n,
                              "paste": (t_end - t_forward) / n, "total": (t_end - start) / n}
        return results

    def predict_extreme(self, image, points: Sequence[Sequence[float]] | None = None, *,
                        prompt: ExtremePrompt | None = None, threshold: float | None = None,
                        channels: Sequence[int] | None = None,
                        contrast_limits: Sequence[float] | None = None) -> Prediction:
        """DEXTR: segment from the object's four extreme points (left, right, top, bottom in any
        order), with the published DEXTR protocol (crop relaxed by 50 px, bicubic resize, one
        map of the four points, threshold 0.8, background outside the points' box)."""
        if not self.is_dextr:
            raise ValueError(f"{self.arch} is an IOG model: use predict(corners=..., inside=...)")
        start = time.perf_counter()
        reader = _ImageReader.of(image, channels, contrast_limits)
        prompt = (ExtremePrompt.check(reader.shape, points) if prompt is None else prompt).on(reader.shape)
        crop, box = prompt.crop, prompt.box
        rgb = reader.crop_rgb(crop)
        x_img = G.resize_bicubic(torch.from_numpy(rgb).permute(2, 0, 1)[None], (G.FRAME, G.FRAME))[0]
        heat = G.scale_to_255(G.gaussian_map(G.to_frame_truncating(np.array(prompt.points, np.float64), crop)))
        x = torch.cat([x_img, torch.from_numpy(heat)[None]])[None]
        t_prepared = time.perf_counter()
        logit = self._forward(x)[0]
        t_forward = time.perf_counter()
        prob = self._to_crop(logit, crop)
        inner = np.zeros_like(prob)
        inner[box.slices_within(crop)] = 1
        prob *= inner
        threshold = self.threshold if threshold is None else float(threshold)
        t_end = time.perf_counter()
        return Prediction(prob, crop, box, reader.shape, threshold, prompt.clicks(),
                          {"prepare": t_prepared - start, "forward": t_forward - t_prepared,
                           "paste": t_end - t_forward, "total": t_end - start})

    def network_input(self, image, corners, inside, positive=(), negative=(), *,
                      channels: Sequence[int] | None = None,
                      contrast_limits: Sequence[float] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None, G.Box]:
        """What the network is fed for these clicks: the 5-channel input ``[5, 512, 512]``, the
        click maps ``[2, 512, 512]`` for refinement models (else None), and the crop box."""
        reader = _ImageReader.of(image, channels, contrast_limits)
        item = self._prepare(reader, Prompt.check(reader.shape, corners, inside, positive, negative))
        return item.x, item.clicks, item.prompt.crop

    def clear_cache(self) -> None:
        """Forget the cached backbone features (refinement models) and first masks."""
        self._features.clear()
        self._first_masks.clear()

    # --- steps ---------------------------------------------------------------------------------

    def _prepare(self, reader: _ImageReader, prompt: Prompt) -> NetworkInput:
        t0 = time.perf_counter()
        rgb = reader.crop_rgb(prompt.crop)
        t1 = time.perf_counter()
        x, clicks = G.frame_input(rgb, prompt.crop, prompt.box, prompt.inside, prompt.positive, prompt.negative,
                                  refine=self.is_refine)
        key = None
        if self.is_refine or self.takes_correction_maps:
            digest = hashlib.blake2b(rgb.tobytes(), digest_size=16).hexdigest()
            key = (digest, prompt.box.as_tuple(), prompt.inside)
        return NetworkInput(x, clicks, prompt, key, t1 - t0, time.perf_counter() - t1)

    def _refine_with_cache(self, item: NetworkInput) -> torch.Tensor:
        features = self._features.get(item.cache_key)
        if features is None:
            features = self._encode(item.x[None])
            self._features[item.cache_key] = features
            while len(self._features) > self._cache_size:
                self._features.popitem(last=False)
        else:
            self._features.move_to_end(item.cache_key)
        return self._decode(features, item.clicks[None])[0]

    def _to_crop(self, logit: torch.Tensor, crop: G.Box) -> np.ndarray:
        """Fine logits (1, 512, 512) -> sigmoid -> bicubic to the crop's size, clipped to 0..1."""
        prob = torch.sigmoid(logit.float())[None]
        prob = G.resize_bicubic(prob, (crop.height, crop.width))[0, 0]
        return prob.clamp_(0, 1).cpu().numpy()


def _check_onnx_runtime_fits(fits: bool, is_refine: bool, device: torch.device, precision: str) -> None:
    if not fits:
        what = "a refinement model" if is_refine else f"the {device.type} device"
        raise ValueError(f"the onnxruntime backend runs single-pass models on the CPU, not {what}")
    if precision not in ("auto", "float32", "int8"):
        raise ValueError(f"the onnxruntime backend runs float32 or int8, not precision={precision!r}")


def _resolve_backend(backend: str | None, precision: str) -> str:
    if precision == "int8" and backend in (None, "auto", "onnxruntime"):
        return "onnxruntime"
    backend = backend or os.environ.get(BACKEND_ENV) or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if precision == "int8":
        raise ValueError(f"precision 'int8' runs on ONNX Runtime, not on backend {backend!r}")
    return backend


def read_crop_rgb(image, crop: G.Box, channels: Sequence[int] | None = None,
                  contrast_limits: Sequence[float] | None = None) -> np.ndarray:
    """``crop`` of a 2D image as RGB 0..255, the way the predictor reads it (zero outside)."""
    return _ImageReader.of(image, channels, contrast_limits).crop_rgb(crop)


def is_predictor(model) -> bool:
    """A ready predictor, local or remote (anything with the predictor's interface)."""
    return hasattr(model, "predict") and hasattr(model, "predict_batch")


def warmup_input(extreme_points: bool = False, correction_maps: bool = False) -> torch.Tensor:
    """The warm-up object: a synthetic disc in the 512 frame with its clicks (IOG's box and inside click,
    or DEXTR's four extreme points), as the network's [1, C, 512, 512] input (empty correction maps too)."""
    yy, xx = np.mgrid[:G.FRAME, :G.FRAME]
    disc = ((yy - 256) ** 2 + (xx - 240) ** 2 < 150**2).astype(np.float32)
    rgb = np.stack([60 + 150 * disc, 80 + 100 * disc, 200 - 120 * disc])
    if extreme_points:
        maps = 255 * G.gaussian_map(np.array([[106, 240], [406, 240], [256, 90], [256, 390]]))[None]
    else:
        maps = G.guidance_maps(np.array([[256, 240]]), np.array([[96, 80], [96, 400], [416, 80], [416, 400]]))
    x = torch.from_numpy(np.concatenate([rgb, maps])[None].astype(np.float32))
    return torch.cat([x, no_correction_maps(1)], 1) if correction_maps else x


#: The clock that times the backends against each other at warm-up (tests put in one of
#: their own, so that which backend wins never depends on how busy the machine is).
warmup_clock: Callable[[], float] = time.perf_counter


def _timed(call) -> tuple[float, Any]:
    start, result = warmup_clock(), call()
    return warmup_clock() - start, result


def _batch(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stacked; one tensor is only viewed as a batch (a 5 MB copy saved per click)."""
    return tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)
