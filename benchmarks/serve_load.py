"""Many annotators on one server: N simulated users click at human pace for a while; how many
clicks are served a second, and how long each waits (p50, p95), with and without dynamic
batching. Everything runs on this machine's loopback: the server in its own process, the
users as threads of this one (each reads its crop and encodes it, as the real client does).

    python3 benchmarks/serve_load.py [--users 20] [--seconds 20] [--pause 0.6] [--device cpu]

On a GPU machine, ``--device cuda --users 200 --pause 0.2`` asks for ~1000 clicks a second.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from skimage import data

TOKEN = "load-test-token-" + "x" * 16


def serve(port: int, batching: bool, device: str, precision: str, ready) -> None:
    import uvicorn

    from napari_iog.serve import make_app
    from napari_iog.serve.main import serving_predictor

    # without batching one object at a time, on all the cores
    predictor, passes = serving_predictor(None, device, lanes=None if batching else 1, precision=precision)
    app = make_app(predictor, TOKEN, batching=batching, **passes)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=lambda: (time.sleep(1), ready.set()), daemon=True).start()
    server.run()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(batching: bool, args) -> dict:
    from napari_iog.remote import RemotePredictor

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready = multiprocessing.Event()
    process = multiprocessing.Process(target=serve, args=(port, batching, args.device, args.precision, ready),
                                      daemon=True)
    process.start()
    ready.wait(120)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            RemotePredictor(url, token=TOKEN)
            break
        except OSError:
            time.sleep(0.2)
    image = data.astronaut()
    waits, failures = [], 0
    stop_at = time.monotonic() + args.seconds

    def user(seed: int) -> None:
        nonlocal failures
        rng = random.Random(seed)
        client = RemotePredictor(url, token=TOKEN, timeout=30)
        while time.monotonic() < stop_at:
            time.sleep(rng.expovariate(1 / args.pause))
            r0, c0 = rng.randrange(0, 300), rng.randrange(0, 300)
            corners, inside = ((r0, c0), (r0 + 150, c0 + 150)), (r0 + 75, c0 + 75)
            start = time.perf_counter()
            try:
                client.predict(image, corners=corners, inside=inside)
                waits.append(time.perf_counter() - start)
            except OSError:
                failures += 1

    began, clients_cpu, server_cpu = time.monotonic(), time.process_time(), cpu_seconds(process.pid)
    threads = [threading.Thread(target=user, args=(i,)) for i in range(args.users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    clients_cpu, server_cpu = time.process_time() - clients_cpu, cpu_seconds(process.pid) - server_cpu
    process.terminate()
    process.join(10)
    waits.sort()
    return {"batching": batching, "clicks": len(waits), "failed": failures,
            "clicks_per_s": round(len(waits) / elapsed, 1),
            "p50_ms": round(1000 * statistics.median(waits), 1) if waits else None,
            "p95_ms": round(1000 * waits[int(0.95 * (len(waits) - 1))], 1) if waits else None,
            # where the cores went: CPU milliseconds a click in the server and in the twenty clients
            "server_cpu_ms_per_click": round(1000 * server_cpu / max(len(waits), 1), 1),
            "clients_cpu_ms_per_click": round(1000 * clients_cpu / max(len(waits), 1), 1),
            "cores_busy": round((server_cpu + clients_cpu) / elapsed, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--pause", type=float, default=0.6, help="mean seconds between one user's clicks")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", help="the server's: auto, float32, int8 (CPU) ...")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve-load.json")
    args = parser.parse_args(argv)
    rows = [run(batching, args) for batching in (True, False)]
    for row in rows:
        print(row, flush=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "users": args.users,
                                    "seconds": args.seconds, "pause_s": args.pause, "device": args.device,
                                    "precision": args.precision,
                                    "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
