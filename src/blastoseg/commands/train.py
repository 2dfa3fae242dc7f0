"""``blastoseg train KIND ...`` (make a job folder and run it) and ``blastoseg train JOB_DIR``
(run or resume an existing job folder, e.g. one exported to a GPU server)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from blastoseg.commands.options import positive_float, positive_int, seed
from blastoseg.errors import BlastosegError


def _split_paths(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [p for p in text.split(",") if p]


def _run(job_dir: Path, args: argparse.Namespace) -> int:
    """Run a job folder here, or under torchrun with ``--nproc`` processes (DDP)."""
    from blastoseg.train import run_job

    if args.nproc > 1:
        from blastoseg.train.distributed import launch_torchrun

        argv = [str(job_dir)] + (["--device", args.device] if args.device else []) + \
            (["--no-resume"] if args.no_resume else []) + (["--quiet"] if args.quiet else [])
        return launch_torchrun(argv, args.nproc)
    return run_job(job_dir, device=args.device, resume=not args.no_resume,
                   stdout=not args.quiet)


#: kinds trained on instance masks: their datasets are checked before a job is made
INSTANCE_KINDS = ("amodal", "brightfield", "count")


def _check_data(folders: list[str]) -> None:
    """Unreadable images or masks, sizes that disagree and empty cell masks stop a training
    before its job folder is made, all listed at once. Frames without cells are negatives
    and pass, as do datasets made only of them."""
    from blastoseg.annotate import validate_training_data

    print(f"checking the training data ({len(folders)} dataset(s)); --skip-data-check skips "
          "this", flush=True)
    problems = validate_training_data(folders, allow_empty_frames=True,
                                      allow_empty_datasets=True)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20
                                 else [])
        raise BlastosegError(f"the training data has {len(problems)} problem(s):\n"
                             + "\n".join(f"  - {p}" for p in shown))


def _train(args: argparse.Namespace) -> int:
    from blastoseg.train import available_tasks, create_job

    target = Path(args.target)
    if (target / "job.json").is_file():
        return _run(target, args)
    kinds = available_tasks()
    if args.target not in kinds:
        listed = ", ".join(kinds) if kinds else "none yet"
        raise BlastosegError(
            f"{args.target!r} is neither a job folder (no job.json there) nor a trainable model "
            f"kind (available: {listed})")
    if not args.data or not args.out:
        raise BlastosegError(f"blastoseg train {args.target} needs --data DIR[,DIR...] and --out DIR")
    config = None
    if args.config:
        try:
            config = json.loads(Path(args.config).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BlastosegError(f"cannot read config file {args.config}: {exc}") from None
        if not isinstance(config, dict):
            raise BlastosegError(f"config file {args.config}: expected a JSON object "
                                 f"{{\"model\": ..., \"hyper\": ...}}; got a "
                                 f"{type(config).__name__}")
    if args.target in INSTANCE_KINDS and not args.skip_data_check:
        _check_data(_split_paths(args.data) + (_split_paths(args.val) or []))
    hyper = config.pop("hyper", None) if isinstance(config, dict) else None
    if args.base and not (config or {}).get("model"):
        # fine-tuning: the base model's own architecture, or its weights would not fit
        from blastoseg.train.finetune import base_config

        config, base_hyper = base_config(args.base, args.target)
        hyper = {**base_hyper, **(hyper or {})}
    job_dir = create_job(
        args.target, _split_paths(args.data), args.out, val_data=_split_paths(args.val),
        base=args.base, config=config, hyper=hyper, epochs=args.epochs,
        time_budget_min=args.minutes, device=args.device or "auto", seed=args.seed,
        name=args.name, copy_data=args.portable, overwrite=args.overwrite,
    )
    return _run(job_dir, args)


def add_parsers(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "train", help="train or fine-tune a model (KIND ...), or run/resume a job folder",
        description="blastoseg train KIND --data DIR[,DIR...] --out JOB_DIR [options]  |  "
                    "blastoseg train JOB_DIR")
    p.add_argument("target", help="a model kind (e.g. amodal) or an existing job folder")
    p.add_argument("--data", help="training dataset folder(s), comma-separated")
    p.add_argument("--val", help="validation dataset folder(s), comma-separated")
    p.add_argument("--out", type=Path, help="job folder to create (events, checkpoints, weights)")
    p.add_argument("--base", help="base model to fine-tune: a registered name or a .safetensors")
    p.add_argument("--config", help="JSON file with the model config (and optional 'hyper')")
    p.add_argument("--epochs", type=int)
    p.add_argument("--minutes", type=positive_float, help="wall-clock budget instead of epochs")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--name", help="name to register the trained model under")
    p.add_argument("--portable", action="store_true",
                   help="copy the datasets into the job folder so it runs unchanged elsewhere")
    p.add_argument("--overwrite", action="store_true", help="replace an existing job.json")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--quiet", action="store_true", help="do not echo events on stdout")
    p.add_argument("--skip-data-check", action="store_true",
                   help="do not read every training image and mask first (amodal, "
                        "brightfield and count data are checked by default)")
    p.add_argument("--nproc", type=positive_int, default=1, metavar="N",
                   help="data-parallel processes on this machine (torchrun + DDP: one per "
                        "GPU, or CPU processes with gloo); batch_size is per process")
    p.set_defaults(func=_train)
