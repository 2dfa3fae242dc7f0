"""Training under torchrun as DDP: 2 CPU processes (gloo) through ``blastoseg train JOB
--nproc 2`` in a subprocess: one event stream from rank 0 with the world size, every step
once, a finished and registered model, and the loss curve of one process with the same
global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import _toy_task  # noqa: E402  (registers the "toy" kind)
from blastoseg.train import create_job, read_events, run_job  # noqa: E402

pytestmark = pytest.mark.slow


def _env(home: Path) -> dict:
    src = Path(__import__("blastoseg").__file__).parents[1]
    return {**os.environ, "BLASTOSEG_HOME": str(home), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(src), str(TESTS)])}


def _job(tmp_path, name, batch_size):
    data = _toy_task.make_toy_dataset(tmp_path / "data", n=64)
    return create_job("toy", data, tmp_path / name, val_data=data, task_module="_toy_task",
                      epochs=None, device="cpu",
                      hyper={"batch_size": batch_size, "lr": 3e-2, "log_every": 1,
                             "max_steps": 12, "ckpt_every": 6, "schedule": "constant"})


def test_two_process_gloo_ddp_matches_one_process(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.chdir(tmp_path)  # the toy task is installed code, not the job's own file
    ddp_dir = _job(tmp_path, "ddp", batch_size=8)  # 2 x 8 = a global batch of 16
    proc = subprocess.run(
        [sys.executable, "-m", "blastoseg", "train", str(ddp_dir), "--nproc", "2", "--quiet"],
        env=_env(home), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = read_events(ddp_dir)
    start = events[0]
    assert start["event"] == "start" and start["world_size"] == 2
    assert start["distributed_backend"] == "gloo"
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == list(range(1, 13))  # rank 0 alone writes: each step once
    assert events[-1]["event"] == "done" and events[-1]["model"]
    assert (ddp_dir / "output").is_dir() and (ddp_dir / "checkpoints" / "last.pt").is_file()

    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path / "home1"))
    one_dir = _job(tmp_path, "one", batch_size=16)
    assert run_job(one_dir, stdout=False, handle_signals=False) == 0
    one = [e["loss"] for e in read_events(one_dir) if e["event"] == "step"]
    two = [e["loss"] for e in events if e["event"] == "step"]
    assert "world_size" in read_events(one_dir)[0] and read_events(one_dir)[0]["world_size"] == 1
    # the same weights, and each step's global batch holds the same samples (the sampler
    # deals out the single process's permutation): the same curve up to float rounding
    assert two == pytest.approx(one, rel=1e-4)
    assert two[-1] < 0.3 * two[0]
