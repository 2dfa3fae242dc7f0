"""A training job folder cannot run code it brings with it (issue 18, item 18)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from blastoseg.train.monitor import SAFE_MAIN
from blastoseg.train.task import TrainingError, get_task


def test_a_task_module_in_the_job_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "evil_task.py").write_text(
        "open('PWNED', 'w').write('x')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m` would put the cwd first
    with pytest.raises(TrainingError, match="may not bring its own code"):
        get_task("amodal", "evil_task")
    assert not (tmp_path / "PWNED").exists()


def test_an_uninstalled_task_module_is_refused():
    with pytest.raises(TrainingError, match="not installed"):
        get_task("amodal", "no_such_module_anywhere")


def test_an_installed_task_module_still_runs():
    assert get_task("brightfield", "blastoseg.train.brightfield_task").kind == "brightfield"


def test_the_launched_process_does_not_import_from_the_job_folder(tmp_path):
    (tmp_path / "blastoseg.py").write_text("raise SystemExit('HIJACKED')\n")
    proc = subprocess.run([sys.executable, "-c", SAFE_MAIN, "--version"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert "HIJACKED" not in proc.stdout + proc.stderr
    assert proc.stdout.startswith("blastoseg ")
