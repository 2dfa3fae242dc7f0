"""The large reliability cases (issue 18) that are too slow for the test suite: many images,
a long stack segmented from the command line, and repeated kill -9 of a training job.

    nice python benchmarks/reliability.py --size small --doc docs/reliability.md
    nice python benchmarks/reliability.py --size full  --doc docs/reliability.md
    nice python benchmarks/reliability.py --size full --cases stack --doc docs/reliability.md

``--size full``: 10,000 images, a 1,000-frame stack, 50 kills; ``small``: 1,000 images, a
200-frame stack, 10 kills. The stack is segmented at a quarter and at its full length, as a
multi-page TIFF and as a folder of PNG frames. ``--cases`` runs some cases only. Every case runs in its own Python process (its peak RSS is its own,
``ru_maxrss``) with ``BLASTOSEG_HOME`` in the work folder, and checks that nothing was lost:
every image and annotation read back, one result row per frame, every training step logged
and the event log intact after each kill. ``--doc`` replaces the table between the
``reliability-table`` markers of that file (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"small": {"images": 1000, "frames": 200, "kills": 10, "steps": 300},
         "full": {"images": 10000, "frames": 1000, "kills": 50, "steps": 1500}}
BEGIN, END = "<!-- reliability-table -->", "<!-- /reliability-table -->"

# each case is a child process printing one JSON line: {"ok": bool, "lost": str, ...}
_PEAK = "import resource, json; _peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss"

MANY_IMAGES = _PEAK + """
import numpy as np, sys
from pathlib import Path
from blastoseg.instances import FrameInstances
from blastoseg.io.dataset import Sample, write_dataset, read_dataset
n, root = int(sys.argv[1]), Path(sys.argv[2])
def samples():
    rng = np.random.default_rng(0)
    for i in range(n):
        m = np.zeros((1, 48, 48), bool); r = 4 + i % 12
        m[0, 24 - r:24 + r, 24 - r:24 + r] = True
        yield Sample(image=rng.integers(0, 255, (48, 48), np.uint8),
                     instances=FrameInstances(masks=m))
write_dataset(root, samples(), {1: "blastomere"})
ds = read_dataset(root)
areas = [int(ds.instances(i).masks.sum()) for i in range(len(ds))]
want = [(2 * (4 + i % 12)) ** 2 for i in range(n)]
print(json.dumps({"ok": len(ds) == n and areas == want, "peak_kb": _peak(),
                  "lost": f"{len(ds)} of {n} images, {sum(a != w for a, w in zip(areas, want))} masks changed"}))
"""

FRAME_FOLDER = _PEAK + """
import numpy as np, sys, imageio.v3 as iio
from pathlib import Path
from blastoseg.io import read_images
n, root = int(sys.argv[1]), Path(sys.argv[2])
root.mkdir(parents=True, exist_ok=True)
for t in range(n):
    iio.imwrite(root / f"frame_{t:05d}.png", np.full((48, 48), t % 251, np.uint8))
stack = read_images(root)
ok = stack.data.shape == (n, 48, 48) and all(int(stack.data[t, 0, 0]) == t % 251 for t in range(n))
print(json.dumps({"ok": ok, "peak_kb": _peak(),
                  "lost": f"{stack.data.shape[0]} of {n} frames, in order: {ok}"}))
