"""Bad options and outputs on the command line (issue 18, items 19, 20, 22): each gets a
one-line error before any work, never a traceback and never a silent wrong result."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import tifffile

from blastoseg.cli import main


@pytest.fixture
def stack_tzyx(tmp_path):
    path = tmp_path / "planes.tif"
    data = np.random.default_rng(0).integers(0, 255, (2, 4, 64, 64), dtype=np.uint8)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZYX"})
    return path


@pytest.fixture
def frame(tmp_path):
    path = tmp_path / "frame.tif"
    tifffile.imwrite(path, np.random.default_rng(1).integers(0, 255, (64, 64), np.uint8))
    return path


def _no_model(monkeypatch):
    """Fail the test if any predictor is built: the error must come before the work."""
    from blastoseg.predict.base import PredictorBase

    def refuse(self, *a, **k):
        raise AssertionError("a model was loaded before the bad option was refused")

    monkeypatch.setattr(PredictorBase, "__init__", refuse)


ARGPARSE_CASES = [
    (["--plane", "-1"], "planes count from 0"),
    (["--threshold", "5"], "from 0 to 1"),
    (["--threshold", "nan"], "from 0 to 1"),
    (["--threshold", "-1"], "from 0 to 1"),
    (["--batch-size", "0"], ">= 1"),
]


@pytest.mark.parametrize("kind", ["amodal", "brightfield", "overlap"])
@pytest.mark.parametrize("extra, message", ARGPARSE_CASES)
def test_bad_option_values_are_refused_by_the_parser(kind, extra, message, frame, tmp_path,
                                                     capsys, monkeypatch):
    if kind != "amodal" and extra[0] == "--batch-size":
        pytest.skip("only the amodal verb takes --batch-size")
    if kind == "overlap" and extra[0] == "--threshold":
        pytest.skip("the overlap verb has --overlap-threshold instead")
    _no_model(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        main(["segment", kind, str(frame), "--out", str(tmp_path / "out"), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["amodal", "brightfield", "overlap"])
def test_a_plane_the_stack_does_not_have(kind, stack_tzyx, tmp_path, capsys):
    code = main(["segment", kind, str(stack_tzyx), "--out", str(tmp_path / "out"),
                 "--plane", "7"])
    assert code == 2
    assert "--plane 7: the stack has 4 focal planes (0 to 3)" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["amodal", "brightfield"])
def test_outputs_are_checked_before_the_work(kind, frame, tmp_path, capsys, monkeypatch):
    _no_model(monkeypatch)
    with pytest.raises(SystemExit):
        main(["segment", kind, str(frame), "--out", ""])
    assert "output folder is empty" in capsys.readouterr().err
    a_file = tmp_path / "taken.txt"
    a_file.write_text("x")
    assert main(["segment", kind, str(frame), "--out", str(a_file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    done = tmp_path / "done"
    (done / "dataset").mkdir(parents=True)
    (done / "counts.csv").write_text("frame,cell_count\n")
    assert main(["segment", kind, str(frame), "--out", str(done)]) == 2
    assert "exists already" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root can write into read-only folders")
def test_a_read_only_output_is_refused_before_the_work(frame, tmp_path, capsys, monkeypatch):
    _no_model(monkeypatch)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["segment", "amodal", str(frame), "--out", str(ro / "out")]) == 2
        assert "read-only" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_delete_without_a_terminal_keeps_the_model(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code = main(["models", "delete", "amodal-default"])
    assert code == 1
    out = capsys.readouterr().out
    assert "kept 'amodal-default'" in out and "--yes" in out
