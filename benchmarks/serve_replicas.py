"""Smoke test of the server past one machine: two CPU replicas behind Ray Serve on this
machine, the same client, requests from several threads; which replicas answered.

    python3 benchmarks/serve_replicas.py [--replicas 2] [--requests 40]

Needs ``pip install "ray[serve]"``. On a cluster the same code runs with ``ray.init(address=...)``
first and ``--device cuda`` (one GPU a replica).
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import sys
import threading
import time
from pathlib import Path

from skimage import data

from napari_iog.remote import RemotePredictor
from napari_iog.serve.replicas import run_replicas

TOKEN = "replica-test-token-" + "z" * 16


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve-replicas.json")
    args = parser.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    run_replicas(None, replicas=args.replicas, device=args.device, token=TOKEN, port=port,
                 cpus_per_replica=0.5, blocking=False)
    ready_s = time.perf_counter() - started
    url = f"http://127.0.0.1:{port}"
    image = data.astronaut()
    answered, failures = collections.Counter(), []

    def user(i: int) -> None:
        client = RemotePredictor(url, token=TOKEN, timeout=60)
        for n in range(args.requests // 4):
            try:
                client.predict(image, corners=((20 + n, 140), (300, 380)), inside=(150, 260))
                answered[client.last_server] += 1
            except OSError as err:
                failures.append(str(err))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = {"replicas": args.replicas, "ready_s": round(ready_s, 1), "answered_by": dict(answered),
              "failures": failures[:5], "requests": sum(answered.values())}
    print(json.dumps(result, indent=1))
    args.out.write_text(json.dumps(result, indent=1))
    from ray import serve
    serve.shutdown()
    return 0 if len(answered) == args.replicas and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
