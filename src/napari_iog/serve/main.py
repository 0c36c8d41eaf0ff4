"""``napari-iog serve``: load the model, make or read the token, run uvicorn."""

from __future__ import annotations

import os
import sys
from typing import Any

from ..remote import TOKEN_ENV


def serving_predictor(model: str | None, device: str, lanes: int | None = None,
                      cores: int | None = None, precision: str = "auto") -> tuple[Any, dict]:
    """The server's predictor, and how its app runs passes (``make_app``'s ``lanes``, ``max_batch``):
    on a GPU one lane batches what arrives together; on a CPU ``lanes`` passes run at once, each
    on its share of the cores and one object each (``batching.cpu_parallelism``). Threads are set
    before the app starts its lanes, which take this thread count. ``cores``: the cores this server
    may use (default: all this process may run on). ``precision``: ``IOGPredictor``'s ("int8": the
    quantized network, its pass in ~0.6x the time)."""
    import torch

    from ..predictor import IOGPredictor
    from .batching import cpu_parallelism

    predictor = IOGPredictor(model, device=device, precision=precision)
    if predictor.device.type != "cpu":
        return predictor, {"lanes": 1, "max_batch": 16}
    lanes, threads = cpu_parallelism(lanes, cores)
    torch.set_num_threads(threads)
    if predictor.backend == "onnxruntime":
        predictor.model = predictor.model.with_threads(threads)
    return predictor, {"lanes": lanes, "max_batch": 1}


def serve(model: str | None, device: str, host: str, port: int, token: str | None = None,
          no_token: bool = False, learn: bool = False, learn_seconds: float = 5.0, lanes: int | None = None,
          precision: str = "auto") -> int:
    import uvicorn

    from ..learning.learner import LearnSettings
    from .app import make_app
    from .auth import load_or_make_token, token_path
    from .learning import ServerLearning

    token = token or os.environ.get(TOKEN_ENV)
    if no_token:
        token = None
        print("napari-iog serve: WITHOUT a token: anyone who reaches this port can use the model",
              file=sys.stderr)
    elif token is None:
        token, made = load_or_make_token()
        if made:
            print(f"napari-iog serve: the access token (shown once; kept in {token_path()}, readable by you "
                  f"only):\n  {token}\nclients: RemotePredictor(url, token=...) or ${TOKEN_ENV}", flush=True)
    predictor, passes = serving_predictor(model, device, lanes, precision=precision)
    print(f"napari-iog serve: {predictor.arch} on {predictor.device} ({predictor.precision}, {predictor.backend}, "
          f"{passes['lanes']} pass(es) at once) at http://{host}:{port}", flush=True)
    learning = ServerLearning(predictor, LearnSettings(seconds_per_object=learn_seconds)) if learn else None
    if learning is not None:
        print(f"napari-iog serve: learning from the objects annotators commit ({learn_seconds:g} s of training "
              f"each, on {predictor.device}); /learn says where it stands", flush=True)
    try:
        uvicorn.run(make_app(predictor, token, learning=learning, **passes), host=host, port=port, log_level="warning")
    finally:
        if learning is not None:
            learning.close()
    return 0
