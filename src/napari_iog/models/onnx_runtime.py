"""The ONNX Runtime backend: the folded float32 network, exported once to ONNX and run by ONNX
Runtime's CPU kernels.

On CPUs without fast bf16 this is the fast float32 path (``benchmarks/probe_fast_cpu.py`` and
``docs/benchmarks.md`` have the figures): ONNX Runtime's MLAS kernels beat torch's oneDNN ones
on depthwise convolutions (the default MobileNetV2 network) and a little on ResNet-101. The
masks are the float32 network's (an export, not an approximation); the predictor still checks
them at warm-up and keeps whichever backend is faster on this machine. int8 static
quantisation was measured and rejected for the default: it changes masks too much (docs).

The export (torch's dynamo exporter, ~10 s) is cached in the zoo's cache folder, keyed by the
network's weights and the napari-iog, torch and ONNX Runtime versions, so a second start only
loads it (and an upgraded forward pass is exported again).
Needs the ``fast`` extra (``pip install "napari-iog[fast]"``: onnxruntime, onnx, onnxscript);
without it the predictor runs torch and says so in ``backend``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io.atomic import atomic_write
from .mobilenet import corrected_rows, merge_rows, with_correction_input_size

#: what the backend needs installed (import names)
REQUIRED = ("onnxruntime", "onnx", "onnxscript")
#: the subfolder of the zoo's cache folder the exported networks go to
CACHE_SUBDIR = "onnx"
#: the largest batch the exported graph is traced for (the predictor's CPU batches are 1-2)
MAX_BATCH = 64
#: exports kept in the cache (the least recently used go first): each fine-tuned network gets
#: its own, and a ResNet-101 export is 170 MB
MAX_CACHED_EXPORTS = 6

log = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """ONNX Runtime (or the exporter it needs) is not installed, or cannot run this network."""


def missing_packages() -> list[str]:
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def weights_digest(model: nn.Module) -> str:
    """A digest of the network's architecture, its config (which sizes the graph: the same weights
    run corrections at another size) and every tensor of its state (not the file it came from: a
    network fine-tuned in memory gets its own export)."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(str(getattr(model, "arch", type(model).__name__)).encode())
    config = getattr(model, "config", None)
    digest.update(repr(sorted(config.to_dict().items()) if hasattr(config, "to_dict") else config).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def export_path(model: nn.Module, cache: Path) -> Path:
    """Keyed by the weights and by what made the graph: napari-iog's version (its forward code),
    torch's (the exporter) and ONNX Runtime's."""
    import onnxruntime

    from .. import __version__

    arch = str(getattr(model, "arch", "network"))
    versions = f"iog{__version__}-torch{torch.__version__.split('+')[0]}-ort{onnxruntime.__version__}"
    return cache / CACHE_SUBDIR / f"{arch}-{weights_digest(model)}-{versions}.onnx"


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """The network (on the CPU, float32, eval mode) as an ONNX model with a free batch size."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    example = example.float().cpu().contiguous()
    if example.shape[0] < 2:     # a batch of one would be specialised to 1 by the tracer
        example = example.expand(2, *example.shape[1:]).contiguous()
    torch_onnx_log = logging.getLogger("torch.onnx")
    level = torch_onnx_log.level
    torch_onnx_log.setLevel(logging.ERROR)     # its notes on missing torchvision ops are not ours
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(model.eval(), (example,), input_names=["x"], output_names=["logits"],
                                        dynamo=True, dynamic_shapes={"x": {0: batch}}, external_data=False,
                                        verbose=False)
        finally:
            torch_onnx_log.setLevel(level)
    return program.model_proto.SerializeToString()


class OnnxRuntimeNetwork:
    """A network run by ONNX Runtime, called like the torch one: ``net(x) -> logits``."""

    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, first_clicks: OnnxRuntimeNetwork | None = None,
                 clicks_from: int | None = None, smaller_corrections: OnnxRuntimeNetwork | None = None):
        """``first_clicks``: the network without its correction head, run for inputs whose channels
        from ``clicks_from`` on (the correction clicks' disks) are empty: the same logits, a fifth
        less time (28.7 against 35.2 ms a first click for the default, one thread, Zen 4).
        ``smaller_corrections``: for a network whose corrections run larger, the graph that runs
        them at its first clicks' size, for the samples ``larger_corrections`` says no to."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        # Its threads would spin after each run and take the cores from torch's, which prepare the
        # next input (and from the other requests of a server): a click took 45-49 ms wall and
        # 90-97 ms CPU with spinning, 30-33 ms and 47-65 ms without (AMD EPYC Zen 4, 2 threads).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3          # errors only: its warnings are not the user's
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.first_clicks, self.clicks_from = first_clicks, clicks_from
        self.smaller_corrections = smaller_corrections

    def with_threads(self, threads: int) -> OnnxRuntimeNetwork:
        """The same network in a session of its own with ``threads`` threads a pass."""
        first_clicks, smaller = (None if graph is None else graph.with_threads(threads)
                                 for graph in (self.first_clicks, self.smaller_corrections))
        return OnnxRuntimeNetwork(self.path, threads, first_clicks, self.clicks_from, smaller)

    def __call__(self, x: torch.Tensor, larger_corrections: torch.Tensor | None = None) -> torch.Tensor:
        if self.first_clicks is not None:   # each sample answers as it would alone
            rows = corrected_rows(x, self.clicks_from)
            if self.smaller_corrections is not None:      # None: no correction runs larger
                rows = rows & (False if larger_corrections is None else torch.as_tensor(larger_corrections).bool())
                others = self.smaller_corrections         # it sends first clicks on to first_clicks
            else:
                others = self.first_clicks
            if not bool(rows.any()):
                return others(x)
            if not bool(rows.all()):
                return merge_rows(rows, self(x[rows], rows[rows]), others(x[~rows]))
        array = np.ascontiguousarray(x.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run(None, {"x": array})[0])


def onnx_runtime_network(model: nn.Module, example: torch.Tensor, cache: Path,
                         threads: int | None = None, int8_inputs: Callable | None = None) -> OnnxRuntimeNetwork:
    """The network as an ONNX Runtime session: the cached export when there is one that loads,
    else a new export, written atomically (a killed start leaves no half file to load). A network
    with a correction head gets a second graph without it, for first clicks. ``int8_inputs``: both
    graphs quantized (:mod:`.int8`, also cached), calibrated on what
    ``int8_inputs(channels, first_mask, corrections)`` gives (``int8_calibration.calibration_inputs``)."""
    missing = missing_packages()
    if missing:
        raise BackendUnavailable(f"the ONNX Runtime backend needs {', '.join(missing)} "
                                 "(pip install \"napari-iog[fast]\")")
    network = _exported_network(model, example, Path(cache), threads)
    headless = model.without_correction_head() if hasattr(model, "without_correction_head") else None
    if headless is not None:
        network.first_clicks = _exported_network(headless, example, Path(cache), threads)
        network.clicks_from = model.correction_clicks_from
        if model.config.correction_input_size is not None:
            network.smaller_corrections = _exported_network(with_correction_input_size(model, None), example,
                                                            Path(cache), threads)
            network.smaller_corrections.first_clicks = network.first_clicks
            network.smaller_corrections.clicks_from = network.clicks_from
    return network if int8_inputs is None else _quantized(network, example.shape[1], threads, int8_inputs)


def _quantized(network: OnnxRuntimeNetwork, channels: int, threads: int | None,
               inputs: Callable) -> OnnxRuntimeNetwork:
    from . import int8

    def probability(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(network(x))

    try:
        first_clicks = None
        if network.first_clicks is not None:
            path = int8.quantize(network.first_clicks.path, lambda: inputs(channels, None, False))
            first_clicks = OnnxRuntimeNetwork(path, threads)
        smaller = None
        if network.smaller_corrections is not None:
            smaller_path = int8.quantize(network.smaller_corrections.path, lambda: inputs(channels, probability, True))
            smaller = OnnxRuntimeNetwork(smaller_path, threads, first_clicks, network.clicks_from)
        path = int8.quantize(network.path, lambda: inputs(channels, probability, True))
        return OnnxRuntimeNetwork(path, threads, first_clicks, network.clicks_from, smaller)
    except Exception as err:     # onnx missing, a graph the quantizer refuses, an unwritable cache
        raise BackendUnavailable(f"the int8 network could not be made from {network.path.name}: "
                                 f"{type(err).__name__}: {err}") from err


def _exported_network(model: nn.Module, example: torch.Tensor, cache: Path,
                      threads: int | None) -> OnnxRuntimeNetwork:
    path = export_path(model, cache)
    if path.exists():
        try:
            network = OnnxRuntimeNetwork(path, threads)
            os.utime(path)          # recently used: pruning keeps it
            return network
        except Exception as err:   # a damaged or foreign file: export again over it
            log.warning("the cached ONNX network %s does not load (%s); exporting it again", path, err)
    try:         # before the export's seconds, which an unwritable cache would throw away at every start
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(f"{path.parent} is not writable")
    except OSError as err:
        raise BackendUnavailable(f"the ONNX export of {getattr(model, 'arch', 'the network')} could not be "
                                 f"cached: {type(err).__name__}: {err}") from err
    try:
        proto = export_onnx(model, example)
    except Exception as err:
        raise BackendUnavailable(f"{getattr(model, 'arch', 'the network')} could not be exported to ONNX: "
                                 f"{type(err).__name__}: {err}") from err
    try:
        atomic_write(path, lambda f: f.write(proto))
        prune_exports(path.parent, keep=path)
        return OnnxRuntimeNetwork(path, threads)
    except Exception as err:     # a cache folder that cannot be written, a graph ONNX Runtime refuses
        raise BackendUnavailable(f"the ONNX export of {getattr(model, 'arch', 'the network')} could not be "
                                 f"cached or loaded: {type(err).__name__}: {err}") from err


def prune_exports(folder: Path, keep: Path, limit: int = MAX_CACHED_EXPORTS) -> list[Path]:
    """Delete the least recently used exports beyond ``limit`` (never ``keep``)."""
    exports = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    removed = [p for p in exports[limit:] if p != keep]
    for old in removed:
        old.unlink(missing_ok=True)
    return removed
