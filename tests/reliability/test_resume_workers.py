"""Issue 18: a training job with DataLoader workers (hyper ``num_workers`` > 0) that is stopped
in the middle of an epoch (in-process cancel or SIGTERM) and run again ends with the very
weights (``torch.equal`` on every tensor) and the very logged losses of the same job run
without a stop, also when the resumed part crosses epoch boundaries.

What used to break it:

- items drawn from the global random generators inside a worker (the toy's noisy items here;
  the shape prior's crop augmentation): a worker's generators ran on from the items it loaded
  before, and a loader started mid-epoch gave the items to other workers;
- datasets with one random generator for the whole dataset (``overlap``, ``brightfield``,
  ``pix2pix``, ``oocyte-translator``): each worker copied it in the same state (the workers
  drew the same crops) and a resumed run started it afresh (not exact with 0 workers either);
- the ``count`` dataset's frame cache kept float16 copies, so a frame's first use differed
  from its later ones, and a resumed run's cache starts empty (not exact with 0 workers
  either; with workers the cache of a worker is dropped at each epoch's end).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from blastoseg.train import (
    EXIT_CANCELLED,
    EXIT_OK,
    create_job,
    find_checkpoint,
    load_checkpoint,
    read_events,
    run_job,
)

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
import _toy_task  # noqa: E402  (registers the "toy" kind)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path / "home"))


def _cancel_at(job_dir: Path, step: int) -> dict:
    """Run the job, cancel it after ``step`` (in-process, as the napari widget's Cancel does
    through SIGTERM); returns the checkpoint."""
    stop = threading.Event()

    def on_event(e):
        if e["event"] == "step" and e["step"] == step:
            stop.set()

    assert run_job(job_dir, stdout=False, cancel=stop, handle_signals=False,
                   callback=on_event) == EXIT_CANCELLED
    return load_checkpoint(find_checkpoint(job_dir))


def _assert_same_run(ref: Path, cut: Path, steps: int) -> None:
    ra, rb = load_checkpoint(find_checkpoint(ref)), load_checkpoint(find_checkpoint(cut))
    assert ra["step"] == rb["step"] == steps
    differ = [k for k in ra["model"] if not torch.equal(ra["model"][k], rb["model"][k])]
    assert not differ, f"{len(differ)} of {len(ra['model'])} tensors differ: {differ[:4]}"
    la = {e["step"]: e["loss"] for e in read_events(ref) if e["event"] == "step"}
    lb = {e["step"]: e["loss"] for e in read_events(cut) if e["event"] == "step"}
    assert sorted(la) == sorted(lb) == list(range(1, steps + 1))
    assert [s for s in la if la[s] != lb[s]] == []


# --- the engine: items drawn from the global generators inside workers -----------------------

def _toy(tmp_path, name, *, workers=2, max_steps=20):
    data = _toy_task.make_toy_dataset(tmp_path / "data")
    hyper = {"batch_size": 8, "lr": 3e-2, "log_every": 1, "ckpt_every": 0,
             "max_steps": max_steps, "num_workers": workers, "schedule": "cosine"}
    # noise drawn in the workers (dataset) and in the main process (training step)
    config = {"augment_items": True, "augment": True}
    return create_job("toy", data, tmp_path / name, hyper=hyper, config=config, epochs=None)


@pytest.mark.parametrize("cut", [3, 11])  # 8 steps an epoch: epoch 0 batch 3; epoch 1 batch 3
def test_toy_with_workers_cancelled_mid_epoch_resumes_exactly(tmp_path, cut):
    ref = _toy(tmp_path, "ref")
    assert run_job(ref, stdout=False, handle_signals=False) == EXIT_OK
    job = _toy(tmp_path, "cut")
    ckpt = _cancel_at(job, cut)
    assert (ckpt["epoch"], ckpt["micro_in_epoch"]) == divmod(cut, 8)
    assert run_job(job, stdout=False, handle_signals=False) == EXIT_OK  # epochs 1, 2 follow
    _assert_same_run(ref, job, 20)


def test_toy_with_workers_sigterm_then_cli_resume_is_exact(tmp_path):
    """SIGTERM to a `run_job` process with 2 workers at some step, then `blastoseg train
    JOB_DIR` (in-process CLI): the same 20 steps as a run without the stop."""
    from blastoseg.cli import main

    ref = _toy(tmp_path, "ref")
    assert run_job(ref, stdout=False, handle_signals=False) == EXIT_OK
    job = _toy(tmp_path, "cut")
    spec = json.loads((job / "job.json").read_text())
    spec["config"]["sleep_s"] = 0.05  # time for the signal to land mid-run (values unchanged)
    (job / "job.json").write_text(json.dumps(spec))
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import _toy_task; "
            f"from blastoseg.train import run_job; sys.exit(run_job({str(job)!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "step" and event["step"] >= 4:
                proc.send_signal(signal.SIGTERM)
                break
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_CANCELLED, err
    cut = load_checkpoint(find_checkpoint(job))
    assert 4 <= cut["step"] < 20 and cut["step"] % 8  # stopped inside an epoch
    assert main(["train", str(job), "--quiet"]) == EXIT_OK
    _assert_same_run(ref, job, 20)


def test_workers_draw_different_numbers_for_different_items(tmp_path):
    """The items' seeds differ by place, epoch and rank (workers never repeat each other)."""
    from blastoseg.train.item_seeds import item_seeds

    a = item_seeds(0, 0, 0, 64)
    assert len(set(a)) == 64 and a == item_seeds(0, 0, 0, 64)
    assert not set(a) & set(item_seeds(0, 1, 0, 64))
    assert not set(a) & set(item_seeds(0, 0, 1, 64))
    assert not set(a) & set(item_seeds(1, 0, 0, 64))


