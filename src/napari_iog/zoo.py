"""The model zoo: known checkpoints, one cache directory, verified downloads.

    napari-iog weights list            # which are known, which are here
    napari-iog weights fetch NAME      # download it (direct links and Google Drive)
    napari-iog weights verify PATH     # load it, report its architecture and sha256

A file in the cache directory (``NAPARI_IOG_CACHE`` or the platform's cache folder), placed
there by hand or downloaded, is used as it is, offline, and never downloaded again. A path
always works in place of a name.

One model ships inside the package (``DEFAULT_MODEL``, in ``napari_iog/weights/`` with its
model card): it is what the predictor, the annotator and the CLI use when no model is named,
so the plugin segments the moment it is installed, with nothing to download.
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from pathlib import Path

CACHE_ENV = "NAPARI_IOG_CACHE"
CHECKSUMS_FILE = "checksums.json"   # sha256 recorded the first time a file is verified
BUNDLED_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "napari-iog-default"
DEFAULT_SHA256 = "dae78d70beef423179838c4f3cf276be6371a03612f052810a11e9d3bd0126d3"
#: Google Drive's download endpoint; a large file first answers with a page whose form confirms
#: the download (Drive cannot scan it for viruses), which :func:`_download_drive` submits.
DRIVE_DOWNLOAD_URL = "https://drive.google.com/uc"


class UnknownModelError(ValueError):
    """A name that is neither a known model nor an existing file."""


class ManualDownloadRequired(RuntimeError):
    """The file is hosted where no direct download works; the message says what to do."""


class DownloadError(RuntimeError):
    """A download that failed or did not verify; nothing was put in the cache."""


class DownloadCancelled(DownloadError):
    """The user stopped the download; nothing was put in the cache."""


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    filename: str
    arch: str
    trained_on: str
    licence: str
    homepage: str
    url: str | None = None          # a direct download URL, when one exists
    drive_id: str | None = None     # Google Drive file id
    sha256: str | None = None       # None: not known; recorded on first verification
    size: int | None = None         # bytes, when known
    bundled: bool = False           # ships inside the package (BUNDLED_DIR), never downloaded

    @property
    def source(self) -> str:
        if self.bundled:
            return "bundled with napari-iog"
        if self.url:
            return self.url
        if self.drive_id:
            return f"https://drive.google.com/file/d/{self.drive_id}"
        return self.homepage

    @property
    def downloadable(self) -> bool:
        return bool(self.url or self.drive_id)


_IOG_HOME = "https://github.com/shiyinzhang/Inside-Outside-Guidance"
_IOG_LICENCE = "MIT (code); weights released by the IOG authors for research; trained on PASCAL VOC/SBD"

WEIGHTS: dict[str, WeightsEntry] = {e.name: e for e in (
    WeightsEntry(DEFAULT_MODEL, "napari-iog-default.pt", "iog-mobilenetv2",
                 "COCO subsets, Clothing Co-Parsing, Oxford pets, BSDS500 regions, DSB2018 nuclei, "
                 "ssTEM slices 0-9, CVPPP A1 leaves (ImageNet MobileNetV2 start)",
                 "weights: non-commercial research use (BSDS500 and CVPPP research terms, ssTEM "
                 "CC BY-NC-SA 3.0, COCO images' Flickr licences); see napari_iog/weights/README.md",
                 "https://github.com/napari-iog/napari-iog/blob/main/src/napari_iog/weights/README.md",
                 sha256=DEFAULT_SHA256, bundled=True),
    WeightsEntry("iog-pascal-sbd", "IOG_PASCAL_SBD.pth", "iog-resnet101", "PASCAL VOC + SBD",
                 _IOG_LICENCE, _IOG_HOME, drive_id="1Lm1hhMhhjjnNwO4Pf7SC6tXLayH2iH0l",
                 sha256="f94ced1516f1d7587fcdbfc6b64c3908ca1e8bc706211f7996a784f71abf6313", size=209_133_432),
    WeightsEntry("iog-pascal", "IOG_PASCAL.pth", "iog-resnet101", "PASCAL VOC",
                 _IOG_LICENCE, _IOG_HOME, drive_id="1GLZIQlQ-3KUWaGTQ1g_InVcqesGfGcpW"),
    WeightsEntry("iog-pascal-sbd-refinement", "IOG_PASCAL_SBD_REFINEMENT.pth", "iog-refine-resnet101",
                 "PASCAL VOC + SBD, with extra clicks", _IOG_LICENCE, _IOG_HOME,
                 drive_id="1VdOFUZZbtbYt9aIMugKhMKDA6EuqKG30"),
    WeightsEntry("dextr-pascal-sbd", "dextr_pascal-sbd.pth", "dextr-resnet101", "PASCAL VOC + SBD",
                 "GPL-3.0 (DEXTR-PyTorch); weights for research", "https://github.com/scaelles/DEXTR-PyTorch",
                 url="https://data.vision.ee.ethz.ch/csergi/share/DEXTR/dextr_pascal-sbd.pth"),
)}


def cache_dir() -> Path:
    """``NAPARI_IOG_CACHE`` when set, else the platform's cache folder for napari-iog
    (platformdirs: ``~/.cache/napari-iog`` on Linux, ``~/Library/Caches/napari-iog`` on macOS,
    ``%LOCALAPPDATA%\\napari-iog\\Cache`` on Windows)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-iog", appauthor=False))


