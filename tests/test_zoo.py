"""The model zoo: names and paths, the cache folder, downloads verified against a local server."""

import hashlib
import http.server
import threading

import pytest

from napari_iog import IOGPredictor, build_model, save_model, zoo
from napari_iog.cli import main as cli


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(zoo.CACHE_ENV, str(folder))
    return folder


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "served.pt"
    save_model(build_model("iog-resnet18", init="zeros"), path, card={"name": "served"}, half=True)
    return path


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        body, announced = self.files.get(self.path, (None, None))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        self.wfile.write(body)   # shorter than announced: a truncated download

    def log_message(self, *args):
        pass


@pytest.fixture
def server(small_checkpoint):
    data = small_checkpoint.read_bytes()
    handler = type("Handler", (_Handler,), {"files": {
        "/good.pt": (data, len(data)),
        "/truncated.pt": (data[: len(data) // 3], len(data)),
        "/garbage.pt": (b"<html>quota exceeded</html>", 27),
    }})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hashlib.sha256(data).hexdigest()
    httpd.shutdown()


def add_entry(monkeypatch, url, sha256=None, name="test-model"):
    entry = zoo.WeightsEntry(name, "test_model.pt", "iog-resnet18", "nothing", "test", "http://localhost",
                             url=url, sha256=sha256)
    monkeypatch.setitem(zoo.WEIGHTS, name, entry)
    return entry


def test_cache_folder_follows_the_environment(cache):
    assert zoo.cache_dir() == cache
    rows = {r["name"]: r for r in zoo.list_weights()}
    assert set(rows) >= {"iog-pascal-sbd", "iog-pascal", "iog-pascal-sbd-refinement", "dextr-pascal-sbd"}
    assert rows["iog-pascal-sbd"]["arch"] == "iog-resnet101" and not rows["iog-pascal-sbd"]["present"]
    assert rows["iog-pascal-sbd"]["path"] == str(cache / "IOG_PASCAL_SBD.pth")


def test_a_file_placed_by_hand_is_used_offline(cache, small_checkpoint, monkeypatch):
    entry = add_entry(monkeypatch, url="http://127.0.0.1:9/never-contacted")
    cache.mkdir()
    (cache / entry.filename).write_bytes(small_checkpoint.read_bytes())
    assert zoo.fetch(entry.name) == cache / entry.filename        # no network
    assert zoo.resolve(entry.name) == cache / entry.filename
    predictor = IOGPredictor(entry.name, device="cpu", precision="float32", warmup=False)
    assert predictor.arch == "iog-resnet18"


def test_good_download_is_verified_and_kept(cache, server, monkeypatch):
    base, sha = server
    entry = add_entry(monkeypatch, url=f"{base}/good.pt", sha256=sha)
    seen = []
    path = zoo.fetch(entry.name, progress=lambda done, total: seen.append((done, total)))
    assert path.is_file() and zoo.sha256_of(path) == sha
    assert seen[-1][0] == seen[-1][1]
    assert [p.name for p in cache.iterdir() if p.suffix == ".part"] == []
    assert zoo.verify(entry.name)["status"] == "sha256 matches"


def test_truncated_download_leaves_nothing(cache, server, monkeypatch):
    base, _ = server
    entry = add_entry(monkeypatch, url=f"{base}/truncated.pt")
    with pytest.raises(zoo.DownloadError, match="truncated|failed"):
        zoo.fetch(entry.name)
    assert not (cache / entry.filename).exists()
    assert not list(cache.glob("*.part"))


def test_wrong_checksum_is_refused(cache, server, monkeypatch):
    base, _ = server
    entry = add_entry(monkeypatch, url=f"{base}/good.pt", sha256="0" * 64)
    with pytest.raises(zoo.DownloadError, match="does not match"):
        zoo.fetch(entry.name)
    assert not (cache / entry.filename).exists()


def test_a_page_instead_of_weights_is_refused(cache, server, monkeypatch):
    base, _ = server
    entry = add_entry(monkeypatch, url=f"{base}/garbage.pt")
    with pytest.raises(zoo.DownloadError, match="not a usable checkpoint"):
        zoo.fetch(entry.name)
    assert not (cache / entry.filename).exists()


def test_server_down_is_a_clear_error(cache, monkeypatch):
    import socket

    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = add_entry(monkeypatch, url=f"http://127.0.0.1:{port}/good.pt")
    with pytest.raises(zoo.DownloadError, match="failed"):
        zoo.fetch(entry.name, timeout=5)
    assert not cache.exists() or not list(cache.iterdir())


def test_drive_files_get_instructions_and_unknown_names_a_list(cache, capsys):
    with pytest.raises(zoo.ManualDownloadRequired) as err:
        zoo.fetch("iog-pascal-sbd")
    text = str(err.value)
    assert "1Lm1hhMhhjjnNwO4Pf7SC6tXLayH2iH0l" in text and str(cache / "IOG_PASCAL_SBD.pth") in text
    with pytest.raises(FileNotFoundError, match="Google Drive"):
        zoo.resolve("iog-pascal-sbd")
    with pytest.raises(zoo.UnknownModelError, match="iog-pascal-sbd"):
        zoo.resolve("iog-pasal")
    with pytest.raises(FileNotFoundError, match="not found"):
        zoo.resolve("missing/file.pth")
    assert cli(["weights", "fetch", "iog-pascal-sbd"]) == 2
    assert "save it as" in capsys.readouterr().out
    assert cli(["weights", "list"]) == 0
    assert "iog-pascal-sbd-refinement" in capsys.readouterr().out
    assert cli(["weights", "verify", "iog-pasal"]) == 1


def test_verify_records_then_checks_the_sha256(cache, small_checkpoint, monkeypatch):
    entry = add_entry(monkeypatch, url=None)
    cache.mkdir()
    target = cache / entry.filename
    target.write_bytes(small_checkpoint.read_bytes())
    first = zoo.verify(str(target))
    assert first["arch"] == "iog-resnet18" and "first verification" in first["status"]
    assert zoo.verify(entry.name)["status"] == "sha256 matches"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF          # a flipped byte inside the file
    target.write_bytes(bytes(data))
    with pytest.raises(Exception, match="differs from the recorded|not a readable"):
        zoo.verify(entry.name)
