"""The model zoo: names and paths, the cache folder, downloads verified against a local server."""

import dataclasses
import hashlib
import http.server
import threading
import urllib.parse

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


def test_missing_models_say_how_to_get_them_and_unknown_names_get_a_list(cache, capsys):
    with pytest.raises(FileNotFoundError, match="napari-iog weights fetch iog-pascal-sbd"):
        zoo.resolve("iog-pascal-sbd")
    with pytest.raises(zoo.UnknownModelError, match="iog-pascal-sbd"):
        zoo.resolve("iog-pasal")
    with pytest.raises(FileNotFoundError, match="not found.*zoo name"):
        zoo.resolve("missing/file.pth")
    # the README's old spelling: the authors' file name, not downloaded
    with pytest.raises(FileNotFoundError, match="weights fetch iog-pascal-sbd"):
        IOGPredictor("IOG_PASCAL_SBD.pth", warmup=False)
    assert cli(["weights", "list"]) == 0
    assert "iog-pascal-sbd-refinement" in capsys.readouterr().out
    assert cli(["weights", "verify", "iog-pasal"]) == 1


class _DriveHandler(http.server.BaseHTTPRequestHandler):
    """Google Drive as a downloader meets it: /uc answers a large file with a "can't scan this
    file for viruses" page whose form (on another host in real life) releases the file; a file
    over its quota gets a page without a form."""

    files: dict = {}
    base = ""

    def do_GET(self):  # noqa: N802 (http.server's name)
        url = urllib.parse.urlparse(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        body = self.files.get(query.get("id"))
        if url.path == "/uc" and query.get("id") == "over-quota":
            self._page(b"<html><body>Too many users have viewed or downloaded this file recently.</body></html>")
        elif url.path == "/uc" and body is not None:
            form = (f'<form id="download-form" action="{self.base}/download" method="get">'
                    f'<input type="hidden" name="id" value="{query["id"]}">'
                    '<input type="hidden" name="export" value="download">'
                    '<input type="hidden" name="confirm" value="t">'
                    '<input type="hidden" name="uuid" value="5f1c"></form>')
            self._page(f"<html><body>Google Drive can't scan this file for viruses. {form}</body></html>".encode())
        elif url.path == "/download" and body is not None and query.get("confirm") == "t" and query.get("uuid"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Disposition", 'attachment; filename="weights.pth"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def _page(self, html):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(html)))
        self.end_headers()
        self.wfile.write(html)

    def log_message(self, *args):
        pass


@pytest.fixture
def drive(small_checkpoint, monkeypatch):
    data = small_checkpoint.read_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DriveHandler)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.RequestHandlerClass = type("Handler", (_DriveHandler,), {"files": {"file-id": data}, "base": base})
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(zoo, "DRIVE_DOWNLOAD_URL", f"{base}/uc")
    yield data
    httpd.shutdown()


def add_drive_entry(monkeypatch, drive_id, data=None, name="drive-model"):
    entry = zoo.WeightsEntry(name, "DRIVE_MODEL.pth", "iog-resnet18", "nothing", "test", "http://localhost",
                             drive_id=drive_id, sha256=hashlib.sha256(data).hexdigest() if data else None,
                             size=len(data) if data else None)
    monkeypatch.setitem(zoo.WEIGHTS, name, entry)
    return entry


def test_drive_files_download_through_the_confirm_page(cache, drive, monkeypatch, capsys):
    entry = add_drive_entry(monkeypatch, "file-id", drive)
    assert cli(["weights", "fetch", entry.name]) == 0
    path = cache / entry.filename
    assert path.read_bytes() == drive and str(path) in capsys.readouterr().out
    assert zoo.verify(entry.name)["status"] == "sha256 matches"
    assert IOGPredictor(entry.name, device="cpu", precision="float32", warmup=False).arch == "iog-resnet18"


def test_drive_refusing_the_file_says_what_to_do_and_leaves_nothing(cache, drive, monkeypatch, capsys):
    entry = add_drive_entry(monkeypatch, "over-quota")
    with pytest.raises(zoo.DownloadError, match="Too many|try again later") as err:
        zoo.fetch(entry.name)
    assert "save it as" in str(err.value) and "over-quota" in str(err.value)
    assert cli(["weights", "fetch", entry.name]) == 2
    assert "by hand" in capsys.readouterr().err
    assert not cache.exists() or not list(cache.iterdir())


def test_a_drive_file_of_the_wrong_size_is_refused(cache, drive, monkeypatch):
    entry = add_drive_entry(monkeypatch, "file-id")
    monkeypatch.setitem(zoo.WEIGHTS, entry.name, dataclasses.replace(entry, size=len(drive) + 1))
    with pytest.raises(zoo.DownloadError, match="bytes arrived"):
        zoo.fetch(entry.name)
    assert not list(cache.iterdir())


def test_a_cancelled_download_leaves_nothing(cache, drive, monkeypatch):
    entry = add_drive_entry(monkeypatch, "file-id", drive)
    cancel = threading.Event()
    with pytest.raises(zoo.DownloadCancelled):
        zoo.fetch(entry.name, progress=lambda done, total: cancel.set(), cancel=cancel)
    assert not list(cache.iterdir())
    assert zoo.fetch(entry.name) == cache / entry.filename      # and it works the next time


def test_the_authors_file_is_known_by_size_and_checksum():
    entry = zoo.WEIGHTS["iog-pascal-sbd"]
    assert entry.size == 209_133_432
    assert entry.sha256 == "f94ced1516f1d7587fcdbfc6b64c3908ca1e8bc706211f7996a784f71abf6313"
    assert all(e.downloadable or e.bundled for e in zoo.WEIGHTS.values())


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


def test_a_full_disk_during_a_download_is_said_and_leaves_nothing(cache, server, monkeypatch):
    import errno

    base, sha = server
    entry = add_entry(monkeypatch, url=f"{base}/good.pt", sha256=sha)

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zoo.os, "fsync", no_space)
    with pytest.raises(zoo.DownloadError, match="No space left on device; nothing was kept"):
        zoo.fetch(entry.name)
    assert not cache.exists() or [p.name for p in cache.iterdir()] == []