def local_path(name: str) -> Path:
    entry = WEIGHTS[name]
    return (BUNDLED_DIR if entry.bundled else cache_dir()) / entry.filename


def is_present(name: str) -> bool:
    """A zoo model whose file is here (bundled or in the cache)."""
    return name in WEIGHTS and local_path(name).is_file()


def list_weights() -> list[dict]:
    """Every known model, with ``present`` and ``path`` for the local copy."""
    rows = []
    for entry in WEIGHTS.values():
        path = local_path(entry.name)
        rows.append({**asdict(entry), "source": entry.source, "present": path.is_file(), "path": str(path)})
    return rows


def manual_instructions(entry: WeightsEntry) -> str:
    """How to put the file in place by hand (when a download cannot be made from here)."""
    target = local_path(entry.name)
    how = (f"open https://drive.google.com/file/d/{entry.drive_id}/view in a browser and download it"
           if entry.drive_id else f"download it from {entry.source}")
    return (f"To get {entry.filename} ({entry.name}, {entry.arch}) by hand:\n  1. {how};\n  2. save it as "
            f"{target}\n     (or anywhere, and pass the file's path instead of the name).\n"
            f"The cache folder can be moved with {CACHE_ENV}.")


def _zoo_names() -> str:
    return ", ".join(WEIGHTS)


