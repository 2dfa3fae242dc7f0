"""``blastoseg batch`` on this machine: throughput with 1 and 2 workers, and a simulated
large run with corrupt frames and a worker killed mid-run. Prints tables (docs/scale_out.md).

``throughput``: ``--embryos`` synthetic cleaving-embryo time-lapses (``--frames`` frames of
``--size`` px, seeds 910000 + i; one folder per embryo, hours in the frame names, as an
incubator export) through ``--tasks`` with ``--model``, on a LocalCluster of 1, then 2
worker processes (one thread each). Reports embryos/min, the speed-up and each worker's
resident memory at the end (the models loaded, from psutil on the worker).

``large-run``: ``--embryos`` tiny embryos (``--frames`` PNG frames of 64 px), ``--corrupt``
of them with one truncated frame; the count task with ``--model`` (a count model, e.g. the
tiny one ``--make-tiny-model`` trains in seconds); after ``--kill-after`` embryos are done
one worker process is killed (SIGKILL; its nanny starts a new one). Then checks: every good
embryo done, every corrupt one failed and listed in summary.csv with its error, no
partial folder left and every done folder complete.

Usage::

    nice python benchmarks/batch_scale_out.py throughput --embryos 8 --frames 12 \\
        --size 200 --tasks amodal,timeline --model amodal-default
    nice python benchmarks/batch_scale_out.py large-run --embryos 200 --make-tiny-model
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from blastoseg.batch import iter_batch

SEED0 = 910000


def write_timelapses(root: Path, n: int, frames: int, size: int) -> Path:
    """``n`` synthetic time-lapses, one frame folder per embryo (``WELL<i>``)."""
    from blastoseg.synth import EmbryoConfig, iter_timelapse

    cfg = EmbryoConfig(image_size=(size, size))
    for i in range(n):
        well = root / f"WELL{i + 1:02d}"
        well.mkdir(parents=True, exist_ok=True)
        for t, fr in enumerate(iter_timelapse(frames, seed=SEED0 + i, config=cfg)):
            image = np.asarray(fr.image)
            if image.dtype != np.uint8:
                image = np.clip(image * (255 if image.max() <= 1 else 1), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(well / f"RUN{t:03d}_{fr.meta['hours']:.2f}h.png")
    return root


def write_tiny_embryos(root: Path, n: int, frames: int, corrupt: int, seed: int = 0) -> list[str]:
    """``n`` tiny embryos (PNG frame folders); the first frame but one of every
    ``n // corrupt``-th is truncated. Returns the corrupt embryos' names."""
    rng = np.random.default_rng(seed)
    step = max(n // max(corrupt, 1), 1)
    bad = []
    for i in range(n):
        folder = root / f"E{i + 1:03d}"
        folder.mkdir(parents=True)
        for t in range(frames):
            Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(
                folder / f"RUN{t:03d}.png")
        if corrupt and i % step == step - 1 and len(bad) < corrupt:
            victim = folder / "RUN001.png"
            victim.write_bytes(victim.read_bytes()[:40])
            bad.append(folder.name)
    return bad


def make_tiny_count_model(home: Path) -> str:
    from blastoseg.cli import main

    os.environ["BLASTOSEG_HOME"] = str(home)
    data = home.parent / "count-data"
    main(["synth", "embryos", "--n", "3", "--seed", "7", "--size", "128", "--out", str(data)])
    cfg = home.parent / "count.json"
    cfg.write_text(json.dumps({"model": {"working_size": 64, "pyramid_channels": 8,
                                         "puc_width": 1},
                               "hyper": {"max_steps": 2, "batch_size": 2, "val_frames": 2}}))
    main(["train", "count", "--data", str(data), "--val", str(data), "--out",
          str(home.parent / "count-job"), "--config", str(cfg), "--name", "bench-count",
          "--quiet"])
    return "bench-count"


def _worker_facts() -> tuple[float, float, int]:
    """A worker's resident memory (MB), CPU seconds so far and torch threads."""
    import psutil
    import torch

    proc = psutil.Process()
    cpu = proc.cpu_times()
    return proc.memory_info().rss / 2**20, cpu.user + cpu.system, torch.get_num_threads()


def run_on_cluster(inp: Path, out: Path, tasks, models, workers: int, *, kill_after=None):
    """One batch on a fresh LocalCluster of ``workers`` processes; returns (report,
    seconds, [(RSS MB, CPU s, torch threads)] per worker, killed pid, the embryos started
    more than once)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        steps = iter_batch(inp, out, tasks, models=models, device="cpu",
                           scheduler=cluster.scheduler_address)
        start = time.perf_counter()
        killed = None
        starts: dict[str, int] = {}
        while True:
            try:
                u = next(steps)
            except StopIteration as stop:
                report = stop.value
                break
            if u.event == "running":
                starts[u.embryo] = starts.get(u.embryo, 0) + 1
            if kill_after is not None and killed is None and u.done >= kill_after:
                pid = next(iter(client.run(os.getpid).values()))
                os.kill(pid, signal.SIGKILL)  # mid-run: the worker's embryo is in flight
                killed = pid
        seconds = time.perf_counter() - start
        rss = list(client.run(_worker_facts).values())
    return report, seconds, rss, killed, sorted(n for n, k in starts.items() if k > 1)


def throughput(args) -> None:
    tasks = args.tasks.split(",")
    models = {tasks[0]: args.model} if args.model else {}
    with tempfile.TemporaryDirectory() as tmp:
        inp = write_timelapses(Path(tmp) / "input", args.embryos, args.frames, args.size)
        rows = []
        for workers in (1, 2):
            load0 = os.getloadavg()[0]
            report, seconds, facts, _, _ = run_on_cluster(inp, Path(tmp) / f"out{workers}",
                                                          tasks, models, workers)
            assert report.done == args.embryos, report.failures
            rows.append((workers, seconds, args.embryos / seconds * 60, facts,
                         (load0 + os.getloadavg()[0]) / 2))
    print(f"\n{args.embryos} embryos x {args.frames} frames of {args.size} px, tasks "
          f"{args.tasks}, model {args.model or 'default'}, CPU ({os.cpu_count()} cores)\n")
    print("| workers | seconds | embryos/min | speed-up | RSS per worker (MB) | worker CPU s "
          "| torch threads | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for workers, seconds, rate, facts, load in rows:
        print(f"| {workers} | {seconds:.1f} | {rate:.2f} | {rate / rows[0][2]:.2f} x | "
              f"{', '.join(f'{f[0]:.0f}' for f in facts)} | "
              f"{', '.join(f'{f[1]:.0f}' for f in facts)} | "
              f"{', '.join(str(f[2]) for f in facts)} | {load:.1f} |")


def large_run(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_tiny_count_model(tmp / "home") if args.make_tiny_model else args.model
        inp = tmp / "input"
        bad = write_tiny_embryos(inp, args.embryos, args.frames, args.corrupt)
        out = tmp / "out"
        report, seconds, rss, killed, again = run_on_cluster(
            inp, out, ["count"], {"count": model}, args.workers, kill_after=args.kill_after)
        with (out / "summary.csv").open() as fh:
            summary = {r["embryo"]: r for r in csv.DictReader(fh)}
        failed = sorted(n for n, r in summary.items() if r["status"] == "failed")
        done = [n for n, r in summary.items() if r["status"] == "done"]
        complete = all(sorted(p.name for p in (out / n / "count").iterdir()) ==
                       ["centroids.csv", "counts.csv", "density.tif"] for n in done)
        partial = list((out / ".partial").iterdir()) if (out / ".partial").is_dir() else []
        states = {e["state"] for e in
                  json.loads((out / "manifest.json").read_text())["embryos"].values()}
    good = args.embryos - len(bad)
    print(f"\n{args.embryos} embryos ({len(bad)} with a corrupt frame), {args.frames} frames of "
          f"64 px, count task, {args.workers} workers, worker pid {killed} killed after "
          f"{args.kill_after} embryos\n")
    print("| check | result |")
    print("|---|---|")
    print(f"| embryos in flight on the killed worker, run again | {', '.join(again) or '-'} |")
    print(f"| good embryos done | {len(done)} of {good} |")
    print(f"| corrupt embryos failed and listed | {len(failed)} of {len(bad)}"
          f" ({'the same ones' if failed == sorted(bad) else 'DIFFERENT: ' + str(failed)}) |")
    print(f"| errors in summary.csv | {sum(bool(summary[n]['error']) for n in failed)} of "
          f"{len(failed)} |")
    print(f"| done folders complete | {'yes' if complete else 'NO'} |")
    print(f"| partial folders left | {len(partial)} |")
    print(f"| manifest states | {', '.join(sorted(states))} |")
    print(f"| wall time | {seconds:.1f} s ({args.embryos / seconds * 60:.1f} embryos/min) |")
    print(f"| RSS per worker at the end (MB) | {', '.join(f'{r[0]:.0f}' for r in rss)} |")
    print(f"\nfirst error: {summary[failed[0]]['error'][:160] if failed else '-'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--embryos", type=int, default=8)
    t.add_argument("--frames", type=int, default=12)
    t.add_argument("--size", type=int, default=200)
    t.add_argument("--tasks", default="amodal,timeline")
    t.add_argument("--model", default="amodal-default", help="the first task's model")
    t.set_defaults(func=throughput)
    r = sub.add_parser("large-run")
    r.add_argument("--embryos", type=int, default=200)
    r.add_argument("--frames", type=int, default=3)
    r.add_argument("--corrupt", type=int, default=None, help="default: 10 %% of the embryos")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--kill-after", type=int, default=None, help="default: a third of them")
    r.add_argument("--model", default=None, help="a count model")
    r.add_argument("--make-tiny-model", action="store_true",
                   help="train a tiny count model first (seconds) and use it")
    r.set_defaults(func=large_run)
    args = ap.parse_args()
    if args.what == "large-run":
        args.corrupt = args.embryos // 10 if args.corrupt is None else args.corrupt
        args.kill_after = args.embryos // 3 if args.kill_after is None else args.kill_after
        if not (args.model or args.make_tiny_model):
            ap.error("large-run needs --model (a count model) or --make-tiny-model")
    args.func(args)


if __name__ == "__main__":
    main()
