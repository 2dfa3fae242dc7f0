"""Run training jobs in the background and follow them (no Qt): the library under the napari
"Fine-tune a model" widget.

- :func:`launch_job` starts ``python -m blastoseg train JOB_DIR --quiet`` as a detached
  subprocess (its own session / process group, output in ``JOB_DIR/train.log``, pid in
  ``JOB_DIR/pid``), so closing napari does not stop the training.
- :func:`read_progress` parses ``events.jsonl`` incrementally into a :class:`JobProgress`
  (loss and validation series, step / total, ETA, state).
- :func:`cancel_job` asks the run to stop (SIGTERM: the engine saves a checkpoint);
  :func:`resume_job` launches it again and the engine continues from that checkpoint.

Making a fine-tuning job (with data checks), exporting and importing: :mod:`.finetune`.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from blastoseg.io.atomic import atomic_write_text
from blastoseg.train.events import EVENTS_FILE, parse_event_line
from blastoseg.train.job import JOB_FILE, JobError, TrainJob

__all__ = ["LOG_FILE", "PID_FILE", "STATES", "JobProgress", "cancel_job", "launch_job",
           "read_progress", "resume_job"]

PID_FILE = "pid"
LOG_FILE = "train.log"
STATES = ("not started", "running", "done", "failed", "cancelled", "stopped")
_CHILDREN: dict[int, subprocess.Popen] = {}  # processes this process launched (reaped by poll)


# --- processes ------------------------------------------------------------------------------

def _read_pid_file(job_dir: Path) -> dict:
    """``{"pid", "launched", "command"[, "cancel_requested"]}`` of the last launch, or {}."""
    try:
        data = json.loads((job_dir / PID_FILE).read_text())
        return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else {}
    except (OSError, ValueError):
        return {}


def _mark_cancel(job_dir: Path) -> None:
    """Note the cancel in the pid file: a run killed by it before its signal handlers were
    installed (while importing) then reads as "cancelled", not "failed"."""
    data = _read_pid_file(job_dir)
    if data:
        atomic_write_text(job_dir / PID_FILE, json.dumps(
            {**data, "cancel_requested": time.time()}) + "\n")


def _pid_alive(pid: int | None, since: float = 0.0) -> bool:
    """Is ``pid`` a live process that started no later than ``since`` (+ slack)? The start
    time guards against a recycled pid (e.g. after a reboot)."""
    if not pid or pid <= 0:
        return False
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None  # also reaps our own finished child (no zombie)
    if pid == os.getpid():
        return True
    try:
        import psutil  # napari depends on it; optional here

        proc = psutil.Process(pid)
        return (proc.status() != psutil.STATUS_ZOMBIE
                and (not since or proc.create_time() <= since + 5.0))
    except ImportError:
        pass
    except Exception:  # NoSuchProcess, AccessDenied ...
        return False
    if sys.platform == "win32":  # pragma: no cover - Windows without psutil
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: ``python -m blastoseg`` without the working folder on the module path: the job runs in its
#: folder, and job folders travel between machines, so a ``blastoseg.py`` or task module placed
#: there must never be imported (only installed code runs)
SAFE_MAIN = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
             "from blastoseg.cli import main; sys.exit(main(sys.argv[1:]))")


def launch_job(job_dir: str | os.PathLike) -> subprocess.Popen:
    """Start ``python -m blastoseg train JOB_DIR --quiet`` in the background and return it.

    The process gets its own session (POSIX) / process group (Windows) so it outlives the
    caller (closing napari does not stop it); stdout and stderr go to ``JOB_DIR/train.log``,
    events to ``JOB_DIR/events.jsonl``, its pid to ``JOB_DIR/pid``. The engine resumes from
    the job's last checkpoint when there is one. JobError if the job is invalid or running.
    """
    job_dir = Path(job_dir).resolve()
    TrainJob.load(job_dir)  # a clear error now rather than a dead subprocess
    progress = read_progress(job_dir)
    if progress.state == "running":
        raise JobError(f"the job in {job_dir} is running already (process {progress.pid})")
    cmd = [sys.executable, "-c", SAFE_MAIN, "train", str(job_dir), "--quiet"]
    kwargs: dict = {}
    if sys.platform == "win32":  # pragma: no cover
        kwargs["creationflags"] = (subprocess.CREATE_NEW_PROCESS_GROUP
                                   | subprocess.CREATE_NO_WINDOW)
    else:
        kwargs["start_new_session"] = True
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(job_dir / LOG_FILE, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {sys.executable} -m blastoseg "
                  f"train {job_dir} --quiet (the job folder is not on the module path)\n"
                  .encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=job_dir, env=env, **kwargs)
    proc.blastoseg_job_dir = job_dir  # what cancel_job marks
    _CHILDREN[proc.pid] = proc
    atomic_write_text(job_dir / PID_FILE, json.dumps(
        {"pid": proc.pid, "launched": time.time(), "command": cmd}) + "\n")
    return proc


def cancel_job(target: str | os.PathLike | subprocess.Popen) -> bool:
    """Ask a running job to stop: SIGTERM, after which the engine finishes the current step,
    saves a checkpoint and writes a "cancelled" event (Resume continues from there). On
    Windows the process is terminated (no checkpoint beyond the last interval one).
    Returns False when nothing was running."""
    if isinstance(target, subprocess.Popen):
        if target.poll() is not None:
            return False
        job_dir = getattr(target, "blastoseg_job_dir", None)
        if job_dir is not None:  # launched by launch_job
            _mark_cancel(Path(job_dir))
        target.terminate()  # SIGTERM on POSIX, TerminateProcess on Windows
        return True
    progress = read_progress(target)
    if progress.state != "running" or not progress.pid:
        return False
    _mark_cancel(progress.job_dir)
    child = _CHILDREN.get(progress.pid)
    if child is not None:
        return cancel_job(child)
    os.kill(progress.pid, signal.SIGTERM)
    return True


def resume_job(job_dir: str | os.PathLike) -> subprocess.Popen:
    """Launch a cancelled, stopped or failed job again; it continues from its last
    checkpoint. JobError when it is running or finished already."""
    progress = read_progress(job_dir)
    if progress.state == "done":
        raise JobError(f"the job in {job_dir} has finished already"
                       + (f" (registered as {progress.model!r})" if progress.model else ""))
    return launch_job(job_dir)


# --- progress -------------------------------------------------------------------------------

@dataclass
class JobProgress:
    """What a job's events say so far (see :func:`read_progress`).

    ``loss`` is ``[(step, loss)]``; ``validation`` is ``[(step, metrics)]`` and includes the
    base model's metrics at the first step of a fine-tuning run (``metrics_before``).
    """

    job_dir: Path
    state: str = "not started"
    message: str = ""
    step: int = 0
    total_steps: int | None = None
    epoch: int = 0
    eta_s: float | None = None
    time_budget_s: float | None = None
    elapsed_s: float = 0.0
    loss: list = field(default_factory=list)
    validation: list = field(default_factory=list)
    main_metric: str | None = None
    metrics_before: dict | None = None
    metrics: dict | None = None
    checkpoint_step: int | None = None
    model: str | None = None
    weights: str | None = None
    device: str | None = None
    pid: int | None = None
    offset: int = 0  # bytes of events.jsonl parsed
    # internals for the state
    _run_pid: int | None = field(default=None, repr=False)
    _run_start: float = field(default=0.0, repr=False)
    _terminal: str | None = field(default=None, repr=False)
    _terminal_time: float = field(default=0.0, repr=False)
    _eta_time: float = field(default=0.0, repr=False)
    _file_id: tuple = field(default=(), repr=False)

    @property
    def fraction(self) -> float | None:
        """Share of the run done (steps, or time for a pure time budget), or None."""
        if self.state == "done":
            return 1.0
        if self.total_steps:
            return min(self.step / self.total_steps, 1.0)
        if self.time_budget_s:
            return min(self.elapsed_s / self.time_budget_s, 1.0)
        return None

    @property
    def resumable(self) -> bool:
        return self.state in ("cancelled", "stopped", "failed")

    def eta_text(self) -> str:
        if self.state != "running" or self.eta_s is None:
            return ""
        left = max(self.eta_s - (time.time() - self._eta_time), 0.0)
        return "less than a minute left" if left < 60 else f"about {round(left / 60)} min left"

    def _apply(self, e: dict) -> None:
        kind, step = e["event"], int(e.get("step") or 0)
        if step > 0 or kind not in ("failed", "cancelled"):  # errors outside the loop say 0
            self.step, self.epoch = step, int(e.get("epoch") or 0)
        if kind == "start":
            if e.get("resumed"):  # steps after the checkpoint are trained again: drop them
                self.loss = [p for p in self.loss if p[0] <= step]
                self.validation = [p for p in self.validation if p[0] <= step]
            else:
                self.loss, self.validation, self.metrics_before = [], [], None
            self.total_steps, self.time_budget_s = e.get("total_steps"), e.get("time_budget_s")
            self.device, self._run_pid = e.get("device_description"), e.get("pid")
            self._run_start, self._terminal, self.eta_s = float(e["time"]), None, None
            self.message = e.get("message", "")
        elif kind == "step":
            if e.get("loss") is not None:
                self.loss.append((step, float(e["loss"])))
            self.eta_s, self._eta_time = e.get("eta_s"), float(e["time"])
            self.total_steps = e.get("total_steps", self.total_steps)
            self.elapsed_s = float(e.get("elapsed_s") or self.elapsed_s)
        elif kind == "validation":
            self.validation.append((step, dict(e.get("metrics") or {})))
            self.main_metric = e.get("main_metric") or self.main_metric
            if e.get("before"):
                self.metrics_before = dict(e.get("metrics") or {})
        elif kind == "checkpoint":
            self.checkpoint_step = step
        elif kind == "calibrated":  # counting re-calibrated before registration
            self.message = (f"counting calibrated: score threshold "
                            f"{e.get('score_threshold')}, mask NMS IoU {e.get('mask_nms_iou')}")
        else:  # done / failed / cancelled
            self._terminal, self._terminal_time = kind, float(e["time"])
            self.message = e.get("message", kind)
            if kind == "done":
                self.model, self.weights = e.get("model"), e.get("weights")
                self.metrics = e.get("metrics")
                self.elapsed_s = float(e.get("elapsed_s") or self.elapsed_s)


def _log_tail(job_dir: Path, n: int = 3) -> str:
    try:
        lines = (job_dir / LOG_FILE).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in lines[-n:] if line.strip())


def read_progress(job_dir: str | os.PathLike, previous: JobProgress | None = None
                  ) -> JobProgress:
    """The job's progress from its events; pass the last result as ``previous`` to parse only
    the bytes written since (a half-written last line waits for the next call).

    ``state``: "not started", "running", "done", "failed", "cancelled" (a checkpoint was
    saved) or "stopped" (the process ended without a final event: killed, or the computer
    restarted; Resume continues from the last interval checkpoint).
    """
    job_dir = Path(job_dir).resolve()
    path = job_dir / EVENTS_FILE
    try:
        st = path.stat()
        file_id = (st.st_dev, st.st_ino)
    except OSError:
        st, file_id = None, ()
    if (previous is not None and previous.job_dir == job_dir and previous._file_id == file_id
            and st is not None and st.st_size >= previous.offset):
        progress = copy.copy(previous)
        progress.loss, progress.validation = list(previous.loss), list(previous.validation)
    else:  # first call, another job, or the file was replaced / truncated: from the start
        progress = JobProgress(job_dir)
    progress._file_id = file_id
    if st is not None and st.st_size > progress.offset:
        with open(path, "rb") as fh:
            fh.seek(progress.offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1  # only complete lines
        for line in chunk[:end].splitlines():
            event = parse_event_line(line)
            if event is not None:
                progress._apply(event)
        progress.offset += end
    _set_state(progress)
    return progress


def _set_state(p: JobProgress) -> None:
    launch = _read_pid_file(p.job_dir)
    launched_pid, launched = launch.get("pid"), float(launch.get("launched") or 0.0)
    relaunched = launched_pid is not None and launched > max(p._run_start, p._terminal_time)
    if relaunched:  # launched after the last event: a new run that has not reported yet
        if _pid_alive(launched_pid, launched):
            p.state, p.pid = "running", launched_pid
            p.message = "starting (loading the data and the model)..."
        elif launch.get("cancel_requested"):
            p.state, p.pid = "cancelled", None
            p.message = "cancelled while starting; Resume " + (
                "starts it" if p.checkpoint_step is None else
                f"continues from step {p.checkpoint_step}")
        else:
            p.state, p.pid = "failed", None
            p.message = "the training process ended before it started: " + (
                _log_tail(p.job_dir) or f"see {p.job_dir / LOG_FILE}")
        return
    if p._terminal is not None:
        p.state, p.pid = p._terminal, None
        return
    if p._run_start and _pid_alive(p._run_pid, p._run_start):
        p.state, p.pid = "running", p._run_pid
        return
    p.pid = None
    if p._run_start:
        p.state = "stopped"
        at = (f"from step {p.checkpoint_step}" if p.checkpoint_step is not None
              else "from the beginning (no checkpoint yet)")
        p.message = (f"the training process stopped at step {p.step} without finishing (killed "
                     f"or the computer restarted); Resume continues {at}")
    else:
        p.state = "not started"
        p.message = ("no training job here" if not (p.job_dir / JOB_FILE).is_file()
                     else "not started yet")
