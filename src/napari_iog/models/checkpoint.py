"""Reading and writing checkpoints.

Two formats are read:

* the authors' files: a plain state_dict (``IOG_PASCAL_SBD.pth``, ``dextr_pascal-sbd.pth``
  ...), possibly with a ``module.`` prefix (DataParallel copies) and without
  ``num_batches_tracked`` (old PyTorch); the architecture is detected from the keys;
* the project's own: one dict with ``arch``, ``config``, ``state_dict`` and ``card``.

Files are only ever read with ``torch.load(..., weights_only=True)``: a pickle that would
construct arbitrary objects (and so could run code) is refused.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io.atomic import atomic_write
from .devices import resolve_device
from .iog import IOGConfig, arch_name
from .mobilenet import MobileIOGConfig
from .registry import ARCHITECTURES, UnknownArchitectureError, build_model, model_arch, model_config
from .resnet import TRUNK_LAYOUTS

OWN_FORMAT_KEYS = ("arch", "config", "state_dict", "card")
#: a training run writes OUT and, to resume from, OUT + this
STATE_SUFFIX = ".state.pt"


def state_path(out: str | os.PathLike) -> Path:
    """The resume state written beside the checkpoint ``out``."""
    out = Path(out)
    return out.with_name(out.name + STATE_SUFFIX)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: not a checkpoint, corrupt, unsafe, or mismatched."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``path`` safely and return ``{"arch", "config", "state_dict", "card"}``.

    For an official state_dict the architecture and config are detected from its keys and
    the card says where it came from.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for bad files
        text = str(err)
        # weights_only refuses a pickle that names Python globals ("Unsupported global");
        # other weights_only failures ("Unsupported operand") mean the bytes are no pickle.
        if "Unsupported global" in text:
            raise CheckpointError(
                f"refused to load {path}: it holds Python objects other than tensors and plain "
                "containers, and unpickling it could run arbitrary code. napari-iog reads only "
                "state_dicts and its own checkpoint format.") from err
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint: it is corrupt, truncated, or another kind "
            f"of file (torch said {type(err).__name__}: {text.splitlines()[0] if text else 'nothing'})") from err

    if isinstance(obj, Mapping) and set(OWN_FORMAT_KEYS) <= set(obj):
        arch = obj["arch"]
        if arch not in ARCHITECTURES:
            raise CheckpointError(
                f"{path}: unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
        state_dict = _tensor_dict(obj["state_dict"], path)
        config = dict(obj["config"] or {})
        return {"arch": arch, "config": config, "state_dict": state_dict,
                "card": dict(obj["card"] or {})}

    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # training scripts often wrap the state_dict
    state_dict = _tensor_dict(obj, path)
    state_dict = normalise_state_dict(state_dict)
    arch, config = detect_architecture(state_dict, path)
    card = {"source": path.name, "format": "official state_dict"}
    return {"arch": arch, "config": config, "state_dict": state_dict, "card": card}


def _tensor_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} does not contain a state_dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path} is not a state_dict: entry {bad[0]!r} is not a named tensor")
    return dict(obj)


def normalise_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip a ``module.`` prefix that DataParallel/DistributedDataParallel copies carry."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str, layer: int) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}layer{layer}\.(\d+)\.")
    indices = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


def detect_architecture(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike = "state_dict"
                        ) -> tuple[str, dict[str, Any]]:
    """Name the architecture (and its config) that a state_dict belongs to."""
    if "backbone.conv1.weight" in state_dict and "psp4.bottleneck.0.weight" in state_dict:
        kind = "bottleneck" if "backbone.layer1.0.conv3.weight" in state_dict else "basic"
        blocks = tuple(_count_blocks(state_dict, "backbone.", i) for i in (1, 2, 3, 4))
        trunk = next((n for n, layout in TRUNK_LAYOUTS.items() if layout == (kind, blocks)), None)
        if trunk is None:
            raise UnknownArchitectureError(
                f"{path}: an IOG network with an unknown trunk ({kind} blocks {blocks})")
        refine = "iog_points.0.weight" in state_dict
        config = IOGConfig(
            trunk=trunk,
            in_channels=int(state_dict["backbone.conv1.weight"].shape[1]),
            psp_channels=int(state_dict["psp4.bottleneck.0.weight"].shape[0]),
            head_channels=int(state_dict["Coarse_net.laterals.0.0.weight"].shape[0])
            if "Coarse_net.laterals.0.0.weight" in state_dict else 256,
            refine=refine,
            click_channels=int(state_dict["iog_points.12.weight"].shape[0])
            if "iog_points.12.weight" in state_dict else 64,
        )
        return arch_name(config), config.to_dict()
    if "backbone.features.0.0.weight" in state_dict and "psp4.bottleneck.0.weight" in state_dict:
        # input_size is not in the weights: a bare state_dict runs at the default
        return "iog-mobilenetv2", MobileIOGConfig(
            in_channels=int(state_dict["backbone.features.0.0.weight"].shape[1]),
            psp_channels=int(state_dict["psp4.bottleneck.0.weight"].shape[0]),
            head_channels=int(state_dict["Coarse_net.laterals.0.0.weight"].shape[0])).to_dict()
    if "conv1.weight" in state_dict and "layer5.final.weight" in state_dict:
        return "dextr-resnet101", {"in_channels": int(state_dict["conv1.weight"].shape[1])}
    sample = ", ".join(list(state_dict)[:3])
    raise UnknownArchitectureError(
        f"{path}: the keys ({sample}, ...) match no known architecture "
        f"({', '.join(ARCHITECTURES)})")


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           source: str | os.PathLike = "state_dict") -> None:
    """Load strictly, except that missing ``num_batches_tracked`` buffers are accepted.

    Any other missing or unexpected key, or a shape mismatch, raises a
    :class:`CheckpointError` naming ``source`` and the key.
    """
    state_dict = normalise_state_dict(state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]!r}")
        raise CheckpointError(f"{source} does not fit {model_arch(model)}: {'; '.join(parts)}")
    for key, value in state_dict.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{source}: shape mismatch at {key!r}: the file has {list(value.shape)}, "
                f"{model_arch(model)} expects {list(expected[key].shape)}")
    full = dict(state_dict)
    for key in expected:
        if key not in full:  # num_batches_tracked, absent from old files
            full[key] = torch.zeros_like(expected[key])
    model.load_state_dict(full, strict=True)


def load_model(source: str | os.PathLike | nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """Load a network from a checkpoint file and return it in eval mode on ``device``.

    ``source`` is a path to one of the authors' state_dict files or to a checkpoint in the
    project's own format (see :func:`save_model`); an ``nn.Module`` is passed through. The
    model's card is available as ``model.card``.
    """
    target = resolve_device(device)
    if isinstance(source, nn.Module):
        model_arch(source)
        return source.to(target).eval()
    checkpoint = read_checkpoint(source)
    try:
        model = build_model(checkpoint["arch"], checkpoint["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: cannot build {checkpoint['arch']} from its config "
                              f"{checkpoint['config']}: {err}") from err
    load_state_dict_strict(model, checkpoint["state_dict"], source)
    model.card = checkpoint["card"]
    return model.to(target).eval()


def _check_card(value: Any, where: str = "card") -> None:
    """Cards must survive ``weights_only=True`` loading: plain data only."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_card(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be strings, got {key!r}")
            _check_card(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where} holds a {type(value).__name__}; model cards hold only "
                    "str, int, float, bool, None, lists and dicts")


def save_model(model: nn.Module, path: str | os.PathLike, card: Mapping[str, Any] | None = None,
               half: bool = False) -> Path:
    """Write ``model`` in the project's format, atomically (temporary file, then rename).

    ``card`` says what the weights were trained on, the licence of that data, metrics...
    ``half=True`` stores the weights as float16 (half the file size); they load back into a
    float32 model.
    """
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    arch = model_arch(model)
    card = dict(card or {})
    card.setdefault("arch", arch)
    card.setdefault("saved", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    _check_card(card)
    state_dict = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if half and value.is_floating_point():
            value = value.half()
        state_dict[key] = value.clone(memory_format=torch.contiguous_format)   # as trained channels_last or not
    payload = {"arch": arch, "config": model_config(model), "state_dict": state_dict, "card": card}
    return atomic_save(payload, path)


def atomic_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda handle: torch.save(payload, handle))
