"""What the network costs over HTTP: the same clicks through the local predictor and through
``napari-iog serve`` on this machine's loopback, a 512-px crop, median of ``--clicks``.

    python3 benchmarks/remote_overhead.py [--model napari-iog-default] [--clicks 30]

Both sides share the CPU here, so the overhead includes the server's own Python work. The client
sends the crop as ``/predict_npy``'s body (``--json``: as base64 in ``/predict_many``'s JSON, the
way servers before it were called).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time

import numpy as np
import uvicorn
from skimage import data

from napari_iog import IOGPredictor
from napari_iog.remote import RemotePredictor
from napari_iog.serve import make_app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="napari-iog-default")
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="send the crop in JSON, as base64")
    args = parser.parse_args(argv)
    predictor = IOGPredictor(args.model, device="cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(predictor, "t" * 32), host="127.0.0.1", port=port,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    remote = RemotePredictor(f"http://127.0.0.1:{port}", token="t" * 32)
    remote.npy_body = not args.json
    image = np.tile(data.astronaut(), (2, 2, 1))                # 1024 x 1024
    corners, inside = ((240, 240), (691, 691)), (465, 465)        # box 452 -> crop 512 px
    times = {"local": [], "remote": []}
    for n in range(args.clicks + 3):
        for name, p in (("local", predictor), ("remote", remote)):
            start = time.perf_counter()
            p.predict(image, corners=corners, inside=inside, negative=[(250 + n, 250)])
            if n >= 3:
                times[name].append(time.perf_counter() - start)
    server.should_exit = True
    thread.join(10)
    local, over = statistics.median(times["local"]), statistics.median(times["remote"])
    print(f"{args.model} on {predictor.device} ({predictor.backend}), 512-px crop, median of {args.clicks}: "
          f"local {1000 * local:.1f} ms, remote ({'JSON' if args.json else '.npy body'}) "
          f"{1000 * over:.1f} ms, overhead {1000 * (over - local):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
