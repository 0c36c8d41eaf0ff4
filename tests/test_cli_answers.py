"""What the command line answers a user who gets something wrong: refused before any work,
named plainly, nothing written."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_iog import IOGPredictor, build_model, save_model, zoo
from napari_iog import geometry as G
from napari_iog.cli import main
from napari_iog.predictor import BlankImageWarning


def write_csv(path, rows, header="x0,y0,x1,y1"):
    path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in row) for row in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "tiny.pt"
    save_model(build_model("iog-resnet18", {"psp_channels": 16, "head_channels": 8}, seed=0), path,
               card={"name": "tiny", "base": "/home/trainer/runs/secret.pt"})
    return path


def test_predict_refuses_an_output_format_it_does_not_write(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((60, 60, 3), np.uint8))
    boxes = write_csv(tmp_path / "b.csv", [(5, 5, 40, 40)])
    assert main(["predict", str(tmp_path / "img.tif"), "--boxes", str(boxes), "--model", "nowhere.pt",
                 "--out", str(tmp_path / "labels.png")]) == 1
    err = capsys.readouterr().err
    assert "labels.png" in err and ".tif" in err and ".json" in err
    assert not (tmp_path / "labels.png").exists()


def test_export_refuses_a_photo_offered_as_labels(tmp_path, capsys):
    photo = (np.random.default_rng(0).random((40, 50, 4)) * 255).astype(np.uint8)
    Image.fromarray(photo, "RGBA").save(tmp_path / "photo.png")
    assert main(["export", str(tmp_path / "photo.png"), "--out", str(tmp_path / "objects.json")]) == 1
    assert "looks like a photo" in capsys.readouterr().err and not (tmp_path / "objects.json").exists()
    np.save(tmp_path / "photo.npy", photo)
    assert main(["export", str(tmp_path / "photo.npy"), "--out", str(tmp_path / "objects.json")]) == 1
    assert "colour image" in capsys.readouterr().err and not (tmp_path / "objects.json").exists()
    np.save(tmp_path / "negative.npy", np.array([[0, -3], [1, 2]], np.int32))
    assert main(["export", str(tmp_path / "negative.npy"), "--out", str(tmp_path / "n.tif")]) == 1
    assert "negative" in capsys.readouterr().err


def test_a_stack_without_planes_is_named_a_stack(tmp_path, tiny_model, capsys):
    np.save(tmp_path / "stack.npy", np.zeros((5, 303, 320), np.uint8))
    boxes = write_csv(tmp_path / "b.csv", [(5, 5, 40, 40)])
    assert main(["predict", str(tmp_path / "stack.npy"), "--boxes", str(boxes), "--model", str(tiny_model),
                 "--out", str(tmp_path / "labels.tif"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "stack" in err and "plane" in err and "outside" not in err


def test_weights_verify_is_short_and_keeps_the_trainers_paths_to_itself(tiny_model, capsys):
    assert main(["weights", "verify", str(tiny_model)]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 10 and "/home/trainer" not in out and "secret.pt" in out
    assert main(["weights", "verify", str(tiny_model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["arch"] == "iog-resnet18"


def test_weights_help_describes_each_verb(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["weights", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for verb in ("list", "fetch NAME", "verify PATH", "remove FILE"):
        assert verb in out


def test_fine_tuned_models_are_listed_and_removed(tmp_path, monkeypatch, tiny_model, capsys):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "finetuned"
    folder.mkdir(parents=True)
    (folder / "cells-1.pt").write_bytes(tiny_model.read_bytes())
    (folder / "cells-1.pt.state.pt").write_bytes(b"resume")
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "cells-1.pt" in out and "state" not in out.split("fine-tuned")[1]
    assert main(["weights", "remove", str(tmp_path / "elsewhere.pt")]) == 1          # outside the cache
    assert main(["weights", "remove", "cells-1.pt"]) == 0
    assert not list(folder.iterdir())


def test_a_too_thin_box_says_its_size_plainly():
    with pytest.raises(G.ClickError) as err:
        G.box_from_corners([(10, 5), (10, 245)], (300, 300))
    assert "1 x 241 pixels" in str(err.value) and "zero" not in str(err.value)


def test_a_blank_image_gets_a_word(tiny_model):
    p = IOGPredictor(tiny_model, device="cpu", precision="float32", warmup=False)
    with pytest.warns(BlankImageWarning, match="blank"):
        p.predict(np.zeros((100, 100, 3), np.uint8), corners=((10, 10), (90, 90)), inside=(50, 50))


@pytest.mark.parametrize("args, said", [
    (["evaluate", "--dataset", "grabcut", "--limit", "0"], "--limit: must be at least 1, not 0"),
    (["evaluate", "--dataset", "grabcut", "--max-clicks", "-5"], "--max-clicks: must be at least 3, not -5"),
    (["evaluate", "--dataset", "grabcut", "--max-clicks", "1"], "--max-clicks: must be at least 3, not 1"),
    (["evaluate", "--dataset", "grabcut", "--max-clicks", "many"], "'many' is not a whole number"),
    (["predict", "i.tif", "--boxes", "b.csv", "--out", "o.tif", "--batch-size", "0"],
     "--batch-size: must be at least 1"),
])
def test_numbers_out_of_range_are_refused_before_any_work(args, said, capsys):
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2 and said in capsys.readouterr().err


def test_fetching_an_unknown_model_draws_no_progress_bar(capsys):
    assert main(["weights", "fetch", "nope"]) == 1
    captured = capsys.readouterr()
    assert "unknown model 'nope'" in captured.err and "napari-iog-default" in captured.err
    assert "B/s" not in captured.err + captured.out


def test_a_text_file_as_weights_is_named_for_what_it_is(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("a,b\n1,2\n")
    assert main(["weights", "verify", str(text)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a readable PyTorch checkpoint" in err and "another kind of file" in err


def test_a_one_pixel_box_in_a_file_is_said_of_the_box(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((60, 60, 3), np.uint8))
    boxes = write_csv(tmp_path / "b.csv", [(10, 10, 10, 10)])
    assert main(["predict", str(tmp_path / "img.tif"), "--boxes", str(boxes), "--out", str(tmp_path / "o.tif")]) == 1
    err = capsys.readouterr().err
    assert "b.csv line 2: the box covers only 1 x 1 pixels" in err and "click" not in err
    assert not (tmp_path / "o.tif").exists()


def test_every_evaluate_option_has_help(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    for option in ("--max-clicks", "--device", "--out", "--limit", "--dataset"):
        after = text.split(option, 1)[1].split("\n  --", 1)[0]
        assert len(after.split()) >= 3, option                 # more than the metavar
    assert "sstem" in text and "dsb2018" in text


def test_held_out_domains_are_scored_by_name(tmp_path, monkeypatch):
    from napari_iog.cli import _evaluation_instances
    from napari_iog.training.sources import HELD_OUT_DOMAINS

    assert set(HELD_OUT_DOMAINS) == {"sstem", "cvppp", "dsb2018", "monuseg", "cwfid"}
    with pytest.raises(FileNotFoundError):
        _evaluation_instances("sstem", str(tmp_path))            # not there: a clear missing-data error
