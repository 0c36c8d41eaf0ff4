"""A full disk at every writer, and the leftovers of a killed write: the previous file is
intact, the error names the file, nothing half-written stays (kills at random moments, many
times over: benchmarks/faults.py)."""

import errno
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ThresholdPredictor

from napari_iog import io, zoo
from napari_iog.cli import main as cli
from napari_iog.io import atomic
from napari_iog.labels import LabelsWriter
from napari_iog.models import build_model, save_model
from napari_iog.models.checkpoint import atomic_save


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write fails as a full disk makes it fail: when the data is flushed."""
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)


def labels_image():
    labels = np.zeros((64, 80), np.uint32)
    labels[5:20, 5:30], labels[30:60, 40:70] = 1, 2
    return labels


WRITERS = {
    "label tiff": lambda path: io.write_labels_tif(path, labels_image()),
    "coco": lambda path: io.write_coco(path, labels_image()),
    "model": lambda path: save_model(build_model("iog-resnet18", seed=0), path),
    "training state": lambda path: atomic_save({"step": 3}, path),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_full_disk_keeps_the_previous_file_and_says_so(writer, tmp_path, monkeypatch):
    path = tmp_path / ("out.json" if writer == "coco" else "out.tif" if writer == "label tiff" else "out.pt")
    path.write_bytes(b"the previous file")
    before = digest(path)

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(OSError, match="disk is full.*previous file is unchanged") as err:
        WRITERS[writer](path)
    assert str(path) in str(err.value)
    assert digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_the_cli_reports_a_full_disk_in_one_line(tmp_path, full_disk, capsys):
    labels = tmp_path / "labels.tif"
    np.save(tmp_path / "labels.npy", labels_image())
    assert cli(["export", str(tmp_path / "labels.npy"), "--out", str(labels)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("napari-iog: could not write") and "disk is full" in err and "Traceback" not in err
    assert not labels.exists()


def test_the_zoo_checksum_record_survives_a_full_disk(tmp_path, monkeypatch, full_disk):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))
    (tmp_path / zoo.CHECKSUMS_FILE).write_text(json.dumps({"a.pth": "00"}))
    with pytest.raises(OSError, match="previous file is unchanged"):
        zoo._record("b.pth", "11")
    assert json.loads((tmp_path / zoo.CHECKSUMS_FILE).read_text()) == {"a.pth": "00"}


class FailingStore(np.ndarray):
    """Labels whose second write fails half-way, as a chunked store on a full disk does."""

    fail = False

    def __setitem__(self, index, value):
        if FailingStore.fail:
            FailingStore.fail = False
            view = np.asarray(self)
            view[index][: value.shape[0] // 2] = value[: value.shape[0] // 2]   # some chunks landed
            raise OSError(errno.ENOSPC, "No space left on device")
        super().__setitem__(index, value)


def test_a_commit_that_cannot_be_written_leaves_the_labels_as_they_were():
    labels = np.zeros((40, 50), np.uint32).view(FailingStore)
    labels[2:8, 2:8] = 7
    writer = LabelsWriter(labels)
    before = np.array(labels)
    mask = np.ones((30, 40), bool)
    from napari_iog.geometry import Box

    FailingStore.fail = True
    with pytest.raises(OSError), writer.edit() as edit:
        writer.paint(edit, (), Box(0, 0, 29, 39), mask)
    np.testing.assert_array_equal(np.asarray(labels), before)
    assert writer.last_edit is None and writer.next_id == 8          # nothing to undo, no id spent


def test_the_annotator_turns_a_failed_write_into_a_notification(make_napari_viewer):
    pytest.importorskip("napari")
    from napari_iog._napari.annotator import Annotator

    viewer = make_napari_viewer()
    image = np.zeros((40, 50), np.uint8)
    image[10:30, 10:40] = 200
    layer = viewer.add_image(image)
    labels = viewer.add_labels(np.zeros((40, 50), np.uint32).view(FailingStore), name="objects")
    ann = Annotator(viewer, layer, ThresholdPredictor(), labels_layer=labels)
    messages = []
    ann.notified.connect(messages.append)
    ann.segment(((5, 5), (35, 45)), (20, 25))
    FailingStore.fail = True
    assert ann.act("commit") is None
    assert "could not be written" in messages[-1] and not np.asarray(labels.data).any()
    assert ann.session.ready                                    # the object is still there to commit
    assert ann.act("commit") == 1


def test_the_next_write_removes_what_a_killed_write_left(tmp_path):
    path = tmp_path / "labels.tif"
    code = ("import os, sys; from napari_iog.io import atomic_write; "
            "atomic_write(sys.argv[1], lambda f: (f.write(b'half'), f.flush(), os._exit(9)))")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert result.returncode == 9 and not path.exists()
    (leftover,) = tmp_path.glob(".labels.tif.*.part")               # killed mid-write: its part stays
    io.write_labels_tif(path, labels_image())
    assert not leftover.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]
    np.testing.assert_array_equal(io.read_labels(path), labels_image())


def test_a_fetch_clears_what_a_killed_download_left(tmp_path, monkeypatch):
    import os
    import time

    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))
    dead, alive = tmp_path / "tmpdead123", tmp_path / "tmpalive456"
    dead.write_bytes(b"half a download")
    alive.write_bytes(b"a download going on")
    old = time.time() - 3600
    os.utime(dead, (old, old))
    zoo._remove_dead_downloads(tmp_path, timeout=60)
    assert not dead.exists() and alive.exists()
