"""``blastoseg batch``: finding embryos, the manifest, per-embryo atomic output, a LocalCluster
of 2 workers over 3 tiny embryos with the tiny count model, a rerun that skips them, and an
embryo with a corrupt frame that fails alone."""

from __future__ import annotations

import csv
import json
import threading

import numpy as np
import pytest
import tifffile
from PIL import Image

from blastoseg.errors import BlastosegError

pytest.importorskip("distributed")


def _frames(n: int, seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = np.stack([120 + 60 * np.exp(-((yy - 32) ** 2 + (xx - 28 - t) ** 2) / 150)
                     for t in range(n)])
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def _frame_folder(folder, frames, planes=None) -> None:
    folder.mkdir(parents=True)
    for t, frame in enumerate(frames):
        for z in planes or [None]:
            name = f"WELL4_RUN{t:03d}" + (f"_F{z}" if z is not None else "") + ".png"
            Image.fromarray(frame).save(folder / name)


@pytest.fixture
def embryos(tmp_path):
    """INPUT with 3 embryos: a TIFF stack, a frame folder, and an incubator well folder with
    the focal plane in the file names, inside a slide folder."""
    root = tmp_path / "input"
    root.mkdir()
    tifffile.imwrite(root / "E01.tif", _frames(3, 0), photometric="minisblack")
    _frame_folder(root / "E02", _frames(3, 1))
    _frame_folder(root / "slide1" / "WELL4", _frames(3, 2), planes=[-15, 0, 15])
    (root / ".DS_Store").write_text("x")
    return root


def test_find_embryos_recognises_stacks_frame_folders_wells_and_datasets(embryos, tmp_path):
    from blastoseg.batch import find_embryos

    (embryos / "D3").mkdir()
    (embryos / "D3" / "annotations.json").write_text("{}")
    (embryos / "empty").mkdir()
    found = find_embryos(embryos)
    assert [(e.name, e.source) for e in found] == [
        ("D3", "dataset"), ("E01", "tiff"), ("E02", "frames"), ("slide1/WELL4", "frames")]
    # the well's planes come from the file names
    from blastoseg.io import read_images

    assert read_images(found[-1].path).focal_planes == [-15, 0, 15]
    # the output folder inside the input is not an embryo; a frame folder is not a batch
    assert [e.name for e in find_embryos(embryos, exclude=embryos / "E02")][-2:] == \
        ["E01", "slide1/WELL4"]
    with pytest.raises(BlastosegError, match="frames of one embryo"):
        find_embryos(embryos / "E02")
    with pytest.raises(BlastosegError, match="no embryos"):
        find_embryos(embryos / "empty")


def test_manifest_skips_only_unchanged_finished_embryos(embryos, tmp_path):
    import os

    from blastoseg.batch import Manifest, input_stamp

    out = tmp_path / "out"
    m = Manifest(out)
    stamp = input_stamp(embryos / "E02")
    settings = {"tasks": ["count"]}
    m.set("E02", "done", stamp=stamp, settings=settings)
    m.save()
    assert not Manifest.load(out).is_done("E02", stamp, settings)  # no output folder
    (out / "E02").mkdir()
    m = Manifest.load(out)
    assert m.is_done("E02", stamp, settings)
    assert not m.is_done("E02", stamp, {"tasks": ["amodal"]})
    frame = sorted((embryos / "E02").iterdir())[0]
    st = frame.stat()
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not m.is_done("E02", input_stamp(embryos / "E02"), settings)
    m.set("E02", "running", worker="tcp://w1")  # what a killed run leaves: done again
    assert not m.is_done("E02", stamp, settings)
    m.set("E02", "failed", error="boom")
    assert m.entries["E02"]["error"] == "boom" and m.counts()["failed"] == 1
    m.set("E02", "pending")
    assert "error" not in m.entries["E02"]


def test_captured_output_keeps_threads_apart():
    from blastoseg.batch.capture import captured_output

    logs = {}

    def work(k):
        with captured_output() as log:
            for _ in range(200):
                print(f"thread {k}")
        logs[k] = log.getvalue()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert logs[0] == "thread 0\n" * 200 and logs[1] == "thread 1\n" * 200


def test_a_failed_embryo_leaves_no_folder_and_a_rerun_replaces_atomically(tmp_path):
    from blastoseg.batch.embryo_task import EmbryoJob, process_embryo, publish_folder
    from blastoseg.batch.tasks import TaskSettings

    out = tmp_path / "out"
    job = EmbryoJob("E9", str(tmp_path / "missing.tif"), str(out),
                    TaskSettings(("count",), {"count": "no-such-model"}, "cpu"))
    result = process_embryo(job)
    assert result["state"] == "failed" and "count:" in result["error"]
    assert not (out / "E9").exists() and not _leftovers(out)
    # publishing over an earlier result: the old folder goes, the new one is complete
    (out / "E9").mkdir(parents=True)
    (out / "E9" / "old.txt").write_text("old")
    new = out / ".partial" / "E9-x"
    new.mkdir(parents=True)
    (new / "new.txt").write_text("new")
    publish_folder(new, out / "E9")
    assert sorted(p.name for p in (out / "E9").iterdir()) == ["new.txt"]
    assert not _leftovers(out)


def _leftovers(out) -> list:
    """What is left in OUT/.partial (the folders of embryos not finished)."""
    partial = out / ".partial"
    return list(partial.iterdir()) if partial.is_dir() else []


def _summary(out):
    with (out / "summary.csv").open() as fh:
        return {r["embryo"]: r for r in csv.DictReader(fh)}


def test_batch_on_two_workers_matches_the_single_input_cli_and_resumes(
        tiny_count, embryos, tmp_path, capsys):
    from blastoseg.batch import run_batch
    from blastoseg.cli import main

    out = tmp_path / "out"
    # a corrupt frame in a fourth embryo: that embryo fails, alone
    _frame_folder(embryos / "E03", _frames(3, 3))
    bad = sorted((embryos / "E03").iterdir())[1]
    bad.write_bytes(bad.read_bytes()[:40])
    updates = []
    report = run_batch(embryos, out, ["count"], models={"count": "tiny-count"}, device="cpu",
                       workers=2, on_update=updates.append)
    assert (report.done, report.failed, report.skipped) == (3, 1, 0)
    assert [name for name, _ in report.failures] == ["E03"]
    assert "E03" in updates[0].embryos[2] and updates[0].dashboard
    assert {u.embryo for u in updates if u.event == "running"} <= {"E01", "E02", "E03",
                                                                   "slide1/WELL4"}
    assert updates[-1].event == "finished" and updates[-1].done == 3
    # each embryo's folder is what `blastoseg segment count` writes for it
    single = tmp_path / "single"
    assert main(["segment", "count", str(embryos / "E02"), "--out", str(single),
                 "--model", "tiny-count", "--device", "cpu"]) == 0
    for name in ("counts.csv", "centroids.csv", "density.tif"):
        assert (out / "E02" / "count" / name).read_bytes() == (single / name).read_bytes()
    assert (out / "slide1" / "WELL4" / "count" / "counts.csv").is_file()
    manifest = json.loads((out / "manifest.json").read_text())["embryos"]
    assert {k: v["state"] for k, v in manifest.items()} == {
        "E01": "done", "E02": "done", "E03": "failed", "slide1/WELL4": "done"}
    assert manifest["E01"]["stamp"]["size"] == (embryos / "E01.tif").stat().st_size
    assert manifest["E03"]["error"].startswith("count: ") and bad.name in manifest["E03"]["error"]
    assert not (out / "E03").exists() and not _leftovers(out)
    rows = _summary(out)
    assert rows["E01"]["status"] == "done" and rows["E01"]["frames"] == "3"
    assert rows["E01"]["count_source"] == "count" and rows["E01"]["final_count"] != ""
    assert rows["E03"]["status"] == "failed" and rows["E03"]["error"]
    assert (out / "_logs" / "E02.log").read_text().count("wrote ") == 3
    # the rerun skips the finished embryos, says so, and tries the failed one again
    capsys.readouterr()
    code = main(["batch", str(embryos), "--out", str(out), "--tasks", "count", "--model",
                 "count=tiny-count", "--device", "cpu", "--workers", "1", "--threads"])
    text = capsys.readouterr().out
    assert code == 1  # E03 still fails
    assert "skipping 3 embryo(s) already done" in text and "failed E03" in text
    assert "done 0, failed 1, skipped 3" in text


def test_an_existing_scheduler_and_one_model_load_per_worker(tiny_count, embryos, tmp_path,
                                                              monkeypatch):
    """count + timeline on a cluster given by its address (threads in this process, so the
    patched class is the one the worker uses): the two tasks share one loaded model."""
    from distributed import LocalCluster

    import blastoseg.predict.count as count
    from blastoseg.batch import run_batch
    from blastoseg.predict.base import clear_predictor_cache

    loads = []
    real_init = count.CountPredictor.__init__

    def counting_init(self, *args, **kwargs):
        loads.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(count.CountPredictor, "__init__", counting_init)
    clear_predictor_cache()
    out = tmp_path / "out"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster:
        report = run_batch(embryos, out, ["count", "timeline"],
                           models={"count": "tiny-count", "timeline": "tiny-count"},
                           device="cpu", scheduler=cluster.scheduler_address)
        assert len(cluster.workers) == 1  # a cluster given by address is left running
    assert len(loads) == 1
    # the well has focal planes: the timeline refuses it, as `blastoseg timeline` does
    assert (report.done, report.failed) == (2, 1)
    assert report.failures[0][0] == "slide1/WELL4" and "focal planes" in report.failures[0][1]
    rows = _summary(out)
    assert rows["E01"]["count_source"] == "timeline" and rows["E01"]["frames"] == "3"
    assert {"t2", "t8"} <= set(rows["E01"])
    assert (out / "E01" / "timeline" / "events.csv").is_file()
    assert (out / "E01" / "count" / "counts.csv").is_file()


def test_bad_batch_options_are_refused_before_any_embryo(embryos, tmp_path, monkeypatch):
    from dataclasses import replace

    from blastoseg import kinds
    from blastoseg.batch import run_batch

    # every batch task's kind ships a model now; a kind without one needs --model
    from blastoseg.batch.tasks import _parser

    monkeypatch.setitem(kinds.KINDS, "count", replace(kinds.KINDS["count"], default_model=None))
    _parser.cache_clear()  # the CLI parser reads the defaults when it is built
    with pytest.raises(BlastosegError, match="no default model"):
        run_batch(embryos, tmp_path / "o", ["count"])
    monkeypatch.undo()
    _parser.cache_clear()
    with pytest.raises(BlastosegError, match="unknown batch task"):
        run_batch(embryos, tmp_path / "o", ["segment"])
    with pytest.raises(BlastosegError, match="not among the tasks"):
        run_batch(embryos, tmp_path / "o", ["count"], models={"amodal": "x", "count": "y"})
    assert not (tmp_path / "o" / "manifest.json").exists()
    # another live process writing into OUT: refused (its lock file names it)
    import os
    import socket

    (tmp_path / "o").mkdir(exist_ok=True)
    (tmp_path / "o" / ".blastoseg-lock").write_text(
        json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(BlastosegError, match="another batch is writing"):
        run_batch(embryos, tmp_path / "o", ["count"], models={"count": "x"})


def test_a_killed_run_is_finished_by_the_next(tiny_count, embryos, tmp_path):
    """What a killed client leaves (E01 done, E02 still "running", a half-written folder in
    .partial): the rerun keeps E01, does E02 and the rest, and clears .partial."""
    from blastoseg.batch import Manifest, TaskSettings, input_stamp, run_batch

    out = tmp_path / "out"
    settings = TaskSettings(("count",), {"count": "tiny-count"}, "cpu")
    m = Manifest(out)
    (out / "E01" / "count").mkdir(parents=True)
    (out / "E01" / "count" / "counts.csv").write_text("frame,cell_count,integral\n0,2,2.0\n")
    m.set("E01", "done", stamp=input_stamp(embryos / "E01.tif"), settings=settings.to_dict())
    m.set("E02", "running", worker="tcp://gone:1")
    m.save()
    (out / ".partial" / "E02-dead").mkdir(parents=True)
    (out / ".partial" / "E02-dead" / "half.csv").write_text("frame,")
    report = run_batch(embryos, out, ["count"], models={"count": "tiny-count"}, device="cpu",
                       workers=1, processes=False)
    assert (report.skipped, report.done, report.failed) == (1, 2, 0)
    assert (out / "E01" / "count" / "counts.csv").read_text().endswith("0,2,2.0\n")  # kept
    assert (out / "E02" / "count" / "density.tif").is_file() and not _leftovers(out)
    states = {k: v["state"] for k, v in Manifest.load(out).entries.items()}
    assert states == {"E01": "done", "E02": "done", "slide1/WELL4": "done"}
