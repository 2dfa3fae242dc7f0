"""Smaller defects of issue 18, item 22: a LabelMe polygon with NaN, temp files a killed run
left, a broken user card that could not be deleted."""

from __future__ import annotations

import json

import pytest

from blastoseg.errors import DatasetFormatError


def test_a_labelme_polygon_with_nan_is_a_clear_error(tmp_path):
    import numpy as np
    from PIL import Image

    from blastoseg.io.labelme import import_labelme

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "a.json").write_text(json.dumps({
        "imagePath": "a.png", "imageHeight": 32, "imageWidth": 32,
        "shapes": [{"label": "cell", "shape_type": "polygon",
                    "points": [[1, 1], [20, float("nan")], [5, 20]]}]}))
    with pytest.raises(DatasetFormatError, match="shape #0 .*NaN or infinite"):
        import_labelme(tmp_path, tmp_path / "out")


def test_a_training_job_removes_temp_files_a_killed_run_left(tmp_path):
    from _toy_task import make_toy_dataset  # registers the "toy" kind
    from blastoseg.train import create_job, run_job

    data = make_toy_dataset(tmp_path / "data")
    job = create_job("toy", data, tmp_path / "job", epochs=1, name="toy-temp-files")
    (job / "checkpoints").mkdir(exist_ok=True)
    left = job / "checkpoints" / ".last.pt.abc123.tmp"
    left.write_bytes(b"x" * 1000)
    assert run_job(job, stdout=False, handle_signals=False) == 0
    assert not left.exists()


def test_a_user_model_with_a_broken_card_can_be_deleted(tmp_path, monkeypatch, capsys):
    from blastoseg.cli import main
    from blastoseg.weights import user_models_dir

    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path / "home"))
    folder = user_models_dir()
    folder.mkdir(parents=True)
    (folder / "broken.json").write_text("{ not json")
    (folder / "broken.safetensors").write_bytes(b"\0" * 16)
    assert main(["models", "delete", "broken", "--yes"]) == 0
    assert not (folder / "broken.json").exists()
    assert not (folder / "broken.safetensors").exists()
    assert main(["models", "delete", "amodal-default", "--yes"]) == 2  # bundled: refused


def test_one_unreadable_frame_does_not_stop_a_folder(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from blastoseg.cli import main
    from blastoseg.io import read_images
    from blastoseg.io.images import ImageReadError

    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(4):
        Image.fromarray(np.full((96, 96), 40 * t, np.uint8)).save(folder / f"frame_{t}.png")
    (folder / "frame_2.png").write_bytes(b"not a png")  # a damaged export
    with pytest.raises(ImageReadError):
        read_images(folder)  # strict by default (the library's choice)
    stack = read_images(folder, skip_unreadable=True)
    assert stack.data.shape[0] == 3 and [p.name for p, _ in stack.skipped] == ["frame_2.png"]
    assert stack.frame_numbers == [0, 1, 3]
    out = tmp_path / "out"
    assert main(["segment", "brightfield", str(folder), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped frame_2.png" in err and "1 frame(s) left out" in err
    assert (out / "counts.csv").read_text().count("\n") == 4  # header + 3 frames
