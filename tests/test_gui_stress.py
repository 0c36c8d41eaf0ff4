"""A short random annotation session in a real viewer (the long one: benchmarks/gui_stress.py)."""

import pytest

napari = pytest.importorskip("napari")

from gui_stress import start_stress  # noqa: E402

pytestmark = pytest.mark.napari


@pytest.mark.parametrize("seed", [1, 2])
def test_a_random_session_keeps_every_invariant(make_napari_viewer, seed):
    stress = start_stress(make_napari_viewer(), seed=seed)
    report = stress.run(40)
    assert report.violations == [] and report.errors == []
    assert report.steps == 40 and report.commits >= 1     # the run did commit objects
