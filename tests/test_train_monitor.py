"""Background fine-tuning jobs without Qt: data checks before anything starts, launch as a
subprocess, live progress from events.jsonl, cancel (SIGTERM) with a checkpoint, resume to a
registered model whose card has the base model's metrics before fine-tuning; export / import."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from blastoseg.errors import DatasetFormatError
from blastoseg.train import JobError, TrainJob, find_checkpoint, run_job
from blastoseg.train.finetune import (
    check_dataset,
    create_finetune_job,
    export_job_folder,
    import_model,
)
from blastoseg.train.monitor import (
    PID_FILE,
    cancel_job,
    launch_job,
    read_progress,
    resume_job,
)
from blastoseg.weights import WeightsError, list_models, read_card

FAST = {"batch_size": 2, "val_frames": 2, "log_every": 1}


def _wait(job_dir, until, timeout=120.0, progress=None):
    end = time.time() + timeout
    while True:
        progress = read_progress(job_dir, progress)
        if until(progress):
            return progress
        assert time.time() < end, f"timed out: {progress.state} {progress.message}"
        time.sleep(0.25)


def _set_max_steps(job_dir: Path, steps: int) -> None:
    job = TrainJob.load(job_dir)
    job.hyper["max_steps"] = steps
    job.save(job_dir)


@pytest.fixture
def dataset_copy(tiny_models, tmp_path):
    _, data = tiny_models
    out = tmp_path / "data"
    shutil.copytree(data, out)
    return out


def _edit_annotations(folder: Path, edit) -> None:
    path = folder / "annotations.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_bad_datasets_give_clear_errors_before_any_process(dataset_copy, tmp_path):
    from PIL import Image

    from blastoseg.io.coco_rle import encode_mask

    good = dataset_copy
    info = check_dataset(good)
    assert info.n_images == 6 and info.n_annotations > 6
    job = tmp_path / "job"

    def fails(data, match, exc=DatasetFormatError, **kw):
        with pytest.raises(exc, match=match):
            create_finetune_job(data, job, base=kw.pop("base", "tiny-amodal"), epochs=1, **kw)
        assert not job.exists()  # nothing was written, nothing launched

    fails("", "no training data")
    fails(tmp_path / "nowhere", "does not exist")
    (tmp_path / "plain").mkdir()
    fails(tmp_path / "plain", "no annotations.json")
    fails(f"{good}, {tmp_path / 'plain'}", "no annotations.json")  # comma-separated: all checked
    fails(good, "no model named", WeightsError, base="no-such-model")
    fails(good, "exists already", JobError, name="tiny-amodal")
    fails(good, "either a number of epochs", JobError, minutes=5.0)

    def variant(name):
        folder = tmp_path / name
        shutil.copytree(good, folder)
        doc = json.loads((folder / "annotations.json").read_text())
        return folder, doc["images"][0]

    missing, first = variant("missing")
    (missing / first["file_name"]).unlink()
    fails(missing, "missing: images/synth_000000.png")
    fails(good, "missing", val_data=missing)  # the validation data is checked too

    resized, first = variant("resized")
    Image.fromarray(np.zeros((100, 128), np.uint8)).save(resized / first["file_name"])
    fails(resized, "differ in size from their masks.*100x128, its masks 128x128")

    unannotated, _ = variant("unannotated")
    _edit_annotations(unannotated, lambda doc: doc.update(annotations=[]))
    fails(unannotated, "no annotated cells")

    empty, _ = variant("empty")
    blank = encode_mask(np.zeros((128, 128), bool))
    _edit_annotations(empty, lambda doc: doc["annotations"][0].update(segmentation=blank))
    fails(empty, "1 annotation.* an empty mask")


def test_read_progress_is_incremental_and_tolerates_a_partial_line(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    events = job / "events.jsonl"
    assert read_progress(job).state == "not started"
    # a process that has exited: the run's pid is dead
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    t = time.time()
    def step(s):
        return {"event": "step", "time": t, "step": s, "epoch": 0, "loss": 1.0 / s,
                "eta_s": 60.0, "total_steps": 10}

    lines = [{"event": "start", "time": t, "step": 0, "epoch": 0, "pid": dead.pid,
              "total_steps": 10, "resumed": False}, step(1), step(2),
             {"event": "checkpoint", "time": t, "step": 2, "epoch": 0}, step(3), step(4)]
    text = "".join(json.dumps(e) + "\n" for e in lines)
    events.write_text(text + '{"event": "step", "time": 1, "st')  # being written
    p = read_progress(job)
    assert p.offset == len(text.encode()) and [s for s, _ in p.loss] == [1, 2, 3, 4]
    assert p.state == "stopped" and "Resume continues from step 2" in p.message
    assert p.total_steps == 10 and p.fraction == pytest.approx(0.4)
    # the rest of the line arrives, then a resumed run from the step-2 checkpoint
    with open(events, "a") as fh:
        fh.write('ep": 5, "epoch": 0, "loss": 0.2}\n')
        fh.write(json.dumps({"event": "start", "time": t + 1, "step": 2, "epoch": 0,
                             "pid": dead.pid, "resumed": True, "resumed_from_step": 2}) + "\n")
        fh.write(json.dumps({"event": "cancelled", "time": t + 2, "step": 3, "epoch": 0,
                             "message": "signal SIGTERM: stopped"}) + "\n")
    q = read_progress(job, p)
    assert [s for s, _ in q.loss] == [1, 2]  # steps after the checkpoint were trained again
    assert [s for s, _ in p.loss] == [1, 2, 3, 4]  # the previous result is left as it was
    assert q.state == "cancelled" and q.resumable and q.step == 3
    assert q.loss == read_progress(job).loss  # incremental == from scratch
    # a launch whose process died before writing any event: "failed" with the log's tail
    (job / "train.log").write_text("Traceback ...\nImportError: no module named torch\n")
    (job / PID_FILE).write_text(json.dumps({"pid": dead.pid, "launched": t + 5}))
    r = read_progress(job, q)
    assert r.state == "failed" and "ImportError" in r.message
    # ... unless it was cancelled while starting (killed before its signal handlers)
    (job / PID_FILE).write_text(json.dumps({"pid": dead.pid, "launched": t + 5,
                                            "cancel_requested": t + 6}))
    r = read_progress(job, r)
    assert r.state == "cancelled" and "continues from step 2" in r.message


@pytest.mark.slow
def test_launch_cancel_resume_registers_with_metrics_before(tiny_models, tmp_path):
    _, data = tiny_models
    job = create_finetune_job(data, tmp_path / "job", base="tiny-amodal", val_data=data,
                              epochs=100, lr=1e-4, device="cpu", name="tiny-ft-mon",
                              hyper=FAST)
    proc = launch_job(job)
    try:
        assert (job / PID_FILE).is_file()
        assert read_progress(job).state == "running"  # at once, before any event
        with pytest.raises(JobError, match="running already"):
            launch_job(job)
        p = _wait(job, lambda p: len(p.loss) >= 2)
        assert p.state == "running" and p.pid == proc.pid and p.total_steps == 300
        assert p.validation[0][0] == 0 and "mAP" in p.metrics_before  # the base, at step 0
        assert p.eta_text().endswith("left")
        assert cancel_job(job)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    p = read_progress(job, p)
    assert p.state == "cancelled" and p.resumable and "checkpoint saved" in p.message
    assert find_checkpoint(job) is not None and p.checkpoint_step == p.step >= 2
    assert not cancel_job(job)  # nothing is running now

    _set_max_steps(job, p.step + 2)
    proc = resume_job(job)
    assert proc.wait(timeout=120) == 0, (job / "train.log").read_text()[-2000:]
    p = read_progress(job, p)
    assert p.state == "done" and p.model == "tiny-ft-mon" and p.fraction == 1.0
    assert [s for s, _ in p.loss] == sorted({s for s, _ in p.loss})  # no step twice
    with pytest.raises(JobError, match="finished already"):
        resume_job(job)
    entry = next(e for e in list_models(kind="amodal") if e.name == "tiny-ft-mon")
    card = read_card(entry.card_path)
    assert card.base_model == "tiny-amodal"
    assert set(card.training["metrics_before"]) == set(card.metrics) >= {"mAP"}
    assert [d["paths"] for d in card.training_data] == [[str(Path(data).resolve())]] * 2
    assert import_model(job).name == "tiny-ft-mon"  # registered already: not twice
    assert sum(e.card.sha256 == card.sha256 for e in list_models()) == 1


@pytest.mark.slow
def test_exported_job_runs_elsewhere_and_its_model_imports(tiny_models, tmp_path, monkeypatch,
                                                           capsys):
    from blastoseg.cli import main

    _, data = tiny_models
    job = create_finetune_job(data, tmp_path / "job", base="tiny-amodal", epochs=1,
                              device="cpu", hyper={**FAST, "max_steps": 1})
    out = export_job_folder(job, tmp_path / "server" / "job")
    moved = TrainJob.load(out)
    assert moved.base == "base/tiny-amodal.safetensors" and (out / moved.base).is_file()
    assert all(not Path(p).is_absolute() for p in moved.train_data)
    with pytest.raises(JobError, match="holds a training job"):
        export_job_folder(job, out)
    monkeypatch.chdir(tmp_path)  # the run must not depend on the working folder
    assert run_job(out, stdout=False, handle_signals=False) == 0
    card = json.loads(next((out / "output").glob("*.json")).read_text())
    assert card["base_model"] == "base/tiny-amodal.safetensors"
    capsys.readouterr()
    assert main(["models", "import", str(out), "--name", "from-server"]) == 0
    assert "registered from-server (amodal)" in capsys.readouterr().out
    assert any(e.name == "from-server" for e in list_models(kind="amodal"))
    with pytest.raises(JobError, match="no finished model"):
        import_model(job)


@pytest.mark.slow
def test_the_job_outlives_the_process_that_launched_it(tiny_models, tmp_path):
    """Like closing napari mid-run: the launcher exits, training goes on, and another process
    (a new napari session) sees it running and can cancel it."""
    _, data = tiny_models
    job = create_finetune_job(data, tmp_path / "job", base="tiny-amodal", epochs=100,
                              device="cpu", hyper=FAST)
    launcher = subprocess.run(
        [sys.executable, "-c", "import sys; from blastoseg.train.monitor import launch_job; "
         "print(launch_job(sys.argv[1]).pid)", str(job)],
        capture_output=True, text=True, timeout=120, check=True)
    pid = int(launcher.stdout.strip())
    try:
        p = _wait(job, lambda p: len(p.loss) >= 1)
        assert p.state == "running" and p.pid == pid
        assert cancel_job(job)  # by pid: not a child of this process
        p = _wait(job, lambda p: p.state != "running")
        assert p.state == "cancelled" and find_checkpoint(job) is not None
    finally:
        if read_progress(job).state == "running":
            os.kill(pid, signal.SIGKILL)