# --- real kinds ------------------------------------------------------------------------------

TINY_COUNT = {"model": {"working_size": 64, "pyramid_channels": 8, "puc_width": 1}}


@pytest.fixture(scope="module")
def embryos(tmp_path_factory):
    from blastoseg.cli import main

    data = tmp_path_factory.mktemp("embryos") / "data"
    assert main(["synth", "embryos", "--n", "3", "--seed", "7", "--size", "128",
                 "--out", str(data)]) == 0
    return data


@pytest.mark.parametrize("workers", [0, 2])
def test_count_with_cache_resumes_exactly(embryos, tmp_path, workers):
    """3 frames, batch 1: 3 steps an epoch; cut after step 2 (epoch 0, batch 2), then the
    resumed run crosses two epoch boundaries. The frame cache is on (the default)."""
    hyper = {"max_steps": 7, "batch_size": 1, "threads": 1, "log_every": 1, "ckpt_every": 0,
             "num_workers": workers, "schedule": "cosine", "cache": True}

    def job(name):
        return create_job("count", [str(embryos)], tmp_path / name, config=TINY_COUNT,
                          hyper=dict(hyper), epochs=None, register=False)

    ref = job("ref")
    assert run_job(ref, stdout=False, handle_signals=False) == EXIT_OK
    cut = job("cut")
    ckpt = _cancel_at(cut, 2)
    assert (ckpt["epoch"], ckpt["micro_in_epoch"]) == (0, 2)
    assert run_job(cut, stdout=False, handle_signals=False) == EXIT_OK
    _assert_same_run(ref, cut, 7)