def resolve(model: str | os.PathLike) -> Path:
    """A zoo name or a path -> the checkpoint file to load. Never downloads."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    name = str(model)
    if name in WEIGHTS:
        target = local_path(name)
        if target.is_file():
            return target
        entry = WEIGHTS[name]
        if entry.bundled:
            raise FileNotFoundError(f"{name} should ship with napari-iog but {target} is missing: "
                                    "reinstall the package (pip install --force-reinstall napari-iog)")
        raise FileNotFoundError(f"{name} is not downloaded yet: run `napari-iog weights fetch {name}` "
                                f"(or 'Download' in the annotator); it is kept in {target.parent}")
    named = next((e for e in WEIGHTS.values() if e.filename == path.name), None)
    if named is not None:
        raise FileNotFoundError(f"{path} does not exist. {path.name} is the zoo model {named.name!r}: run "
                                f"`napari-iog weights fetch {named.name}`, then use the name {named.name!r} "
                                "in place of the file")
    if path.suffix or os.sep in name or "/" in name:
        raise FileNotFoundError(f"checkpoint not found: {path}. Give an existing file, or a zoo name: "
                                f"{_zoo_names()}")
    raise UnknownModelError(f"unknown model {name!r}: known names are {_zoo_names()}, or give a "
                            "checkpoint file's path")


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _recorded() -> dict[str, str]:
    path = cache_dir() / CHECKSUMS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _record(filename: str, sha256: str) -> None:
    records = _recorded()
    records[filename] = sha256
    from .io.atomic import atomic_write

    atomic_write(cache_dir() / CHECKSUMS_FILE, lambda f: json.dump(records, f, indent=1, sort_keys=True), mode="w")


def expected_sha256(filename: str) -> str | None:
    for entry in WEIGHTS.values():
        if entry.filename == filename and entry.sha256:
            return entry.sha256
    return _recorded().get(filename)


def fetch(name: str, progress: Callable[[int, int | None], None] | None = None, timeout: float = 60,
          cancel: threading.Event | None = None) -> Path:
    """Make ``name`` present in the cache and return its path.

    A file already there is used as it is (no network). Otherwise pooch downloads it (its direct
    URL, or from Google Drive through the confirm page Drive shows for large files) to a
    temporary file beside the target; it is checked (length, loadable as the expected
    architecture, sha256 when known) and moved into place; on any failure nothing is left.
    ``progress(done_bytes, total_bytes_or_None)`` is called as bytes arrive; setting ``cancel``
    stops the download with :class:`DownloadCancelled`.
    """
    if name not in WEIGHTS:
        raise UnknownModelError(f"unknown model {name!r}: known names are {_zoo_names()}")
    entry = WEIGHTS[name]
    target = local_path(name)
    if target.is_file():
        return target
    if entry.bundled:
        return resolve(name)        # raises: the package lost its own file
    if not entry.downloadable:
        raise ManualDownloadRequired(manual_instructions(entry))
    import pooch

    _remove_dead_downloads(target.parent, timeout)
    want = expected_sha256(entry.filename)
    downloader = _Downloader(entry, progress, timeout, cancel)
    try:
        pooch.retrieve(entry.url or _drive_url(entry), known_hash=f"sha256:{want}" if want else None,
                       fname=entry.filename, path=target.parent, downloader=downloader)
    except ValueError as err:       # pooch: the hash does not match
        raise DownloadError(f"{entry.filename}: its sha256 does not match the expected {want}; the file is "
                            f"corrupt or not the published one, and was not kept ({err})") from err
    _record(entry.filename, downloader.sha256)
    return target


def _remove_dead_downloads(folder: Path, timeout: float) -> None:
    """pooch's temporary files (``tmp*``) that a killed download left in the cache: one that has
    not grown for ten read timeouts belongs to no living download."""
    if not folder.is_dir():
        return
    now = time.time()
    for part in folder.glob("tmp*"):
        try:
            if part.is_file() and now - part.stat().st_mtime > 10 * timeout:
                part.unlink()
        except OSError:
            pass


class _Downloader:
    """pooch's downloader for a zoo entry: its direct URL, or Google Drive through the confirm
    page Drive shows for large files; streamed with progress and cancel. The length and the
    architecture are checked here, on pooch's temporary file, before pooch checks the hash and
    moves the file into place (pooch deletes the temporary file on any failure)."""

    def __init__(self, entry: WeightsEntry, progress, timeout: float, cancel: threading.Event | None):
        self.entry, self.progress, self.timeout, self.cancel = entry, progress, timeout, cancel
        self.sha256: str | None = None

    def __call__(self, url: str, output_file, pooch_instance=None, check_only: bool = False):
        entry = self.entry
        with open(output_file, "wb") as out:
            if entry.url:
                digest, size = _download(url, out, self.progress, self.timeout, self.cancel)
            else:
                digest, size = _download_drive(entry, out, self.progress, self.timeout, self.cancel)
        if entry.size is not None and size != entry.size:
            raise DownloadError(f"{entry.filename}: {size} bytes arrived, the published file has {entry.size}; "
                                "it was not kept")
        _check_loadable(Path(output_file), entry)
        self.sha256 = digest


def _opener() -> urllib.request.OpenerDirector:
    # Drive's confirm step may rely on a cookie set by its first answer.
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def _download(url: str, out, progress, timeout: float, cancel: threading.Event | None = None,
              response=None) -> tuple[str, int]:
    """Stream ``url`` (or an already opened ``response``) into ``out``; returns (sha256, bytes)."""
    digest = hashlib.sha256()
    done = 0
    try:
        if response is None:
            response = _opener().open(url, timeout=timeout)
        with response:
            total = response.headers.get("Content-Length")
            total = int(total) if total is not None else None
            while block := response.read(1 << 20):
                if cancel is not None and cancel.is_set():
                    raise DownloadCancelled(f"the download of {url} was cancelled; nothing was kept")
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress:
                    progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    except (urllib.error.URLError, OSError, ValueError) as err:     # OSError: a full disk too
        raise DownloadError(f"downloading {url} failed: {err}; nothing was kept") from err
    if total is not None and done != total:
        raise DownloadError(f"downloading {url} stopped after {done} of {total} bytes (truncated)")
    return digest.hexdigest(), done


class _DriveConfirmForm(HTMLParser):
    """The form of Drive's "can't scan this file for viruses" page: its action and fields."""

    def __init__(self):
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._in_form = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and ("download" in (attrs.get("id") or "") or "download" in (attrs.get("action") or "")):
            self.action, self._in_form = attrs.get("action"), True
        elif tag == "input" and self._in_form and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False


def _drive_url(entry: WeightsEntry) -> str:
    return f"{DRIVE_DOWNLOAD_URL}?{urllib.parse.urlencode({'export': 'download', 'id': entry.drive_id})}"


