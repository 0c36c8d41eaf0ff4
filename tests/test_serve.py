"""`napari-iog serve` and its client: a real uvicorn server on a free loopback port (no mock of
the HTTP layer), stopped by the test."""

import json
import pickle
import threading
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from conftest import calibrate, synthetic_scene
from local_server import Server

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from napari_iog import build_model  # noqa: E402
from napari_iog.predictor import IOGPredictor  # noqa: E402
from napari_iog.remote import RemoteError, RemotePredictor  # noqa: E402
from napari_iog.remote_codec import encode_array, npy_bytes  # noqa: E402
from napari_iog.serve import Limits, load_or_make_token, make_app  # noqa: E402
from napari_iog.session import AnnotationSession  # noqa: E402

TOKEN = "a-test-token-of-some-length"
CORNERS, INSIDE = ((55, 65), (185, 235)), (120, 150)


@pytest.fixture(scope="module")
def local():
    network = calibrate(build_model("iog-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=3))
    return IOGPredictor(network, device="cpu", precision="float32", backend="torch", warmup=False)


@pytest.fixture(scope="module")
def server(local):
    running = Server(make_app(local, TOKEN, Limits(max_crop_side=1024, max_clicks=8)))
    yield running
    running.stop()


def post(url, body, token=TOKEN, raw=None):
    request = urllib.request.Request(url, data=raw if raw is not None else json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        text = err.read()
        try:
            return err.code, json.loads(text or b"{}")
        except ValueError:
            return err.code, {"detail": text.decode(errors="replace")}


def test_the_remote_predictor_gives_the_local_mask(server, local):
    image, _ = synthetic_scene()
    remote = RemotePredictor(server.url, token=TOKEN, probability=True)
    here = local.predict(image, corners=CORNERS, inside=INSIDE, negative=[(175, 225)])
    there = remote.predict(image, corners=CORNERS, inside=INSIDE, negative=[(175, 225)])
    assert np.abs(there.probability - here.probability).max() < 2e-3          # float16 on the wire
    assert (there.mask ^ here.mask).sum() <= 0.002 * here.mask.sum()
    assert there.crop_box == here.crop_box and "round_trip" in remote.last_timings
    many = remote.predict_batch(image, [dict(corners=CORNERS, inside=INSIDE),
                                        dict(corners=((10, 10), (100, 120)), inside=(50, 60))])
    plain = local.predict(image, corners=CORNERS, inside=INSIDE)
    assert len(many) == 2 and (many[0].mask ^ plain.mask).sum() <= 0.002 * plain.mask.sum()
    assert remote.arch == "iog-resnet18" and "127.0.0.1" in remote.device
    for npy_body in (True, False):      # one object's crop as .npy bytes; as JSON (servers before /predict_npy)
        client, paths = RemotePredictor(server.url, token=TOKEN), []
        client.npy_body = npy_body

        def recorded(method, path, *rest, call=client._call, paths=paths):
            paths.append(path.split("?")[0])
            return call(method, path, *rest)

        client._call = recorded
        masks_only = client.predict(image, corners=CORNERS, inside=INSIDE, negative=[(175, 225)])
        np.testing.assert_array_equal(masks_only.mask, here.mask)       # the mask alone: exactly the local one
        assert paths == ["/predict_npy" if npy_body else "/predict_many"]


def post_npy(url, prompt, body: bytes, token=TOKEN):
    """``/predict_npy``: ``prompt`` (a dict, or any text) in the query, ``body`` the crop's bytes."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt)
    return post(f"{url}/predict_npy?{urllib.parse.urlencode({'prompt': text})}", None, token=token, raw=body)


@pytest.mark.parametrize("prompt, body, said", [
    ({"corners": [[30, 30], [69, 69]], "inside": [[50, 50]]}, b"\x93NUMPY not really", "not a .npy"),
    ({"corners": [[30, 30], [69, 69]], "inside": [[50, 50]]}, npy_bytes(np.zeros((50, 50), np.uint8)), "RGB uint8"),
    ({"corners": [[30, 30], [69, 69]], "inside": [[50, 50]]}, npy_bytes(np.zeros((2000, 9, 3), np.uint8)),
     "pixels a side"),
    ({"corners": [[30, 30], [69, 69]], "inside": [[50, 50]]}, pickle.dumps(np.zeros((9, 9, 3), object)), "npy"),
    ({"corners": [[30, 30], [69, 69]]}, npy_bytes(np.zeros((100, 100, 3), np.uint8)), "inside"),
    ({"corners": [[30, 30], [69, 69]], "inside": [[5, 5]]}, npy_bytes(np.zeros((100, 100, 3), np.uint8)),
     "outside the box"),
    ({"corners": [[30, 30], [69, 69]], "inside": [[50, 50]], "negative": [[40, 40]] * 9},
     npy_bytes(np.zeros((100, 100, 3), np.uint8)), "more than 8"),
    ("{not json", npy_bytes(np.zeros((100, 100, 3), np.uint8)), "malformed prompt"),
])
def test_a_crop_sent_as_npy_bytes_is_checked_as_strictly(server, prompt, body, said):
    status, answer = post_npy(server.url, prompt, body)
    assert 400 <= status < 500 and said in json.dumps(answer)


def test_a_body_over_the_limit_is_refused(local):
    small = Server(make_app(local, TOKEN, Limits(max_body_bytes=10_000)))
    try:
        crop = npy_bytes(np.zeros((100, 100, 3), np.uint8))             # 30 kB
        status, answer = post_npy(small.url, {"corners": [[30, 30], [69, 69]], "inside": [[50, 50]]}, crop)
        assert status == 413 and "larger than" in answer["detail"]
        status, _ = post_npy(small.url, {"corners": [[3, 3], [6, 6]], "inside": [[4, 4]]},
                             npy_bytes(np.zeros((10, 10, 3), np.uint8)))
        assert status == 200
    finally:
        small.stop()


def test_a_session_annotates_through_the_server(server):
    image, _ = synthetic_scene()
    labels = np.zeros(image.shape[:2], np.uint16)
    session = AnnotationSession(RemotePredictor(server.url, token=TOKEN), image, labels)
    session.set_clicks([("corner", CORNERS[0]), ("corner", CORNERS[1]), ("inside", INSIDE)])
    assert session.commit() == 1 and (labels == 1).any()


def test_no_request_is_served_without_the_right_token(server):
    crop = np.zeros((100, 100, 3), np.uint8)
    body = {"crop": encode_array(crop), "corners": [[30, 30], [69, 69]], "inside": [[50, 50]]}
    for token in (None, "wrong", TOKEN[:-1], TOKEN + "x"):
        status, answer = post(server.url + "/predict", body, token=token)
        assert status == 401 and "token" in answer["detail"]
    with pytest.raises(RemoteError, match="refused the token"):
        RemotePredictor(server.url, token="wrong")
    assert post(server.url + "/predict", body)[0] == 200
    with urllib.request.urlopen(server.url + "/health", timeout=10) as response:   # health needs no token
        assert json.loads(response.read()) == {"status": "ok"}
    with urllib.request.urlopen(server.url + "/openapi.json", timeout=10) as response:
        paths = json.loads(response.read())["paths"]
        assert "/predict_many" in paths and "application/octet-stream" in json.dumps(paths["/predict_npy"])
    crop_bytes = npy_bytes(crop)
    for token in (None, "wrong"):
        assert post_npy(server.url, {"corners": [[30, 30], [69, 69]], "inside": [[50, 50]]}, crop_bytes,
                        token=token)[0] == 401


@pytest.mark.parametrize("change, said", [
    (lambda b: b.update(crop="not base64!"), "not base64"),
    (lambda b: b.update(crop=encode_array(np.zeros((50, 50), np.uint8))), "RGB uint8"),
    (lambda b: b.update(crop=encode_array(np.zeros((50, 50, 3), np.float32))), "RGB uint8"),
    (lambda b: b.update(crop=encode_array(np.zeros((2000, 20, 3), np.uint8))), "pixels a side"),
    (lambda b: b.update(corners=[[30, 30]]), "object 0"),
    (lambda b: b.update(inside=[[5, 5]]), "outside the box"),
    (lambda b: b.update(negative=[[40, 40]] * 9), "more than 8"),
    (lambda b: b.pop("crop"), "crop"),
])
def test_malformed_requests_get_a_clear_4xx(server, change, said):
    body = {"crop": encode_array(np.zeros((100, 100, 3), np.uint8)), "corners": [[30, 30], [69, 69]],
            "inside": [[50, 50]]}
    change(body)
    status, answer = post(server.url + "/predict", body)
    assert 400 <= status < 500 and said in json.dumps(answer)


def test_a_pickle_is_never_unpickled(server):
    import base64
    import pickle
    import zlib

    evil = base64.b64encode(zlib.compress(pickle.dumps(np.zeros((10, 10, 3), object)))).decode()
    status, answer = post(server.url + "/predict", {"crop": evil, "corners": [[1, 1], [8, 8]], "inside": [[4, 4]]})
    assert status == 422 and "never unpickled" in answer["detail"]


def test_a_server_that_is_down_changes_no_label(local):
    image, _ = synthetic_scene()
    app_server = Server(make_app(local, TOKEN))
    remote = RemotePredictor(app_server.url, token=TOKEN, timeout=5)
    labels = np.zeros(image.shape[:2], np.uint16)
    session = AnnotationSession(remote, image, labels)
    app_server.stop()
    with pytest.raises(RemoteError, match="cannot be reached"):
        session.set_clicks([("corner", CORNERS[0]), ("corner", CORNERS[1]), ("inside", INSIDE)])
    assert not labels.any()


def test_the_token_is_made_once_and_readable_by_its_user_only(tmp_path):
    path = tmp_path / "token"
    token, made = load_or_make_token(path)
    assert made and len(token) >= 32 and (path.stat().st_mode & 0o777) == 0o600
    assert load_or_make_token(path) == (token, False)


@pytest.mark.napari
def test_the_annotator_uses_a_server_says_when_it_is_down_and_goes_on_when_it_is_back(
        make_napari_viewer, local, qtbot, monkeypatch):
    pytest.importorskip("napari")
    from gui_input import mouse_click, press_key, show_all, world_of

    monkeypatch.setenv("NAPARI_IOG_TOKEN", TOKEN)
    app = make_app(local, TOKEN)
    running = Server(app)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(synthetic_scene()[0], name="scene")
    _, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
    show_all(viewer)
    widget.model.value = "(a server)"
    assert not widget.server_row.native.isHidden()
    widget.server.value = running.url
    widget.start()
    qtbot.waitUntil(lambda: widget.annotator is not None, timeout=30_000)
    ann = widget.annotator
    assert "remote" in widget.status.value and running.url in widget.status.value
    for point in (*CORNERS, INSIDE):
        mouse_click(viewer, world_of(ann.image_layer, point))
    ann.wait()
    assert ann.session.current is not None and "network" in widget.status.value
    press_key(viewer, "Enter")
    committed = ann.labels_layer.data.copy()
    assert committed.any()
    running.stop()                                                  # the server goes away
    for point in (*CORNERS, INSIDE):
        mouse_click(viewer, world_of(ann.image_layer, point))
    qtbot.waitUntil(lambda: "cannot be reached" in widget.message.value and not ann.busy, timeout=60_000)
    assert "cannot be reached" in widget.message.value and "local model" in widget.message.value
    press_key(viewer, "Enter")                                      # nothing to commit: nothing written
    np.testing.assert_array_equal(ann.labels_layer.data, committed)
    back = Server(app)                                              # back, on another port
    widget.server.value = back.url
    widget.use_model(back.url)
    qtbot.waitUntil(lambda: not widget.loading.running, timeout=30_000)
    assert widget.annotator is ann and back.url in widget.status.value
    mouse_click(viewer, world_of(ann.image_layer, (INSIDE[0] + 5, INSIDE[1])))
    ann.wait()
    assert ann.session.up_to_date and ann.session.current is not None
    back.stop()


def clicks_at_once(server, image, n):
    """``n`` annotators click the same object at once, each with a positive click of its own: their
    threads (started) and the list their predictions land in."""
    clients = [RemotePredictor(server.url, token=TOKEN, probability=True, timeout=90) for _ in range(n)]
    results = [None] * n

    def click(i):
        results[i] = clients[i].predict(image, corners=CORNERS, inside=INSIDE, positive=[(100 + i, 150)])

    threads = [threading.Thread(target=click, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def assert_each_as_alone(local, image, results):
    """Each of :func:`clicks_at_once`'s answers is what the local predictor gives that click alone."""
    for i, result in enumerate(results):
        alone = local.predict(image, corners=CORNERS, inside=INSIDE, positive=[(100 + i, 150)])
        assert np.abs(result.probability - alone.probability).max() < 2e-3


def test_requests_arriving_together_share_a_forward_pass(local, monkeypatch):
    """Eight annotators click at once: the clicks that arrive while a forward pass runs share the
    next one (the first pass is held until all the others are queued, so a fast or a busy machine
    meets them the same): two passes at most for eight objects, and each gets the mask a request alone gets."""
    image, _ = synthetic_scene()
    server = Server(make_app(local, TOKEN))
    gate, forward = threading.Event(), local._forward
    monkeypatch.setattr(local, "_forward", lambda *args: (gate.wait(60), forward(*args))[1], raising=False)
    try:
        batcher = server.server.config.app.state.batcher
        threads, results = clicks_at_once(server, image, 8)
        waited = 0          # the held pass took the first one (or those that came within its window)
        while (not batcher.batches or batcher.jobs.qsize() < 8 - batcher.batches[0]) and waited < 600:
            threading.Event().wait(0.1)
            waited += 1
        queued = batcher.jobs.qsize()
        gate.set()
        for t in threads:
            t.join(60)
        assert all(r is not None for r in results), (queued, batcher.batches)
        assert sum(batcher.batches) == 8 and len(batcher.batches) <= 2 and max(batcher.batches) > 1
        monkeypatch.undo()
        assert_each_as_alone(local, image, results)
    finally:
        gate.set()
        server.stop()


def test_a_lone_click_does_not_wait_for_company(local):
    """With nobody else arriving, the batcher runs a click at once, however wide its window."""
    image, _ = synthetic_scene()
    server = Server(make_app(local, TOKEN))
    try:
        batcher = server.server.config.app.state.batcher
        batcher.window_s = 60.0
        remote = RemotePredictor(server.url, token=TOKEN, timeout=30)
        for n in range(3):
            remote.predict(image, corners=CORNERS, inside=INSIDE, positive=[(100 + n, 150)])
        assert batcher.batches == [1, 1, 1]
    finally:
        server.stop()


def test_on_a_cpu_two_lanes_run_two_clicks_at_once(local, monkeypatch):
    """Two annotators click together on a two-lane server: both forward passes run at the same
    time (each waits until the other has started; one lane would hold the second back), and each
    gets the mask a request alone gets."""
    image, _ = synthetic_scene()
    server = Server(make_app(local, TOKEN, lanes=2, max_batch=1))
    forward, both_running = local._forward, threading.Barrier(2, timeout=60)

    def held_forward(*args):
        both_running.wait()
        return forward(*args)

    monkeypatch.setattr(local, "_forward", held_forward, raising=False)
    try:
        threads, results = clicks_at_once(server, image, 2)
        for t in threads:
            t.join(90)
        assert not both_running.broken and all(r is not None for r in results)
        assert server.server.config.app.state.batcher.batches == [1, 1]
        monkeypatch.undo()
        assert_each_as_alone(local, image, results)
    finally:
        both_running.abort()
        server.stop()


@pytest.mark.parametrize("cores, lanes, expected", [(2, None, (2, 1)), (16, None, (4, 4)), (2, 1, (1, 2)),
                                                    (1, None, (1, 1)), (8, 3, (3, 2))])
def test_a_cpu_server_runs_a_lane_a_core_at_most_four(cores, lanes, expected):
    from napari_iog.serve.batching import cpu_parallelism

    assert cpu_parallelism(lanes, cores) == expected


def test_a_cpu_server_gives_its_lanes_their_share_of_the_threads(monkeypatch):
    import torch

    from napari_iog.serve.main import serving_predictor

    network = calibrate(build_model("iog-resnet18", {"psp_channels": 32, "head_channels": 16}, seed=3))
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)     # this test process keeps its own
    predictor, passes = serving_predictor(network, "cpu", cores=2)
    assert passes == {"lanes": 2, "max_batch": 1} and threads == [1] and predictor.device.type == "cpu"
    assert serving_predictor(network, "cpu", lanes=1, cores=2)[1] == {"lanes": 1, "max_batch": 1} and threads[-1] == 2


def test_a_thousand_fuzzed_requests_get_answers_and_never_crash_the_server(server):
    """Bad shapes, types, sizes, encodings and clicks, 1,000 of them (bounded, loopback only):
    each gets a 4xx (or a 200 when it happens to be valid), none a 5xx, and the server answers
    afterwards."""
    import base64
    import zlib

    rng = np.random.default_rng(0)

    def npy(array):
        return encode_array(array)

    def noise():
        return base64.b64encode(rng.bytes(int(rng.integers(0, 64)))).decode()

    crops = [lambda: npy(rng.integers(0, 255, (int(rng.integers(1, 80)), int(rng.integers(1, 80)), 3), np.uint8)),
             lambda: npy(rng.random((20, 20, int(rng.integers(1, 5))))),
             lambda: npy(np.zeros((int(rng.integers(1, 5)),), np.int64)),
             lambda: base64.b64encode(zlib.compress(b"\x93NUMPY garbage")).decode(),
             noise, lambda: "", lambda: 12345, lambda: None, lambda: ["a"],
             lambda: npy(np.zeros((30, 30, 3), np.uint8))]
    points = [lambda: [[float(rng.integers(-50, 120)), float(rng.integers(-50, 120))]
                       for _ in range(int(rng.integers(0, 4)))],
              lambda: "x", lambda: [[1e300, -1e300]], lambda: [[float("nan"), 1]], lambda: [[1, 2, 3]],
              lambda: [["a", "b"]], lambda: None, lambda: [[5, 5]] * int(rng.integers(0, 20))]
    statuses = []
    for n in range(1000):
        body = {"crop": crops[int(rng.integers(len(crops)))](), "corners": points[int(rng.integers(len(points)))](),
                "inside": points[int(rng.integers(len(points)))]()}
        for key in ("positive", "negative"):
            if rng.random() < 0.3:
                body[key] = points[int(rng.integers(len(points)))]()
        if rng.random() < 0.1:
            body.pop(list(body)[int(rng.integers(len(body)))])
        if n % 3 == 2:                  # the crop as the body's .npy bytes, the rest as the prompt query
            crop = body.pop("crop", None)
            raw = npy_bytes(rng.integers(0, 255, (int(rng.integers(1, 80)), int(rng.integers(1, 80)),
                                                  int(rng.integers(1, 5))), np.uint8)) if rng.random() < 0.3 else \
                rng.bytes(int(rng.integers(0, 300))) if rng.random() < 0.3 else \
                base64.b64decode(crop) if isinstance(crop, str) and crop and rng.random() < 0.5 else b""
            prompt = body if rng.random() < 0.8 else noise()
            statuses.append(post_npy(server.url, prompt, raw)[0])
            continue
        path = "/predict" if n % 3 else "/predict_many"
        if path == "/predict_many":
            body = {"objects": [body] * int(rng.integers(0, 3))} if rng.random() < 0.9 else body
        raw = None if rng.random() < 0.9 else rng.bytes(int(rng.integers(0, 200)))
        status, _ = post(server.url + path, body, raw=raw)
        statuses.append(status)
    assert all(s == 200 or 400 <= s < 500 for s in statuses), sorted(set(statuses))
    assert statuses.count(200) < 1000
    with urllib.request.urlopen(server.url + "/health", timeout=10) as response:
        assert response.status == 200


def test_a_network_that_reads_corrections_answers_through_the_server_as_here():
    """The bundled default reads its corrections as maps (the object's first mask, disks) and runs
    a large crop's correction at a larger size: the server's batched path must give them as the
    local predictor does."""
    from napari_iog.models.mobilenet import with_correction_input_size, with_correction_maps

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    network = with_correction_maps(build_model("iog-mobilenetv2", {"psp_channels": 16, "head_channels": 8,
                                                                   "input_size": 128}, seed=0).eval(), head=True)
    with torch.no_grad():
        torch.nn.init.normal_(network.correction_head.out.weight, std=0.5)
        network.backbone.features[0][0].weight[:, 5:].normal_(std=0.05)
    network = with_correction_input_size(network, 192)
    local = IOGPredictor(network, device="cpu", precision="float32", backend="torch", warmup=False)
    served = IOGPredictor(network, device="cpu", precision="float32", backend="torch", warmup=False)
    running = Server(make_app(served, TOKEN))
    try:
        image, _ = synthetic_scene()
        remote = RemotePredictor(running.url, token=TOKEN, probability=True)
        for clicks in ({}, {"negative": [(175, 225)]}, {"negative": [(175, 225)], "positive": [(60, 70)]}):
            here = local.predict(image, corners=CORNERS, inside=INSIDE, **clicks)
            there = remote.predict(image, corners=CORNERS, inside=INSIDE, **clicks)
            assert np.abs(there.probability - here.probability).max() < 2e-3       # float16 on the wire
        small = {"corners": [(100, 100), (125, 130)], "inside": (112, 115), "negative": [(103, 104)]}
        here, there = local.predict(image, **small), remote.predict(image, **small)   # a crop under 128 px:
        assert np.abs(there.probability - here.probability).max() < 2e-3             # its correction at 128
        fresh = RemotePredictor(running.url, token=TOKEN, probability=True)
        served.clear_cache()                        # a correction whose object the server never saw
        there = fresh.predict(image, corners=CORNERS, inside=INSIDE, negative=[(175, 225)])
        here = local.predict(image, corners=CORNERS, inside=INSIDE, negative=[(175, 225)])
        assert np.abs(there.probability - here.probability).max() < 2e-3
    finally:
        running.stop()
