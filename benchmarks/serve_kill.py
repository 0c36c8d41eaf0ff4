"""The server killed at random moments while a user annotates through it: no label may change
because of it, and the client must work again once the server is back.

    python3 benchmarks/serve_kill.py [--kills 20] [--out benchmarks/results/serve-kill.json]

Each round starts ``napari-iog serve`` (a process of its own, loopback, a token), annotates
with an ``AnnotationSession`` on a ``RemotePredictor`` (three clicks, a correction, commit),
and kills the server (SIGKILL) after a random delay, mid-click or between clicks. Then: the
labels must be what the session's own commits made them, and after a restart the same client
must predict again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from skimage import data

from napari_iog.remote import RemoteError, RemotePredictor
from napari_iog.session import AnnotationSession

TOKEN = "kill-test-token-" + "y" * 16


def start_server(port: int) -> subprocess.Popen:
    env = {**os.environ, "NAPARI_IOG_TOKEN": TOKEN}
    process = subprocess.Popen([sys.executable, "-m", "napari_iog", "serve", "--port", str(port), "--device", "cpu"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not start")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve-kill.json")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    image = data.astronaut()
    labels = np.zeros(image.shape[:2], np.uint16)
    rounds = []
    server = start_server(port)
    client = RemotePredictor(f"http://127.0.0.1:{port}", token=TOKEN, timeout=10)
    session = AnnotationSession(client, image, labels)
    for _ in range(args.kills):
        expected = labels.copy()
        delay = rng.uniform(0.0, 0.6)
        threading.Timer(delay, server.kill).start()
        r0, c0 = rng.randrange(0, 350), rng.randrange(0, 350)
        clicks = [("corner", (r0, c0)), ("corner", (r0 + 150, c0 + 150)), ("inside", (r0 + 75, c0 + 75))]
        interrupted, committed = None, None
        try:
            for n in range(3, 6):
                session.set_clicks(clicks[:3] + [("negative", (r0 + 10 + n, c0 + 10))] * (n > 3))
            committed = session.commit()
            expected[labels == committed] = committed
        except (RemoteError, ValueError) as err:
            interrupted = type(err).__name__
            session.clear()
        server.wait(10)
        unchanged = bool(np.array_equal(labels, expected))
        server = start_server(port)
        try:
            session.set_clicks(clicks)
            recovered = session.current is not None
            session.clear()
        except RemoteError:
            recovered = False
        rounds.append({"kill_after_s": round(delay, 3), "interrupted": interrupted, "committed": committed,
                       "labels_as_expected": unchanged, "recovered": recovered})
        print(rounds[-1], flush=True)
    server.kill()
    summary = {"kills": len(rounds), "labels_changed_by_a_kill": sum(not r["labels_as_expected"] for r in rounds),
               "recovered": sum(r["recovered"] for r in rounds),
               "interrupted_mid_object": sum(r["interrupted"] is not None for r in rounds)}
    print(summary)
    args.out.write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=1))
    return 0 if summary["labels_changed_by_a_kill"] == 0 and summary["recovered"] == len(rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