def test_count_weights_do_not_depend_on_the_number_of_workers(embryos, tmp_path):
    hyper = {"max_steps": 4, "batch_size": 1, "threads": 1, "ckpt_every": 0}
    weights = []
    for workers in (0, 2):
        job = create_job("count", [str(embryos)], tmp_path / f"w{workers}", config=TINY_COUNT,
                         hyper={**hyper, "num_workers": workers}, epochs=None, register=False)
        assert run_job(job, stdout=False, handle_signals=False) == EXIT_OK
        weights.append(load_checkpoint(find_checkpoint(job))["model"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_count_cache_changes_speed_only(embryos):
    from blastoseg.train.augment import AugmentConfig
    from blastoseg.train.count_data import CountDataset

    kw = {"working_size": 64, "augment": AugmentConfig(), "seed": 3}
    cached, plain = CountDataset([embryos], cache=True, **kw), CountDataset([embryos], **{
        **kw, "cache": False})
    for epoch in (0, 1):
        cached.set_epoch(epoch)
        plain.set_epoch(epoch)
        for i in range(len(plain)):  # epoch 1 reads the cache that epoch 0 filled
            a, b = cached[i], plain[i]
            assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(cached._framed) == len(plain)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from blastoseg.synth.brightfield.config import BrightfieldConfig
    from blastoseg.synth.brightfield.writer import write_synthetic_brightfield

    root = tmp_path_factory.mktemp("scenes")
    return write_synthetic_brightfield(root / "bf", 2, seed=2,
                                       config=BrightfieldConfig(image_size=(80, 80)))


def test_overlap_with_workers_cancelled_mid_epoch_resumes_exactly(scenes, tmp_path):
    """2 scenes x 2 crops, batch 2: 2 steps an epoch; cut after step 1 (mid-epoch 0)."""
    config = {"seunet": {"base_width": 4, "depth": 2, "se_reduction": 2},
              "probability": {"variant": "combined_border_overlap"},
              "data": {"crop": 48, "repeats": 2}}
    hyper = {"max_steps": 5, "batch_size": 2, "lr": 0.01, "log_every": 1, "ckpt_every": 0,
             "num_workers": 2, "schedule": "constant"}

    def job(name):
        return create_job("overlap", [str(scenes)], tmp_path / name, config=config,
                          hyper=dict(hyper), epochs=None, register=False)

    ref = job("ref")
    assert run_job(ref, stdout=False, handle_signals=False) == EXIT_OK
    cut = job("cut")
    ckpt = _cancel_at(cut, 1)
    assert (ckpt["epoch"], ckpt["micro_in_epoch"]) == (0, 1)
    assert run_job(cut, stdout=False, handle_signals=False) == EXIT_OK
    _assert_same_run(ref, cut, 5)


def _datasets(scenes, tmp_path):
    """Training sets of the kinds that kept one random generator per dataset."""
    from blastoseg.synth.oocyte import OocyteConfig, write_synthetic_oocytes
    from blastoseg.train.brightfield_data import BrightfieldDataset
    from blastoseg.train.oocyte_translator_task import LabelImagePairs
    from blastoseg.train.overlap_data import OverlapDataset
    from blastoseg.train.pix2pix_task import Pix2PixPairs, find_scenes

    oocytes = write_synthetic_oocytes(tmp_path / "oo", n=2, seed=4,
                                      config=OocyteConfig(image_size=(64, 64)))
    heads = ("cytoplasm", "nuclei", "overlap")
    return {
        "overlap": lambda: OverlapDataset([scenes], heads, crop=48, repeats=3, seed=5),
        "brightfield": lambda: BrightfieldDataset([scenes], heads, crop=48, repeats=3, seed=5),
        "pix2pix": lambda: Pix2PixPairs(find_scenes([scenes])[0], {}, crop=48, repeats=3,
                                        rot90=True, seed=5),
        "oocyte-translator": lambda: LabelImagePairs([oocytes], crop=32, repeats=3, seed=5),
    }


def _same_item(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))


def test_an_item_depends_on_seed_epoch_and_index_only(scenes, tmp_path):
    """What a worker or a resumed run loads equals what the uninterrupted run loaded, and
    the next epoch draws anew."""
    for kind, make in _datasets(scenes, tmp_path).items():
        first, fresh = make(), make()
        n = len(first)
        items = [first[i] for i in range(n)]  # in order, as one process would
        for i in reversed(range(n)):  # in another order, as other workers would
            assert _same_item(fresh[i], items[i]), (kind, i)
        fresh.set_epoch(1)
        assert not all(_same_item(fresh[i], items[i]) for i in range(n)), kind
        fresh.set_epoch(0)
        assert _same_item(fresh[n - 1], items[n - 1]), kind
        assert np.isfinite(float(items[0][next(iter(items[0]))].sum())), kind
