"""Training jobs: a self-contained folder with ``job.json`` that runs anywhere.

A job names the model kind, the base weights, the datasets, the hyper-parameters, the length
(epochs and/or a wall-clock budget), the device and the seed. Relative dataset paths are
resolved against the job folder, so a folder made by :func:`export_job` with
``copy_data=True`` can be copied to a GPU server and run there unchanged with
``blastoseg train JOB_DIR``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from blastoseg.errors import BlastosegError
from blastoseg.io.atomic import atomic_write_text

__all__ = [
    "DEFAULT_HYPER",
    "JOB_FILE",
    "JobError",
    "TrainJob",
    "create_job",
    "export_job",
]

JOB_FILE = "job.json"
JOB_FORMAT_VERSION = 1

#: Engine hyper-parameters and their defaults (a task may read further keys from ``hyper``).
DEFAULT_HYPER: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "batch_size": 4,
    "grad_accum": 1,  # micro-batches per optimizer step
    "schedule": "cosine",  # "cosine" | "step" | "constant"
    "warmup_steps": 0,
    "min_lr_ratio": 0.01,  # cosine floor, as a fraction of lr
    "step_every": 1000,  # "step" schedule: multiply lr by gamma every N steps
    "gamma": 0.1,
    "grad_clip": None,  # max grad norm, or None
    "amp": True,  # mixed precision on CUDA only (ignored elsewhere)
    "max_steps": None,  # cap on optimizer steps (also sets the length if no epochs/budget)
    "log_every": 10,  # steps between "step" events
    "val_every": None,  # steps between validations (None: at each epoch end)
    "ckpt_every": 500,  # steps between checkpoints (0: off)
    "ckpt_every_s": 600.0,  # seconds between checkpoints (0: off)
    "num_workers": 0,  # DataLoader workers
    "fp16_weights": False,  # store the final .safetensors as float16
    "final_weights": "best",  # "best" (best validation metric, if any) or "last"
}


class JobError(BlastosegError):
    """A training job (``job.json``) is missing, malformed or inconsistent."""


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class TrainJob:
    """Everything a training run needs; saved as ``job.json`` in the job folder.

    Attributes
    ----------
    kind
        Model kind, a registered task (``"amodal"``, ``"overlap"``, ``"brightfield"``,
        ``"count"``, ``"oocyte"``, ...).
    train_data
        Dataset folders (or ``annotations.json`` files) to train on; relative paths are
        resolved against the job folder.
    val_data
        Validation datasets (may be empty: no validation).
    base
        Base model: a registry name or a ``.safetensors`` path (None: from scratch / the task's
        default initialisation).
    config
        Model architecture config passed to the task's ``build_model``.
    hyper
        Hyper-parameters; missing keys take :data:`DEFAULT_HYPER`.
    epochs
        Number of passes over the training data (None: use the time budget / max_steps).
    time_budget_min
        Wall-clock training budget in minutes (summed over resumed runs); the run stops at
        whichever of epochs / budget / ``hyper["max_steps"]`` comes first.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    seed
        Seeds Python, numpy and torch.
    output_name
        Name of the finished model in the registry (default ``<kind>-<job folder name>``).
    version
        Version string written into the model card.
    register
        Register the finished model in the user models folder.
    task_module
        Optional module to import before looking up ``kind`` (for tasks outside blastoseg).
    description
        Free text, copied into the model card.
    """

    kind: str
    train_data: list[str] = field(default_factory=list)
    val_data: list[str] = field(default_factory=list)
    base: str | None = None
    config: dict = field(default_factory=dict)
    hyper: dict = field(default_factory=dict)
    epochs: int | None = None
    time_budget_min: float | None = None
    device: str = "auto"
    seed: int = 0
    output_name: str | None = None
    version: str = "1"
    register: bool = True
    task_module: str | None = None
    description: str = ""
    format_version: int = JOB_FORMAT_VERSION
    # the folder the job was loaded from / saved to (not serialised)
    job_dir: Path | None = field(default=None, repr=False, compare=False)

    # --- derived ---------------------------------------------------------------------

    def hp(self, key: str) -> Any:
        """A hyper-parameter, falling back to :data:`DEFAULT_HYPER`."""
        if key in self.hyper:
            return self.hyper[key]
        return DEFAULT_HYPER.get(key)

    def resolve_path(self, path: str | os.PathLike) -> Path:
        """A dataset path as an absolute path (relative ones against the job folder)."""
        p = Path(path).expanduser()
        if not p.is_absolute() and self.job_dir is not None:
            p = self.job_dir / p
        return p.resolve()

    def train_paths(self) -> list[Path]:
        return [self.resolve_path(p) for p in self.train_data]

    def val_paths(self) -> list[Path]:
        return [self.resolve_path(p) for p in self.val_data]

    def model_name(self) -> str:
        if self.output_name:
            return self.output_name
        folder = self.job_dir.name if self.job_dir is not None else "model"
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.kind}-{folder}").strip("-.")
        return name[:100] or self.kind

    # --- validation / io -------------------------------------------------------------

    def validate(self, *, check_paths: bool = True) -> None:
        """Raise a :class:`JobError` that says what is wrong with this job."""
        problems: list[str] = []
        if not isinstance(self.kind, str) or not self.kind:
            problems.append("'kind' must be a non-empty string such as 'amodal'")
        for key in ("train_data", "val_data"):
            value = getattr(self, key)
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                problems.append(f"'{key}' must be a list of paths (strings)")
        if isinstance(self.train_data, list) and not self.train_data:
            problems.append("'train_data' is empty: name at least one dataset folder")
        if not isinstance(self.hyper, dict):
            problems.append("'hyper' must be an object")
        if not isinstance(self.config, dict):
            problems.append("'config' must be an object")
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            problems.append(f"'epochs' must be a positive integer or null, not {self.epochs!r}")
        if self.time_budget_min is not None and (
            not isinstance(self.time_budget_min, (int, float)) or self.time_budget_min <= 0
        ):
            problems.append(
                f"'time_budget_min' must be a positive number or null, not {self.time_budget_min!r}"
            )
        max_steps = self.hyper.get("max_steps") if isinstance(self.hyper, dict) else None
        if self.epochs is None and self.time_budget_min is None and not max_steps:
            problems.append("give 'epochs', 'time_budget_min' or hyper 'max_steps' (how long to train)")
        if not isinstance(self.seed, int):
            problems.append(f"'seed' must be an integer, not {self.seed!r}")
        if not isinstance(self.device, str):
            problems.append(f"'device' must be a string, not {self.device!r}")
        if self.output_name is not None and not (
            isinstance(self.output_name, str) and _NAME_RE.match(self.output_name)
        ):
            problems.append(
                f"'output_name' {self.output_name!r} is not a valid model name (letters, "
                "digits, '.', '_', '-')"
            )
        if isinstance(self.hyper, dict):
            for key in ("batch_size", "grad_accum"):
                v = self.hp(key)
                if not isinstance(v, int) or v < 1:
                    problems.append(f"hyper '{key}' must be a positive integer, not {v!r}")
            if self.hp("schedule") not in ("cosine", "step", "constant"):
                problems.append(
                    f"hyper 'schedule' must be 'cosine', 'step' or 'constant', "
                    f"not {self.hp('schedule')!r}"
                )
            if self.hp("final_weights") not in ("best", "last"):
                problems.append("hyper 'final_weights' must be 'best' or 'last'")
        if check_paths and not problems:
            for p in [*self.train_paths(), *self.val_paths()]:
                if not p.exists():
                    problems.append(f"dataset not found: {p}")
        if problems:
            where = f" in {self.job_dir / JOB_FILE}" if self.job_dir is not None else ""
            raise JobError(f"invalid training job{where}: " + "; ".join(problems))

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("job_dir", None)
        return data

    @classmethod
    def from_dict(cls, data: Any, job_dir: Path | None = None) -> TrainJob:
        where = f" {job_dir / JOB_FILE}" if job_dir is not None else ""
        if not isinstance(data, dict):
            raise JobError(f"training job{where} is not a JSON object")
        names = {f.name for f in fields(cls)} - {"job_dir"}
        unknown = sorted(set(data) - names)
        if unknown:
            raise JobError(
                f"training job{where} has unknown field(s) {', '.join(unknown)}; "
                f"known fields: {', '.join(sorted(names))}"
            )
        if "kind" not in data:
            raise JobError(f"training job{where} has no 'kind' (e.g. \"amodal\")")
        version = data.get("format_version", JOB_FORMAT_VERSION)
        if version != JOB_FORMAT_VERSION:
            raise JobError(
                f"training job{where} has format_version {version!r}; this blastoseg reads "
                f"version {JOB_FORMAT_VERSION} (update blastoseg?)"
            )
        job = cls(**data)
        job.job_dir = job_dir
        return job

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``job.json`` into ``folder`` (created if needed) and return its path."""
        folder = Path(folder)
        self.job_dir = folder.resolve()
        return atomic_write_text(folder / JOB_FILE, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike, *, check_paths: bool = True) -> TrainJob:
        """Read and validate ``folder/job.json`` (``folder`` may also be the file itself)."""
        folder = Path(folder)
        if folder.name == JOB_FILE and folder.is_file():
            folder = folder.parent
        path = folder / JOB_FILE
        if not folder.is_dir():
            raise JobError(f"job folder not found: {folder}")
        if not path.is_file():
            raise JobError(
                f"{folder} is not a training job folder: it has no {JOB_FILE} "
                "(create one with `blastoseg train KIND --data ... --out FOLDER`)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise JobError(f"{path} is not valid JSON: {exc}") from None
        try:
            job = cls.from_dict(data, folder.resolve())
        except TypeError as exc:  # pragma: no cover - guarded by from_dict
            raise JobError(f"{path}: {exc}") from None
        job.validate(check_paths=check_paths)
        return job


def _as_list(data: Any) -> list[str]:
    if data is None:
        return []
    if isinstance(data, (str, os.PathLike)):
        return [os.fspath(data)]
    return [os.fspath(p) for p in data]


def export_job(job: TrainJob, folder: str | os.PathLike, *, copy_data: bool = True) -> Path:
    """Write ``job`` as a self-contained job folder.

    With ``copy_data`` every dataset folder is copied to ``folder/data/<train|val>_<i>_<name>``
    and the job refers to it by a relative path, so the folder can be moved to another machine.
    Without it, dataset paths are stored as absolute paths.

    Returns
    -------
    Path
        The job folder.
    """
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    out = TrainJob.from_dict(job.to_dict(), folder)

    def place(paths: list[Path], split: str) -> list[str]:
        placed = []
        for i, src in enumerate(paths):
            if not src.exists():
                raise JobError(f"dataset not found: {src}")
            if not copy_data:
                placed.append(str(src))
                continue
            src_dir = src.parent if src.is_file() else src
            rel = Path("data") / f"{split}_{i}_{src_dir.name}"
            dest = folder / rel
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(src_dir, dest)
            placed.append((rel / src.name).as_posix() if src.is_file() else rel.as_posix())
        return placed

    out.train_data = place(job.train_paths(), "train")
    out.val_data = place(job.val_paths(), "val")
    out.validate()
    out.save(folder)
    return folder


def create_job(
    kind: str,
    train_data: str | os.PathLike | list,
    out: str | os.PathLike,
    *,
    val_data: str | os.PathLike | list | None = None,
    base: str | None = None,
    config: dict | None = None,
    hyper: dict | None = None,
    epochs: int | None = None,
    time_budget_min: float | None = None,
    device: str = "auto",
    seed: int = 0,
    name: str | None = None,
    copy_data: bool = False,
    register: bool = True,
    task_module: str | None = None,
    description: str = "",
    overwrite: bool = False,
) -> Path:
    """Make a job folder ``out`` with ``job.json`` (the CLI's ``blastoseg train KIND ...``).

    Dataset paths are stored absolute, or copied into the folder with ``copy_data=True``
    (portable). An existing ``out/job.json`` is an error unless ``overwrite``.

    Returns
    -------
    Path
        The job folder, ready for :func:`blastoseg.train.run_job`.
    """
    from blastoseg.train.task import get_task  # imports torch: only when a job is made

    get_task(kind, task_module)  # unknown kind: a clear error now, not when the job runs
    out = Path(out)
    if (out / JOB_FILE).exists() and not overwrite:
        raise JobError(
            f"{out} already holds a training job; run it with `blastoseg train {out}` "
            "(it resumes), or choose another output folder"
        )
    job = TrainJob(
        kind=kind,
        train_data=[str(Path(p).expanduser().resolve()) for p in _as_list(train_data)],
        val_data=[str(Path(p).expanduser().resolve()) for p in _as_list(val_data)],
        base=base,
        config=dict(config or {}),
        hyper=dict(hyper or {}),
        epochs=epochs,
        time_budget_min=time_budget_min,
        device=device,
        seed=seed,
        output_name=name,
        register=register,
        task_module=task_module,
        description=description,
    )
    job.validate()
    return export_job(job, out, copy_data=copy_data)
