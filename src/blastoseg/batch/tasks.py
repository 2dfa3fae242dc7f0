"""What each batch task runs: the single-input command line verb, with the same options.

A batch task is one ``blastoseg`` verb run on one embryo into ``OUT/<embryo>/<task>/``, so
its files are exactly those of ``blastoseg segment <kind> INPUT --out DIR`` (or
``blastoseg timeline``): the batch parses the verb's own arguments with the CLI's parser and
calls the verb's function, it does not re-implement any of them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from blastoseg.errors import BlastosegError

__all__ = ["BATCH_TASKS", "TaskSettings", "check_settings", "parse_task", "task_argv"]

#: task -> the verb that runs it (segment kinds: ``segment <kind>``; timeline: ``timeline``)
BATCH_TASKS = {"amodal": ("segment", "amodal"), "count": ("segment", "count"),
               "overlap": ("segment", "overlap"), "brightfield": ("segment", "brightfield"),
               "timeline": ("timeline",)}


@dataclass(frozen=True)
class TaskSettings:
    """The options of a batch that change its results (recorded per embryo in the manifest:
    an embryo done with other settings is done again).

    ``models`` maps a task to a model (name, .safetensors or job folder); a task without one
    uses its verb's default. ``plane`` is the focal plane of (T, Z, Y, X) input for the
    segment verbs.
    """

    tasks: tuple[str, ...] = ("amodal",)
    models: Mapping[str, str] = field(default_factory=dict)
    device: str = "auto"
    plane: int = 0

    def to_dict(self) -> dict:
        return {"tasks": list(self.tasks), "models": dict(sorted(self.models.items())),
                "device": self.device, "plane": self.plane}


def task_argv(task: str, input_path: str | Path, out_dir: str | Path,
              settings: TaskSettings) -> list[str]:
    """The command line of ``task`` on one input (what a user would type for one embryo)."""
    verb = list(BATCH_TASKS[task])
    argv = [*verb, str(input_path), "--out", str(out_dir), "--device", settings.device]
    if settings.models.get(task):
        argv += ["--model", str(settings.models[task])]
    if verb[0] == "segment":
        argv += ["--plane", str(settings.plane)]
    return argv


@functools.lru_cache(maxsize=1)
def _parser() -> argparse.ArgumentParser:
    from blastoseg.cli import build_parser

    return build_parser()


def parse_task(argv: Sequence[str]) -> argparse.Namespace:
    """The CLI's parse of ``argv``; a parse error becomes a :class:`BlastosegError` with
    argparse's message (argparse itself would exit the worker)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return _parser().parse_args(list(argv))
    except SystemExit:
        lines = [ln for ln in err.getvalue().strip().splitlines() if ln.strip()]
        raise BlastosegError(f"`blastoseg {' '.join(argv[:2])}`: "
                             f"{lines[-1] if lines else 'bad arguments'}") from None


def check_settings(settings: TaskSettings) -> None:
    """Refuse unknown tasks and options the verbs would refuse, before any embryo is sent."""
    unknown = [t for t in settings.tasks if t not in BATCH_TASKS]
    if unknown or not settings.tasks:
        raise BlastosegError(f"unknown batch task(s) {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(BATCH_TASKS)}")
    extra = sorted(set(settings.models) - set(settings.tasks))
    if extra:
        raise BlastosegError(f"--model for {', '.join(extra)}, which is not among the tasks "
                             f"({', '.join(settings.tasks)})")
    for task in settings.tasks:
        try:
            parse_task(task_argv(task, "INPUT", "OUT", settings))
        except BlastosegError as exc:
            if "--model" in str(exc):
                raise BlastosegError(f"the {task} task has no default model; give one with "
                                     f"--model {task}=NAME") from None
            raise
