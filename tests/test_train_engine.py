"""Training engine: loop, events, checkpoints, cancel (signal and in-process), resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from blastoseg.train import (
    EXIT_BAD_JOB,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    JobError,
    TrainingError,
    TrainJob,
    create_job,
    export_job,
    find_checkpoint,
    load_checkpoint,
    read_events,
    run_job,
)
from blastoseg.weights import get_model, list_models, load_weights

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import _toy_task  # noqa: E402  (registers the "toy" kind)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path / "home"))


def _job(tmp_path, name="job", **kw):
    data = _toy_task.make_toy_dataset(tmp_path / "data")
    hyper = {"batch_size": 8, "lr": 3e-2, "log_every": 1, "ckpt_every": 10,
             "schedule": "constant"}
    hyper.update(kw.pop("hyper", {}))
    kw.setdefault("epochs", 4)
    return create_job("toy", data, tmp_path / name, val_data=data, hyper=hyper, **kw)


def test_loss_falls_and_events(tmp_path):
    job_dir = _job(tmp_path)
    t = time.time()
    assert run_job(job_dir, stdout=False, handle_signals=False) == EXIT_OK
    assert time.time() - t < 30
    events = read_events(job_dir)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert {"step", "validation", "checkpoint"} <= set(kinds)
    for e in events:
        assert isinstance(e["time"], float) and e["time"] > 1e9
        assert isinstance(e["step"], int) and isinstance(e["epoch"], int)
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 33))  # 64 samples / 8 x 4 epochs
    assert all(e["lr"] > 0 and "l1" in e["losses"] and e["eta_s"] is not None for e in steps)
    first = sum(e["loss"] for e in steps[:4]) / 4
    last = sum(e["loss"] for e in steps[-4:]) / 4
    assert last < 0.3 * first, (first, last)
    ckpts = [e for e in events if e["event"] == "checkpoint"]
    assert [e["step"] for e in ckpts] == [10, 20, 30, 32]
    assert Path(ckpts[0]["path"]).is_file()
    vals = [e for e in events if e["event"] == "validation"]
    assert len(vals) == 4 and all("mse" in e["metrics"] for e in vals)
    done = events[-1]
    assert done["step"] == 32 and done["epoch"] == 4
    weights, card = Path(done["weights"]), Path(done["card"])
    assert weights.suffix == ".safetensors" and weights.is_file()
    card_data = json.loads(card.read_text())
    assert card_data["kind"] == "toy" and card_data["metrics"]["mse"] < 1.0
    assert card_data["training_data"][0]["count"] == 64
    assert len(card_data["sha256"]) == 64
    # registered in the user registry (BLASTOSEG_HOME), loadable as a state dict
    entry = get_model(done["model"])
    assert entry.source == "user" and entry.kind == "toy"
    state = load_weights(entry.weights_path)
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    # running a finished job again re-uses the registered model, no duplicate
    assert run_job(job_dir, stdout=False, handle_signals=False) == EXIT_OK
    assert len(list_models(kind="toy")) == 1


def test_stdout_lines_are_events(tmp_path, capsys):
    job_dir = _job(tmp_path, epochs=1)
    assert run_job(job_dir, stdout=True, handle_signals=False) == EXIT_OK
    lines = capsys.readouterr().out.strip().splitlines()
    parsed = [json.loads(line) for line in lines]
    assert parsed == read_events(job_dir)


def test_in_process_cancel_then_resume_matches_uninterrupted(tmp_path):
    hyper = {"max_steps": 12, "ckpt_every": 0, "schedule": "cosine", "grad_accum": 2}
    ref = _job(tmp_path, "ref", epochs=None, hyper=hyper)
    assert run_job(ref, stdout=False, handle_signals=False) == EXIT_OK

    job_dir = _job(tmp_path, "cut", epochs=None, hyper=hyper)
    stop = threading.Event()

    def on_event(e):
        if e["event"] == "step" and e["step"] == 5:
            stop.set()

    rc = run_job(job_dir, stdout=False, cancel=stop, handle_signals=False, callback=on_event)
    assert rc == EXIT_CANCELLED
    events = read_events(job_dir)
    assert events[-1]["event"] == "cancelled" and events[-1]["step"] == 5
    assert events[-2]["event"] == "checkpoint" and events[-2]["reason"] == "cancel"
    assert load_checkpoint(find_checkpoint(job_dir))["step"] == 5

    assert run_job(job_dir, stdout=False, handle_signals=False) == EXIT_OK
    events = read_events(job_dir)
    starts = [e for e in events if e["event"] == "start"]
    assert starts[-1]["resumed"] and starts[-1]["resumed_from_step"] == 5
    later = [e["step"] for e in events[events.index(starts[-1]):] if e["event"] == "step"]
    assert later == list(range(6, 13))
    # resuming restores optimizer, RNG and data order: same weights as the uninterrupted run
    a = load_weights(ref / "checkpoints" / "best.safetensors")
    b = load_weights(job_dir / "checkpoints" / "best.safetensors")
    ra, rb = load_checkpoint(find_checkpoint(ref)), load_checkpoint(find_checkpoint(job_dir))
    assert ra["step"] == rb["step"] == 12
    for key in ra["model"]:
        torch.testing.assert_close(ra["model"][key], rb["model"][key], rtol=0, atol=1e-6)
    assert set(a) == set(b)


def test_resume_in_the_middle_of_an_epoch_is_exact(tmp_path):
    """Issue 18 item 16: a resume from a mid-epoch checkpoint differed from the uninterrupted
    run when training drew random numbers (augmentation): each new data loader took a draw
    from torch's global RNG, so the resumed run's draws were shifted by one."""
    hyper = {"max_steps": 12, "ckpt_every": 0, "grad_accum": 2}
    ref = _job(tmp_path, "ref", epochs=None, hyper=hyper, config={"augment": True})
    assert run_job(ref, stdout=False, handle_signals=False) == EXIT_OK
    job_dir = _job(tmp_path, "cut", epochs=None, hyper=hyper, config={"augment": True})
    stop = threading.Event()

    def on_event(e):
        if e["event"] == "step" and e["step"] == 5:  # micro-batch 10: epoch 1, batch 2 of 8
            stop.set()

    assert run_job(job_dir, stdout=False, cancel=stop, handle_signals=False,
                   callback=on_event) == EXIT_CANCELLED
    assert load_checkpoint(find_checkpoint(job_dir))["micro_in_epoch"] == 2
    assert run_job(job_dir, stdout=False, handle_signals=False) == EXIT_OK
    ra, rb = load_checkpoint(find_checkpoint(ref)), load_checkpoint(find_checkpoint(job_dir))
    assert ra["step"] == rb["step"] == 12
    for key in ra["model"]:
        torch.testing.assert_close(ra["model"][key], rb["model"][key], rtol=0, atol=0)
    steps = {e["step"]: e["loss"] for e in read_events(ref) if e["event"] == "step"}
    resumed = {e["step"]: e["loss"] for e in read_events(job_dir) if e["event"] == "step"}
    assert all(resumed[s] == steps[s] for s in range(6, 13))


def test_sigterm_checkpoints_and_resume_continues(tmp_path):
    job_dir = _job(tmp_path, epochs=None,
                   hyper={"max_steps": 100000, "ckpt_every": 0, "ckpt_every_s": 0},
                   config={"sleep_s": 0.02})
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); import _toy_task; "
        f"from blastoseg.train import run_job; sys.exit(run_job({str(job_dir)!r}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "step" and event["step"] >= 3:
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_CANCELLED, err
    events = read_events(job_dir)
    cancelled = events[-1]
    assert cancelled["event"] == "cancelled" and "SIGTERM" in cancelled["reason"]
    cut = cancelled["step"]
    assert cut >= 3
    assert load_checkpoint(find_checkpoint(job_dir))["step"] == cut

    # resume in-process, for a few more steps
    job = json.loads((job_dir / "job.json").read_text())
    job["hyper"]["max_steps"] = cut + 4
    job["config"]["sleep_s"] = 0
    (job_dir / "job.json").write_text(json.dumps(job))
    assert run_job(job_dir, stdout=False, handle_signals=False) == EXIT_OK
    events = read_events(job_dir)
    start = [e for e in events if e["event"] == "start"][-1]
    assert start["resumed_from_step"] == cut
    steps = [e["step"] for e in events[events.index(start):] if e["event"] == "step"]
    assert steps == list(range(cut + 1, cut + 5))
    assert events[-1]["event"] == "done" and events[-1]["step"] == cut + 4


def test_time_budget_stops(tmp_path):
    job_dir = _job(tmp_path, epochs=None, time_budget_min=0.5 / 60, config={"sleep_s": 0.01},
                   hyper={"log_every": 5})
    t = time.time()
    assert run_job(job_dir, stdout=False, handle_signals=False) == EXIT_OK
    assert time.time() - t < 15
    done = read_events(job_dir, "done")[-1]
    assert done["step"] > 5 and done["elapsed_s"] >= 0.5


def test_bad_jobs_fail_clearly(tmp_path):
    assert run_job(tmp_path / "nope", stdout=False) == EXIT_BAD_JOB
    data = _toy_task.make_toy_dataset(tmp_path / "data")
    with pytest.raises(TrainingError, match="unknown model kind 'nokind'.*toy"):
        create_job("nokind", data, tmp_path / "x", epochs=1)
    with pytest.raises(JobError, match="how long"):
        create_job("toy", data, tmp_path / "x")
    with pytest.raises(JobError, match="dataset not found"):
        create_job("toy", tmp_path / "missing", tmp_path / "x", epochs=1)
    job_dir = tmp_path / "bad"
    job_dir.mkdir()
    (job_dir / "job.json").write_text('{"kind": "toy", "train_data": ["d"], "epoch": 3}')
    with pytest.raises(JobError, match="unknown field.*epoch"):
        TrainJob.load(job_dir)
    assert run_job(job_dir, stdout=False) == EXIT_BAD_JOB
    failed = read_events(job_dir)[-1]
    assert failed["event"] == "failed" and "epoch" in failed["message"]
    # a diverging loss ends as a "failed" event, not a traceback
    job_dir = _job(tmp_path, "nan", hyper={"lr": 1e30, "schedule": "constant"})
    assert run_job(job_dir, stdout=False, handle_signals=False) == EXIT_FAILED
    assert "learning rate" in read_events(job_dir)[-1]["message"]


def test_export_job_is_portable(tmp_path):
    src = _job(tmp_path, epochs=1)
    job = TrainJob.load(src)
    moved = export_job(job, tmp_path / "portable", copy_data=True)
    saved = json.loads((moved / "job.json").read_text())
    assert all(not Path(p).is_absolute() for p in saved["train_data"] + saved["val_data"])
    # move the folder somewhere else and delete the original data: it still runs
    final = tmp_path / "elsewhere" / "portable"
    final.parent.mkdir()
    moved.rename(final)
    import shutil

    shutil.rmtree(tmp_path / "data")
    assert run_job(final, stdout=False, handle_signals=False) == EXIT_OK


def test_read_events_tolerates_truncated_last_line(tmp_path):
    from blastoseg.train import EventWriter, parse_event_line

    path = tmp_path / "events.jsonl"
    with EventWriter(path, stream=None) as w:
        w.emit("start", step=0, message="hi")
        w.emit("step", step=1, loss=float("nan"), losses={"a": 1.0})
    with open(path, "a") as fh:
        fh.write('{"event": "step", "time": 1.0, "st')  # writer killed mid-line
    events = read_events(path)
    assert [e["event"] for e in events] == ["start", "step"]
    assert events[1]["loss"] is None  # NaN written as strict-JSON null
    assert parse_event_line("some library warning") is None
    with pytest.raises(ValueError):
        EventWriter(None, stream=None).emit("bogus")
