"""The command line: help, version, errors without tracebacks."""

import subprocess
import sys

import pytest

from blastoseg import __version__
from blastoseg.cli import main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in ("synth", "demo", "import"):
        assert verb in out


def test_console_script_is_installed():
    proc = subprocess.run(
        [sys.executable, "-m", "blastoseg.cli", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_user_error_is_a_message_not_a_traceback(tmp_path, capsys):
    missing = tmp_path / "nope"
    code = main(["import", "labelme", str(missing), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "nope" in err and "Traceback" not in err


def test_synth_embryos_writes_a_dataset_pycocotools_opens(tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "synth"
    assert main(["synth", "embryos", "--n", "3", "--seed", "1", "--out", str(out), "--size", "160"]) == 0
    coco = COCO(str(out / "annotations.json"))
    assert len(coco.getImgIds()) == 3
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns and all(coco.annToMask(a).sum() > 0 for a in anns)
    # a second run into the same folder refuses instead of overwriting
    assert main(["synth", "embryos", "--n", "1", "--seed", "2", "--out", str(out), "--size", "160"]) == 2


def test_synth_timelapse_records_videos(tmp_path):
    from blastoseg.io import read_dataset

    out = tmp_path / "lapse"
    args = ["synth", "embryos", "--n", "1", "--seed", "3", "--out", str(out), "--size", "128",
            "--timelapse", "10"]
    assert main(args) == 0
    ds = read_dataset(out)
    videos = ds.videos()
    assert len(videos) == 1 and len(next(iter(videos.values()))) == 10
    counts = [len(ds.instances(i)) for i in next(iter(videos.values()))]
    assert counts[0] == 1 and counts == sorted(counts)


def test_demo_prints_a_table_and_writes_outputs(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--frames", "6"]) == 0
    out = capsys.readouterr().out
    assert "cells" in out and "cleavage" in out
    for name in ("per_frame.csv", "per_cell.csv", "timelapse.tif", "overview.png",
                 "dataset/annotations.json"):
        assert (tmp_path / "demo" / name).is_file(), name
    rows = (tmp_path / "demo" / "per_frame.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 6


def test_train_kind_then_models_list_show_rename_delete(tmp_path, monkeypatch, capsys):
    import json

    from _toy_task import make_toy_dataset  # registers the "toy" kind

    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path / "home"))
    data = make_toy_dataset(tmp_path / "toydata")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"hyper": {"max_steps": 5, "batch_size": 8}}))
    code = main(["train", "toy", "--data", str(data), "--out", str(tmp_path / "job"),
                 "--config", str(config), "--name", "toy-cli", "--quiet"])
    assert code == 0
    assert (tmp_path / "job" / "events.jsonl").is_file()
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "toy-cli" in capsys.readouterr().out
    assert main(["models", "show", "toy-cli"]) == 0
    assert '"kind": "toy"' in capsys.readouterr().out
    assert main(["models", "rename", "toy-cli", "toy-renamed"]) == 0
    assert main(["models", "delete", "toy-renamed", "--yes"]) == 0
    capsys.readouterr()
    main(["models"])
    assert "toy-renamed" not in capsys.readouterr().out
    # running the finished job folder again is accepted (resume finds it done)
    assert main(["train", str(tmp_path / "job"), "--quiet"]) in (0,)
