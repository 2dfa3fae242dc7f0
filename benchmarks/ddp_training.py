"""DDP training on the CPU: 2 gloo processes against 1 process with the same global batch,
and a resume after the run is killed. Prints tables; plots the loss curves.

A tiny Cell-Net count model (the count kind, S2) on ``--frames`` synthetic frames: one
process with batch ``2 x B`` and ``blastoseg train JOB --nproc 2`` with batch ``B`` per
process (the same global batch, the same seed), ``--steps`` steps each. The distributed
sampler deals the single process's sample order out to the ranks, so both runs see the same
samples at every step; what differs is the augmentation's random draws (each process has its
own stream) and the float rounding of the gradient all-reduce.

Then the kill: the 2-process job is started again with 4 x the steps and killed (SIGKILL to
torchrun and its workers) after ``--kill-at`` steps; ``blastoseg train JOB --nproc 2`` again
resumes from the last checkpoint (every ``--ckpt-every`` steps) and finishes.

Usage::

    nice python benchmarks/ddp_training.py --steps 30 --plot docs/images/ddp_loss_curve.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cli(*argv: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blastoseg", *argv], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=1800)


def _events(job: Path) -> list[dict]:
    from blastoseg.train import read_events

    return read_events(job)


def _losses(job: Path) -> list[float]:
    return [e["loss"] for e in _events(job) if e["event"] == "step"]


def _job(tmp: Path, name: str, data: Path, batch: int, steps: int, ckpt_every: int,
         env: dict) -> Path:
    cfg = tmp / f"{name}.json"
    cfg.write_text(json.dumps({"model": {"working_size": 64, "pyramid_channels": 8,
                                         "puc_width": 1},
                               "hyper": {"max_steps": steps, "batch_size": batch,
                                         "log_every": 1, "ckpt_every": ckpt_every,
                                         "val_every": 10**6, "threads": 1}}))
    p = subprocess.run([sys.executable, "-c", (
        "import sys, json; from blastoseg.train import create_job; "
        f"cfg = json.load(open({str(cfg)!r})); hyper = cfg.pop('hyper'); "
        f"create_job('count', {str(data)!r}, {str(tmp / name)!r}, config=cfg, hyper=hyper, "
        f"device='cpu', seed=3, name={name!r})")], env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(p.stderr)
    return tmp / name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=2, help="per process (the single run: 2x)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--kill-at", type=int, default=12)
    ap.add_argument("--ckpt-every", type=int, default=5)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "BLASTOSEG_HOME": str(tmp / "home"), "OMP_NUM_THREADS": "1"}
        data = tmp / "data"
        _cli("synth", "embryos", "--n", str(args.frames), "--seed", "11", "--size", "128",
             "--out", str(data), env=env, cwd=tmp)
        one = _job(tmp, "one", data, 2 * args.batch, args.steps, 0, env)
        two = _job(tmp, "two", data, args.batch, args.steps, 0, env)
        t = time.perf_counter()
        assert _cli("train", str(one), "--quiet", env=env, cwd=tmp).returncode == 0
        t_one = time.perf_counter() - t
        t = time.perf_counter()
        p = _cli("train", str(two), "--nproc", "2", "--quiet", env=env, cwd=tmp)
        if p.returncode:
            raise SystemExit("\n".join(ln for ln in p.stderr.splitlines()
                                        if "find_unused_parameters" not in ln))
        t_two = time.perf_counter() - t
        l1, l2 = _losses(one), _losses(two)
        start = _events(two)[0]

        # kill and resume
        # long enough that the kill comes mid-run (the tiny model does ~10 steps/s)
        killed = _job(tmp, "killed", data, args.batch, 4 * args.steps, args.ckpt_every, env)
        proc = subprocess.Popen([sys.executable, "-m", "blastoseg", "train", str(killed),
                                 "--nproc", "2", "--quiet"], env=env, cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            steps = [e["step"] for e in _events(killed) if e["event"] == "step"]
            if steps and steps[-1] >= args.kill_at:
                # torchrun starts each rank in a session of its own: kill every process
                import psutil

                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                proc.kill()
                break
            if proc.poll() is not None:
                raise SystemExit("the run ended before the kill")
            time.sleep(0.05)
        proc.wait()
        cut = max(steps)
        p = _cli("train", str(killed), "--nproc", "2", "--quiet", env=env, cwd=tmp)
        ev = _events(killed)
        resumed = [e for e in ev if e["event"] == "start"][-1]
        after = [e["step"] for e in ev[ev.index(resumed):] if e["event"] == "step"]
        done = ev[-1]["event"] == "done" and p.returncode == 0
        l3 = {e["step"]: e["loss"] for e in ev if e["event"] == "step"}

    print(f"\ntiny Cell-Net on {args.frames} synthetic frames, {args.steps} steps, CPU, "
          f"global batch {2 * args.batch}\n")
    print("| run | world size | backend | batch per process | first loss | mean loss, last 10 "
          "steps | wall s |")
    print("|---|---|---|---|---|---|---|")
    m1, m2 = sum(l1[-10:]) / 10, sum(l2[-10:]) / 10
    print(f"| 1 process | 1 | - | {2 * args.batch} | {l1[0]:.4f} | {m1:.4f} | {t_one:.1f} |")
    print(f"| torchrun --nproc 2 | {start['world_size']} | {start['distributed_backend']} | "
          f"{args.batch} | {l2[0]:.4f} | {m2:.4f} | {t_two:.1f} |")
    rel = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(l1, l2, strict=True)]
    print(f"\nper-step relative difference of the loss: median {sorted(rel)[len(rel) // 2]:.3f}, "
          f"max {max(rel):.3f}")
    print(f"\nkilled (SIGKILL) after step {cut}; last checkpoint every {args.ckpt_every} steps; "
          f"rerun resumed from step {resumed['resumed_from_step']} with world size "
          f"{resumed['world_size']}, ran steps {after[0]}..{after[-1]}, finished: {done}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
        ax.plot(range(1, len(l1) + 1), l1, label=f"1 process, batch {2 * args.batch}")
        ax.plot(range(1, len(l2) + 1), l2, "--", label=f"2 processes (gloo), batch {args.batch} each")
        ks = [k for k in sorted(l3) if k <= args.steps]
        ax.plot(ks, [l3[k] for k in ks], ":", label=f"2 processes, killed at {cut}, resumed")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.set_title("DDP on CPU: the same global batch, the same curve")
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
