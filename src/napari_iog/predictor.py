"""``IOGPredictor``: three clicks (and corrections) to a full-resolution mask. numpy in, numpy out.

    p = IOGPredictor("IOG_PASCAL_SBD.pth")
    res = p.predict(image, corners=((r0, c0), (r1, c1)), inside=(r, c))
    res.mask, res.probability, res.box, res.crop_box, res.timings
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from . import guidance as G
from . import zoo
from .models import IOGRefineNetwork, load_model, resolve_device
from .models.fusion import fuse_conv_bn
from .preprocess import ImageLayout, image_layout, intensity_range, to_rgb255

DEFAULT_THRESHOLD = 0.5


class BlankImageWarning(UserWarning):
    """The image holds no contrast where the object should be."""

DEXTR_THRESHOLD = 0.8
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


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
                            self.clicks.get("positive", ()))

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


def _points(value, what: str) -> list[Sequence[float]]:
    """One (row, col) or a list of them -> a list."""
    if value is None:
        return []
    arr = np.asarray(value, dtype=object)
    if arr.ndim == 1 and len(arr) == 2 and not isinstance(arr[0], (list, tuple, np.ndarray)):
        return [tuple(value)]
    try:
        return [tuple(p) for p in value]
    except TypeError as err:
        raise G.ClickError(f"{what} must be a (row, col) pair or a list of them, got {value!r}") from err


def _cpu_has_fast_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


class IOGPredictor:
    """Segment objects from IOG clicks with one network.

    Args:
        model: a zoo name (``napari-iog weights list``), a checkpoint path (the authors'
            file or ours) or a loaded network; None (the default) is the model that ships with
            the package (``zoo.DEFAULT_MODEL``).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        precision: ``"auto"`` uses bf16/fp16 autocast with channels_last where the hardware
            runs it fast (CUDA; CPUs with AMX or AVX512-BF16), after checking at warm-up that
            it gives the same mask as float32 on a test input; ``"float32"`` is exact.
        threshold: probability above which a pixel is the object (0.5; DEXTR uses 0.8).
        warmup: run one forward pass now so that the first click is not slow.
        postprocess: keep only the part of the mask inside the clicked box (widened by positive
            clicks outside it) and connected to an inside or positive click; False gives the
            raw output of the published protocol. ``predict(..., postprocess=...)`` overrides it.
    """

    def __init__(self, model: Any = None, device: str | torch.device = "auto", precision: str = "auto",
                 threshold: float | None = None, warmup: bool = True, cache_size: int = 8,
                 postprocess: bool = True):
        if model is None:
            model = zoo.DEFAULT_MODEL
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.device = resolve_device(device)
        if isinstance(model, (str, os.PathLike)):
            model = zoo.resolve(model)      # a zoo name or a path
        self.model: nn.Module = load_model(model, device=self.device)
        self.arch: str = self.model.arch
        self.is_dextr = self.arch.startswith("dextr")
        self.is_refine = isinstance(self.model, IOGRefineNetwork)
        default = DEXTR_THRESHOLD if self.is_dextr else DEFAULT_THRESHOLD
        self.threshold = float(default if threshold is None else threshold)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        self.postprocess = bool(postprocess)
        self._features: OrderedDict[tuple, tuple] = OrderedDict()
        self._cache_size = cache_size
        self.precision = self._choose_precision(precision)
        exact_model = self.model
        if precision != "float32":
            # The fast path: BN folded into the convolutions (a copy: the caller's module is
            # left as it is) and channels_last, which oneDNN and cuDNN run fastest.
            self.model = fuse_conv_bn(self.model).to(memory_format=torch.channels_last)
        self._fast = precision != "float32"
        if warmup:
            self._warmup(exact_model if precision == "auto" else None)

    # --- precision -------------------------------------------------------------------------

    def _choose_precision(self, precision: str) -> str:
        if precision != "auto":
            return precision
        if self.device.type == "cuda":
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if self.device.type == "cpu" and _cpu_has_fast_bf16():
            return "bfloat16"
        return "float32"

    def _autocast(self):
        if self.precision == "float32":
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.bfloat16 if self.precision == "bfloat16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _warmup(self, exact_model: nn.Module | None) -> None:
        """One forward pass on a synthetic object (a disc). With ``exact_model``, compare the
        fast path with the exact float32 network on it and fall back to the exact network if
        the mask changes (IoU < 0.98 or mean |dp| > 0.02)."""
        size = G.FRAME
        yy, xx = np.mgrid[:size, :size]
        disc = ((yy - 256) ** 2 + (xx - 240) ** 2 < 150**2).astype(np.float32)
        rgb = np.stack([60 + 150 * disc, 80 + 100 * disc, 200 - 120 * disc])
        if self.is_dextr:
            maps = 255 * G.gaussian_map(np.array([[106, 240], [406, 240], [256, 90], [256, 390]]))[None]
        else:
            maps = G.guidance_maps(np.array([[256, 240]]),
                                   np.array([[96, 80], [96, 400], [416, 80], [416, 400]]))
        x = torch.from_numpy(np.concatenate([rgb, maps])[None].astype(np.float32))
        fast = torch.sigmoid(self._forward(x))
        if exact_model is None:
            return
        with torch.inference_mode():
            exact = torch.sigmoid(exact_model(x.to(self.device)).float())
        a, b = fast > 0.5, exact > 0.5
        union = int((a | b).sum())
        iou = 1.0 if union == 0 else int((a & b).sum()) / union
        mean_dp = float((fast - exact).abs().mean())
        kept = iou >= 0.98 and mean_dp <= 0.02
        self.warmup_check = {"precision": self.precision, "iou": iou, "mean_abs_dp": mean_dp, "kept": kept}
        if not kept:
            self.model, self.precision, self._fast = exact_model, "float32", False

    # --- network calls -----------------------------------------------------------------------

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self._fast else x

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor, clicks: torch.Tensor | None = None) -> torch.Tensor:
        with self._autocast():
            x = self._to_device(x)
            if clicks is not None:
                out = self.model(x, self._to_device(clicks))
            else:
                out = self.model(x)
        return out.float()

    @torch.inference_mode()
    def _encode(self, x: torch.Tensor):
        with self._autocast():
            return self.model.encode(self._to_device(x))

    @torch.inference_mode()
    def _decode(self, features, clicks: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.model.decode(features, self._to_device(clicks)).float()

    # --- public API ---------------------------------------------------------------------------

    def predict(self, image, corners: Sequence[Sequence[float]], inside, positive=(), negative=(),
                *, threshold: float | None = None, channels: Sequence[int] | None = None,
                contrast_limits: Sequence[float] | None = None, postprocess: bool | None = None) -> Prediction:
        """Segment the object in the box spanned by ``corners`` with the ``inside`` click(s).

        ``positive``/``negative`` are correction clicks. All points are (row, col) in the
        image's pixel coordinates. A click that cannot be used raises a
        :class:`~napari_iog.guidance.ClickError` (a ``ValueError``) naming it.
        """
        prompt = dict(corners=corners, inside=inside, positive=positive, negative=negative)
        return self._predict_many(image, [prompt], None, threshold, channels, contrast_limits,
                                  use_cache=True, postprocess=postprocess)[0]

    def predict_batch(self, image, prompts: Sequence[Mapping[str, Any]], *, batch_size: int | None = None,
                      threshold: float | None = None, channels: Sequence[int] | None = None,
                      contrast_limits: Sequence[float] | None = None,
                      postprocess: bool | None = None) -> list[Prediction]:
        """Segment many objects of one image in batched forward passes.

        Each prompt is a mapping with ``corners`` and ``inside`` (and optionally ``positive``,
        ``negative``). Every prompt is checked before any network work starts.
        """
        return self._predict_many(image, prompts, batch_size, threshold, channels, contrast_limits,
                                  use_cache=False, postprocess=postprocess)

    def _predict_many(self, image, prompts, batch_size, threshold, channels, contrast_limits,
                      use_cache: bool, postprocess: bool | None = None) -> list[Prediction]:
        """``use_cache``: refinement models reuse an object's backbone features across clicks."""
        if self.is_dextr:
            raise ValueError(f"{self.arch} takes four extreme points: use predict_extreme")
        start = time.perf_counter()
        layout = image_layout(image, channels)
        value_range = intensity_range(image, layout, contrast_limits)
        threshold = self.threshold if threshold is None else float(threshold)
        jobs = [self.check_prompt(layout.shape, p) for p in prompts]
        prepared = [self._prepare(image, layout, value_range, job) for job in jobs]
        for p in prepared:
            if float(p["x"][:3].amax() - p["x"][:3].amin()) == 0:
                warnings.warn(f"the image is blank (one value everywhere) in the box rows {p['box'].r0}..{p['box'].r1}, "
                              f"cols {p['box'].c0}..{p['box'].c1}: there is nothing to segment, the mask only "
                              "follows the clicks", BlankImageWarning, stacklevel=3)
        t_prepared = time.perf_counter()
        if batch_size is None:
            batch_size = 16 if self.device.type == "cuda" else 2
        logits: list[torch.Tensor] = []
        for i in range(0, len(prepared), batch_size):
            chunk = prepared[i:i + batch_size]
            if use_cache and self.is_refine and len(chunk) == 1:
                logits.append(self._refine_with_cache(chunk[0]))
                continue
            x = torch.stack([p["x"] for p in chunk])
            clicks = torch.stack([p["clicks"] for p in chunk]) if self.is_refine else None
            logits.extend(self._forward(x, clicks))
        t_forward = time.perf_counter()
        results = []
        for p, logit in zip(prepared, logits):
            crop_probability = self._to_crop(logit, p["crop"])
            results.append(Prediction(crop_probability, p["crop"], p["box"], layout.shape, threshold,
                                      p["clicks_used"],
                                      postprocess=self.postprocess if postprocess is None else bool(postprocess)))
        t_end = time.perf_counter()
        n = max(len(prepared), 1)
        for r, p in zip(results, prepared):
            r.timings = {"read": p["t_read"], "prepare": p["t_prepare"],
                         "forward": (t_forward - t_prepared) / n,
                         "paste": (t_end - t_forward) / n, "total": (t_end - start) / n}
        return results

    def predict_extreme(self, image, points: Sequence[Sequence[float]], *, threshold: float | None = None,
                        channels: Sequence[int] | None = None,
                        contrast_limits: Sequence[float] | None = None) -> Prediction:
        """DEXTR: segment from the object's four extreme points (left, right, top, bottom in any
        order), with the published DEXTR protocol (crop relaxed by 50 px, bicubic resize, one
        map of the four points, threshold 0.8, background outside the points' box)."""
        if not self.is_dextr:
            raise ValueError(f"{self.arch} is an IOG model: use predict(corners=..., inside=...)")
        start = time.perf_counter()
        layout = image_layout(image, channels)
        value_range = intensity_range(image, layout, contrast_limits)
        pixels, box = self.check_extreme(layout.shape, points)
        crop = box.grow(G.DEXTR_RELAX)
        rgb = self._read(image, layout, value_range, crop)
        x_img = G.resize_bicubic(torch.from_numpy(rgb).permute(2, 0, 1)[None], (G.FRAME, G.FRAME))[0]
        heat = G.scale_to_255(G.gaussian_map(G.to_frame_truncating(pixels, crop)))
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
        return Prediction(prob, crop, box, layout.shape, threshold, {"extreme": pixels.tolist()},
                          {"prepare": t_prepared - start, "forward": t_forward - t_prepared,
                           "paste": t_end - t_forward, "total": t_end - start})

    def network_input(self, image, corners, inside, positive=(), negative=(), *,
                      channels: Sequence[int] | None = None,
                      contrast_limits: Sequence[float] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None, G.Box]:
        """What the network is fed for these clicks: the 5-channel input ``[5, 512, 512]``, the
        click maps ``[2, 512, 512]`` for refinement models (else None), and the crop box."""
        layout = image_layout(image, channels)
        value_range = intensity_range(image, layout, contrast_limits)
        job = self.check_prompt(layout.shape, dict(corners=corners, inside=inside, positive=positive,
                                                   negative=negative))
        p = self._prepare(image, layout, value_range, job)
        return p["x"], p["clicks"], p["crop"]

    def clear_cache(self) -> None:
        """Forget the cached backbone features (refinement models)."""
        self._features.clear()

    # --- checking clicks (no network) ---------------------------------------------------------

    @staticmethod
    def check_extreme(image_shape: Sequence[int], points) -> tuple[np.ndarray, G.Box]:
        """The four extreme points as pixels and their box; a ClickError when they cannot be used."""
        pts = _points(points, "extreme points")
        if len(pts) != 4:
            raise G.ClickError(f"DEXTR needs exactly four extreme points, got {len(pts)}")
        pixels = np.array([G.pixel(p, image_shape, "extreme point") for p in pts], dtype=np.float64)
        return pixels, G.box_from_points(pixels, image_shape, "extreme point")

    @staticmethod
    def check_prompt(image_shape: Sequence[int], prompt: Mapping[str, Any]) -> dict[str, Any]:
        """Check one prompt's clicks against an image of ``image_shape`` (rows, cols) without
        running the network: a :class:`~napari_iog.guidance.ClickError` names the bad click."""
        shape = tuple(image_shape[:2])
        unknown = set(prompt) - {"corners", "inside", "positive", "negative"}
        if unknown:
            raise ValueError(f"unknown prompt entries {sorted(unknown)}: use corners, inside, positive, negative")
        if "corners" not in prompt or "inside" not in prompt:
            raise G.ClickError("a prompt needs two corner clicks and at least one inside click")
        box = G.box_from_corners(_points(prompt["corners"], "corners"), shape)
        crop = box.grow(G.RELAX)
        inside = [G.pixel(p, shape, "inside click") for p in _points(prompt["inside"], "inside")]
        if not inside:
            raise G.ClickError("at least one inside click is needed")
        for p in inside:
            if not box.contains(p):
                raise G.ClickError(f"the inside click at (row {p[0]}, col {p[1]}) is outside the box "
                                   f"rows {box.r0}..{box.r1}, cols {box.c0}..{box.c1}")
        corrections = {}
        for role in ("positive", "negative"):
            pts = [G.pixel(p, shape, f"{role} click") for p in _points(prompt.get(role), role)]
            for p in pts:
                if not crop.contains(p):
                    raise G.ClickError(
                        f"the {role} click at (row {p[0]}, col {p[1]}) is outside the region the network "
                        f"sees (the box grown by {G.RELAX} px); draw a larger box instead")
            corrections[role] = pts
        return {"box": box, "crop": crop, "inside": inside, **corrections}

    # --- steps ---------------------------------------------------------------------------------

    def _read(self, image, layout: ImageLayout, value_range, crop: G.Box) -> np.ndarray:
        window_data, window = G.read_crop(image, crop, layout.shape)
        rgb = to_rgb255(window_data, layout, value_range, lazy=not isinstance(image, np.ndarray))
        return G.pad_to_crop(rgb, window, crop)

    def _prepare(self, image, layout: ImageLayout, value_range, job: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        crop, box = job["crop"], job["box"]
        rgb = self._read(image, layout, value_range, crop)
        t1 = time.perf_counter()
        x, clicks_t = G.frame_input(rgb, crop, box, job["inside"], job["positive"], job["negative"],
                                    refine=self.is_refine)
        key = None
        if self.is_refine:
            digest = hashlib.blake2b(rgb.tobytes(), digest_size=16).hexdigest()
            key = (digest, box.as_tuple(), tuple(map(tuple, job["inside"])))
        return {"x": x, "clicks": clicks_t, "crop": crop, "box": box, "cache_key": key,
                "clicks_used": {"corners": [(box.r0, box.c0), (box.r1, box.c1)], "inside": job["inside"],
                                "positive": job["positive"], "negative": job["negative"]},
                "t_read": t1 - t0, "t_prepare": time.perf_counter() - t1}

    def _refine_with_cache(self, p: dict[str, Any]) -> torch.Tensor:
        key = p["cache_key"]
        features = self._features.get(key)
        if features is None:
            features = self._encode(p["x"][None])
            self._features[key] = features
            while len(self._features) > self._cache_size:
                self._features.popitem(last=False)
        else:
            self._features.move_to_end(key)
        return self._decode(features, p["clicks"][None])[0]

    def _to_crop(self, logit: torch.Tensor, crop: G.Box) -> np.ndarray:
        """Fine logits (1, 512, 512) -> sigmoid -> bicubic to the crop's size, clipped to 0..1."""
        prob = torch.sigmoid(logit.float())[None]
        prob = G.resize_bicubic(prob, (crop.height, crop.width))[0, 0]
        return prob.clamp_(0, 1).cpu().numpy()
