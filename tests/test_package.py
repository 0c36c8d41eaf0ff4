"""The package installs as a napari plugin, its core stays free of napari and Qt, and the house
keeps its shape: layers import only downward, no module over 500 lines, no class over 300."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def test_manifest_validates_with_npe2():
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-iog"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_npe2_lists_the_plugin():
    listing = subprocess.run([sys.executable, "-m", "npe2", "list"], capture_output=True, text=True)
    assert "napari-iog" in listing.stdout

    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover()
    assert "napari-iog" in {m.name for m in pm.iter_manifests()}
    manifest = pm.get_manifest("napari-iog")
    assert {s.key for s in manifest.contributions.sample_data} == {"photo", "microscopy"}


def test_core_imports_without_napari_or_qt():
    code = ("import sys, napari_iog, napari_iog.models, napari_iog.predictor, napari_iog.session, "
            "napari_iog.batch, napari_iog.evaluation, napari_iog.training, napari_iog.cli, napari_iog.cli_evaluate, "
            "napari_iog.learning.learner, napari_iog.learning.background, napari_iog.learning.simulation; "
            "bad = [m for m in ('napari', 'qtpy', 'PyQt6', 'PySide6', 'magicgui') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sample_data_functions_return_images():
    from napari_iog._napari import sample_data as _sample_data

    (rgb, meta), = _sample_data.photo()
    assert rgb.ndim == 3 and rgb.shape[-1] == 3 and meta["rgb"]
    (gray, _), = _sample_data.microscopy()
    assert gray.ndim == 2 and gray.dtype == np.uint8


@pytest.mark.napari
def test_napari_opens_the_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-iog", "photo")
    assert viewer.layers[-1].rgb and viewer.layers[-1].data.shape == (512, 512, 3)


def test_numpy_only_modules_do_not_pull_in_torch():
    code = ("import sys, napari_iog, napari_iog.io, napari_iog.zoo, napari_iog.training.config, "
            "napari_iog.training.events; sys.exit(1 if 'torch' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


SOURCE = Path(__file__).resolve().parents[1] / "src" / "napari_iog"
#: what each part of the package must not import (DESIGN.md's layers: a click flows downward,
#: napari -> session -> prompt -> predictor -> labels; the learner above training, below napari)
FORBIDDEN = {
    "io": {"models", "geometry", "prompt", "preprocess", "predictor", "labels", "session", "propagation",
           "batch", "evaluation", "training", "cli", "zoo", "_napari"},
    "models": {"geometry", "prompt", "predictor", "labels", "session", "propagation", "batch", "evaluation",
               "training", "cli", "_napari"},
    "geometry": {"prompt", "predictor", "labels", "session", "propagation", "batch", "evaluation", "training",
                 "cli", "_napari"},
    "prompt": {"predictor", "labels", "session", "propagation", "batch", "evaluation", "training", "cli", "_napari"},
    "predictor": {"labels", "session", "propagation", "batch", "evaluation", "training", "cli", "_napari"},
    "labels": {"predictor", "session", "propagation", "batch", "evaluation", "training", "cli", "_napari"},
    "propagation": {"session", "batch", "evaluation", "training", "cli", "_napari"},
    "session": {"batch", "evaluation", "training", "cli", "_napari"},
    "batch": {"session", "evaluation", "training", "cli", "_napari"},
    "evaluation": {"session", "labels", "batch", "training", "cli", "_napari"},
    "training": {"session", "labels", "batch", "cli", "_napari"},
    "cli": {"_napari"},
    "cli_evaluate": {"_napari"},
    "cli_common": {"_napari"},
    "learning": {"session", "labels", "batch", "cli", "_napari"},
}
for _lower in ("io", "models", "geometry", "prompt", "predictor", "labels", "propagation", "session", "batch",
               "evaluation", "training"):
    FORBIDDEN[_lower] = FORBIDDEN[_lower] | {"learning"}     # the learner sits above training


def _package_imports(path: Path) -> set[str]:
    """The top-level parts of napari_iog that a module imports (``from ..labels import x`` -> labels)."""
    parts = path.relative_to(SOURCE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(parts[:-node.level])          # the module's own name, then one package per level
            names = (node.module or "").split(".") if node.module else [a.name for a in node.names]
            target = (base + [n for n in names if n])
            if target:
                found.add(target[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("napari_iog."):
            found.add(node.module.split(".")[1])
    return found


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for path in SOURCE.rglob("*.py"):
        part = path.relative_to(SOURCE).parts[0].removesuffix(".py")
        bad = _package_imports(path) & FORBIDDEN.get(part, set())
        if bad:
            wrong.append(f"{path.relative_to(SOURCE)} imports {sorted(bad)}")
    assert not wrong, wrong


def test_no_module_over_500_lines_and_no_class_over_300():
    too_long = []
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 500:
            too_long.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 300:
                too_long.append(f"{path.name}: class {node.name} has {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (pip install -e .[testing])")
def test_ruff_finds_nothing_in_src_and_tests():
    root = SOURCE.parents[1]
    result = subprocess.run(["ruff", "check", "src", "tests", "benchmarks", "scripts"], cwd=root,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout

