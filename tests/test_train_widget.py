"""The "Fine-tune a model" widget in a headless viewer: clear errors before anything starts, a
background job whose loss and mAP reach the live plot, a second widget (a new napari session)
that finds the running job, Cancel with a checkpoint, Resume to a registered model, export."""

from __future__ import annotations

import pytest

from blastoseg.train import TrainJob, find_checkpoint

pytestmark = pytest.mark.gui


@pytest.mark.slow
def test_train_widget_start_plot_cancel_reopen_resume(make_napari_viewer, qtbot, tiny_models,
                                                      tmp_path):
    from blastoseg.napari._train_widget import TrainWidget, load_settings

    _, data = tiny_models
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    job = tmp_path / "job"
    widget.base.value = "tiny-amodal"
    widget.job_dir.value = str(job)
    widget.train_data.value = str(tmp_path / "nowhere")
    widget.start()
    assert "does not exist" in widget.status.value and not job.exists()
    widget.train_data.value = str(data)
    widget.lr.value = "fast"
    widget.start()
    assert "not a number" in widget.status.value and not job.exists()

    widget.lr.value = "1e-4"
    widget.val_data.value = str(data)
    widget.length.value, widget.unit.value = 100, "epochs"
    widget.replay.value = 0  # only the test frames: 6 frames / batch 4 = 2 steps per epoch
    widget.device.value = "cpu"
    widget.name.value = "tiny-ft-widget"
    widget.start()
    proc = widget._popen
    try:
        assert widget._progress.state == "running"
        assert widget.cancel_button.enabled and not widget.start_button.enabled
        qtbot.waitUntil(lambda: len(widget._progress.loss) >= 2, timeout=120_000)
        loss_line = widget.axes.get_lines()[0]
        assert len(loss_line.get_xdata()) >= 2
        metric_line = widget.axes_metric.get_lines()[0]
        assert metric_line.get_xdata()[0] == 0  # the base model's mAP, before fine-tuning
        assert widget.progress_text.value.startswith("step ")
        assert "/ 200, about" in widget.progress_text.value  # 100 epochs of 6 frames / 4
        assert widget.progress.value > 0

        # napari closed and opened again: the remembered job folder shows the running job
        assert load_settings()["job_dir"] == str(job)
        again = TrainWidget(viewer)
        assert again.job_dir.value == str(job) and again._progress.state == "running"
        assert again.cancel_button.enabled and again._timer.isActive()
        again._timer.stop()

        widget.cancel()
        qtbot.waitUntil(lambda: widget._progress.state == "cancelled", timeout=120_000)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert find_checkpoint(job) is not None
    assert widget.resume_button.enabled and widget.start_button.enabled
    assert "checkpoint saved" in widget.status.value

    # Resume finishes the job (made short here) and registers the model
    stopped_at = widget._progress.step
    moved = TrainJob.load(job)
    moved.hyper["max_steps"] = stopped_at + 2
    moved.save(job)
    widget.resume()
    qtbot.waitUntil(lambda: widget._progress.state in ("done", "failed"), timeout=120_000)
    assert widget._progress.state == "done", widget.status.value
    assert "registered as tiny-ft-widget" in widget.status.value and "mAP" in widget.status.value
    assert "tiny-ft-widget" in widget.base.choices  # fine-tune it further, or segment with it
    assert not widget.resume_button.enabled and not widget._timer.isActive()
    assert widget.import_from(job).name == "tiny-ft-widget"  # registered already: not twice

    out = widget.export_to(tmp_path / "for-server")
    assert (out / "job.json").is_file() and out.name == "job" and "blastoseg train" in \
        widget.status.value


@pytest.mark.gui
def test_fine_tune_feedback_warns_and_says_click_resume(make_napari_viewer, monkeypatch):
    """Issue 18 item 9: a fine-tune whose validation metric fell is announced as a warning
    naming the base model; a cancelled job says "click Resume"; no "training..." flicker while
    a cancel is pending."""
    from types import SimpleNamespace

    from blastoseg.napari._train_widget import CANCELLING, TrainWidget, _metric_fell

    widget = TrainWidget(make_napari_viewer())
    done = SimpleNamespace(state="done", model="ft", message="", main_metric="mAP", step=30,
                           metrics_before={"mAP": 0.70}, metrics={"mAP": 0.65})
    assert _metric_fell(done)
    text = widget._status_text(done)
    assert "mAP 0.700 -> 0.650" in text and "WARNING: validation mAP fell" in text
    better = SimpleNamespace(**{**vars(done), "metrics": {"mAP": 0.75}})
    assert not _metric_fell(better) and "WARNING" not in widget._status_text(better)
    loss = SimpleNamespace(**{**vars(done), "main_metric": "val_loss",
                              "metrics_before": {"val_loss": 1.0}, "metrics": {"val_loss": 2.0}})
    assert _metric_fell(loss)
    stopped = SimpleNamespace(state="cancelled", step=12, message="cancel requested: ...",
                              main_metric="mAP")
    assert "click Resume" in widget._status_text(stopped)
    widget._cancelling = True
    running = SimpleNamespace(state="running", message="training...", main_metric="mAP")
    assert widget._status_text(running) == CANCELLING