def _download_drive(entry: WeightsEntry, out, progress, timeout: float,
                    cancel: threading.Event | None) -> tuple[str, int]:
    url = _drive_url(entry)
    opener = _opener()
    try:
        response = opener.open(url, timeout=timeout)
        if "text/html" in response.headers.get("Content-Type", ""):
            page = response.read().decode("utf-8", "replace")
            response.close()
            form = _DriveConfirmForm()
            form.feed(page)
            if not form.action:
                raise DownloadError(f"Google Drive answered with a page instead of {entry.filename} (often: too "
                                    "many downloads of this file today; try again later).\n"
                                    + manual_instructions(entry))
            action = urllib.parse.urljoin(url, form.action)
            url = f"{action}?{urllib.parse.urlencode(form.fields)}"
            response = opener.open(url, timeout=timeout)
            if "text/html" in response.headers.get("Content-Type", ""):
                response.close()
                raise DownloadError(f"Google Drive did not release {entry.filename} after its confirm page.\n"
                                    + manual_instructions(entry))
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DownloadError(f"downloading {entry.filename} from Google Drive failed: {err}") from err
    return _download(url, out, progress, timeout, cancel, response=response)


def _check_loadable(path: Path, entry: WeightsEntry) -> None:
    from .models.checkpoint import CheckpointError, read_checkpoint

    try:
        checkpoint = read_checkpoint(path)
    except CheckpointError as err:
        raise DownloadError(f"the downloaded {entry.filename} is not a usable checkpoint: {err}") from err
    if checkpoint["arch"] != entry.arch:
        raise DownloadError(f"the downloaded {entry.filename} holds a {checkpoint['arch']} network, "
                            f"not the expected {entry.arch}")


def verify(path: str | os.PathLike) -> dict:
    """Load a checkpoint (a path or a zoo name), check it against what is known of it, and
    record its sha256 the first time. Raises a CheckpointError/DownloadError when it does not
    verify; returns a report (arch, parameters, sha256, status)."""
    from .models.checkpoint import read_checkpoint

    file = resolve(path)
    checkpoint = read_checkpoint(file)
    digest = sha256_of(file)
    known = expected_sha256(file.name)
    entry = next((e for e in WEIGHTS.values() if e.filename == file.name), None)
    if entry is not None and checkpoint["arch"] != entry.arch:
        raise DownloadError(f"{file} holds a {checkpoint['arch']} network; {entry.name} is {entry.arch}")
    if known and known != digest:
        raise DownloadError(f"{file}: sha256 {digest} differs from the recorded {known}; the file changed "
                            "or is corrupt")
    status = "sha256 matches" if known else "sha256 recorded (first verification)"
    if entry is not None and not known:
        _record(file.name, digest)
    elif entry is None:
        status = "not a zoo file; sha256 computed"
    n_params = sum(int(t.numel()) for t in checkpoint["state_dict"].values())
    return {"path": str(file), "arch": checkpoint["arch"], "state_dict_values": n_params, "sha256": digest,
            "status": status, "zoo_name": entry.name if entry else None, "card": checkpoint["card"]}


def finetuned_dir() -> Path:
    """Where the fine-tune widget saves its models (unless told another file)."""
    return cache_dir() / "finetuned"


def list_finetuned() -> list[Path]:
    """The models the fine-tune widget saved in the cache, newest first."""
    from .models.checkpoint import STATE_SUFFIX

    folder = finetuned_dir()
    files = [p for p in folder.glob("*.pt") if not p.name.endswith(STATE_SUFFIX)] if folder.is_dir() else []
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


def remove_finetuned(name: str | os.PathLike) -> list[Path]:
    """Delete a fine-tuned model of the cache (by file name or path) and its resume state.
    Files outside the cache's fine-tuned folder are never touched."""
    from .models.checkpoint import state_path

    folder = finetuned_dir().resolve()
    path = Path(name)
    path = (path if path.is_absolute() else folder / path.name).resolve()
    if path.parent != folder:
        raise ValueError(f"{name}: only fine-tuned models in {folder} are removed here")
    if not path.is_file():
        known = ", ".join(p.name for p in list_finetuned()) or "none"
        raise FileNotFoundError(f"{path.name} is not a fine-tuned model in {folder} (there: {known})")
    state = state_path(path)
    removed = [path] + ([state] if state.is_file() else [])
    for p in removed:
        p.unlink()
    return removed