"""

SEGMENT = _PEAK + """
import sys, csv
from pathlib import Path
from blastoseg.cli import main
stack, out, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
rc = main(["segment", "amodal", stack, "--out", str(out), "--device", "cpu", "--no-localise"])
rows = list(csv.DictReader(open(out / "counts.csv")))
frames = sorted(int(r["frame"]) for r in rows)
ok = rc == 0 and frames == list(range(n))
print(json.dumps({"ok": ok, "peak_kb": _peak(), "lost": f"{len(rows)} of {n} frames in counts.csv"}))
"""


def _child(code: str, *args: str, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"ok": False, "peak_kb": 0, "lost": f"crashed: {proc.stderr.strip()[-300:]}"}
    return json.loads(lines[-1])


def _frames(n: int):
    """``n`` 256 x 256 frames of a synthetic 4-cell embryo with a little noise."""
    import numpy as np

    from blastoseg.synth import EmbryoConfig, render_embryo

    frame = np.asarray(render_embryo(4, seed=1, config=EmbryoConfig(image_size=(256, 256))).image)
    rng = np.random.default_rng(0)
    for _ in range(n):
        noise = rng.integers(-3, 4, frame.shape)
        yield np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _stack(path: Path, n: int) -> None:
    """A multi-page TIFF of ``n`` frames."""
    import tifffile

    with tifffile.TiffWriter(path) as tw:
        for frame in _frames(n):
            tw.write(frame, contiguous=True)


def _folder(path: Path, n: int) -> None:
    """A folder of ``n`` PNG frames (``frame_00000.png``, ...)."""
    import imageio.v3 as iio

    path.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(_frames(n)):
        iio.imwrite(path / f"frame_{t:05d}.png", frame)


def _steps_logged(job: Path) -> int:
    try:
        return (job / "events.jsonl").read_text().count('"event": "step"')
    except FileNotFoundError:
        return 0


def _kills(work: Path, kills: int, steps: int, env: dict) -> dict:
    """kill -9 a shape-prior training job ``kills`` times at random moments, resuming it
    each time, then let it finish; check the event log and the steps."""
    from blastoseg.train import create_job
    from blastoseg.train.events import read_events

    data = work / "kill_data"
    subprocess.run([sys.executable, "-m", "blastoseg", "synth", "embryos", "--n", "8",
                    "--seed", "5", "--size", "128", "--out", str(data)], check=True,
                   capture_output=True, env=env)
    job = work / "kill_job"
    create_job("shape_prior", [str(data)], job, name="reliability-prior",
               hyper={"max_steps": steps, "batch_size": 16, "log_every": 1, "ckpt_every": 1})
    again = [sys.executable, "-m", "blastoseg", "train", str(job), "--quiet"]
    rng = random.Random(0)
    done_kills = 0
    for _ in range(kills):
        before = _steps_logged(job)
        proc = subprocess.Popen(again, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while proc.poll() is None and _steps_logged(job) <= before:
            time.sleep(0.05)  # killed only once it has made progress
        time.sleep(rng.uniform(0.0, 0.3))  # then at a random moment of a step
        if proc.poll() is not None:
            break  # it finished before this kill
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done_kills += 1
    code = _PEAK + "\nimport sys\nfrom blastoseg.cli import main\nrc = main(sys.argv[1:])\n" \
        "print(json.dumps({'rc': rc, 'peak_kb': _peak()}))"
    final = subprocess.run([sys.executable, "-c", code, "train", str(job), "--quiet"],
                           capture_output=True, text=True, env=env)
    lines = [ln for ln in final.stdout.splitlines() if ln.startswith("{")]
    peak = json.loads(lines[-1])["peak_kb"] if lines else 0
    events = read_events(job)  # raises on a damaged line
    raw = (job / "events.jsonl").read_text().splitlines()
    steps_seen = {e["step"] for e in events if e["event"] == "step"}
    leftovers = [p.name for p in job.rglob("*.tmp")]
    ok = (events[-1]["event"] == "done" and steps_seen >= set(range(1, steps + 1))
          and len(raw) == len(events) and not leftovers)
    return {"ok": ok, "peak_kb": peak, "kills": done_kills,
            "lost": f"{done_kills} kills; steps 1-{steps} all logged: "
                    f"{steps_seen >= set(range(1, steps + 1))}; {len(raw)} event lines, all "
                    f"parse: {len(raw) == len(events)}; temp files left: {len(leftovers)}"}


CASES = ("images", "folder", "stack", "kills")
#: each table row's case -> its name for ``--cases``
CASE_OF = {"dataset written, read back, every mask compared": "images",
           "folder of frames read as one stack": "folder",
           "`segment amodal` of a multi-page TIFF (256 x 256 frames, 1 thread)": "stack",
           "`segment amodal` of a folder of PNG frames (256 x 256 frames, 1 thread)": "stack",
           "kill -9 a training job at random moments, resume, finish": "kills"}


def run(size: str, work: Path, cases: tuple[str, ...] = CASES) -> list[dict]:
    n = SIZES[size]
    env = {**os.environ, "BLASTOSEG_HOME": str(work / "home"), "OMP_NUM_THREADS": "1"}
    rows = []

    def case(name: str, amount: str, fn) -> None:
        if CASE_OF[name] not in cases:
            return
        t = time.time()
        result = fn()
        result.update(case=name, amount=amount, seconds=round(time.time() - t))
        rows.append(result)
        print(json.dumps(result), flush=True)

    case("dataset written, read back, every mask compared", f"{n['images']:,} images",
         lambda: _child(MANY_IMAGES, str(n["images"]), str(work / "many"), env=env))
    case("folder of frames read as one stack", f"{n['images']:,} frames",
         lambda: _child(FRAME_FOLDER, str(n["images"]), str(work / "frames"), env=env))
    for what, write in (("a multi-page TIFF", _stack), ("a folder of PNG frames", _folder)):
        for frames in (n["frames"] // 4, n["frames"]):
            name = f"`segment amodal` of {what} (256 x 256 frames, 1 thread)"
            if CASE_OF[name] not in cases:
                continue
            path = work / f"{write.__name__[1:]}{frames}{'.tif' if write is _stack else ''}"
            if not path.exists():
                write(path, frames)
            out = work / f"seg_{path.name}"
            case(name, f"{frames:,} frames",
                 lambda p=path, f=frames, o=out: _child(SEGMENT, str(p), str(o), str(f),
                                                        env=env))
    case("kill -9 a training job at random moments, resume, finish",
         f"{n['kills']} kills, {n['steps']} steps",
         lambda: _kills(work, n["kills"], n["steps"], env))
    return rows


def _row(r: dict) -> str:
    return (f"| {r['case']} | {r['amount']} | {'ok' if r['ok'] else 'FAILED'} | "
            f"{r['peak_kb'] / 1024:,.0f} MB | {r['lost']} | {r['seconds']} |")


def table(rows: list[dict], size: str, cases: tuple[str, ...] = CASES,
          earlier: str = "") -> str:
    """The table of ``rows``; when only some ``cases`` ran, the rows of the others are kept
    from ``earlier`` (the table in the doc) and the heading says which were re-run."""
    sizes = ", ".join(f"{k} {v}" for k, v in SIZES[size].items())
    head = f"Last run: `--size {size}` ({sizes}), {time.strftime('%Y-%m-%d')}, CPU."
    lines = [ln for ln in earlier.splitlines() if ln.startswith("| ") and ln[2:6] != "case"]
    new = {(r["case"], r["amount"]): _row(r) for r in rows}
    if set(cases) == set(CASES) or not lines:
        body = list(new.values())
    else:
        head = (f"Last run of `--cases {' '.join(cases)}`: `--size {size}` ({sizes}), "
                f"{time.strftime('%Y-%m-%d')}, CPU; the other rows are from an earlier run.")
        keys = [tuple(c.strip() for c in ln.split("|")[1:3]) for ln in lines]
        body = [new.pop(k, ln) for k, ln in zip(keys, lines, strict=True)
                if k[0] in CASE_OF and CASE_OF[k[0]] not in cases or k in new]
        body += list(new.values())
    return "\n".join([head, "", "| case | size | outcome | peak RSS | nothing lost? | seconds |",
                      "|---|---|---|---:|---|---:|", *body])


def doc_table(doc: Path) -> str:
    """The table between the markers of ``doc`` ("" when none)."""
    s = doc.read_text() if doc.exists() else ""
    return s[s.index(BEGIN) + len(BEGIN):s.index(END)] if BEGIN in s and END in s else ""


def write_doc(doc: Path, text: str) -> None:
    s = doc.read_text()
    if BEGIN in s and END in s:
        s = s[:s.index(BEGIN) + len(BEGIN)] + "\n" + text + "\n" + s[s.index(END):]
    else:
        s += f"\n{BEGIN}\n{text}\n{END}\n"
    doc.write_text(s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temp one)")
    ap.add_argument("--doc", type=Path, default=None, help="write the table into this file")
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES),
                    help="run only these cases (--doc keeps the other rows of its table)")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="blastoseg-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    cases = tuple(args.cases)
    rows = run(args.size, work, cases)
    text = table(rows, args.size, cases, doc_table(args.doc) if args.doc else "")
    print(text)
    if args.doc:
        write_doc(args.doc, text)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
