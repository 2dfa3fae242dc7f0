"""The ``blastoseg`` command line: ``blastoseg VERB ...``.

Every widget action has a command-line twin here; each verb parses its arguments and calls
one library function, so the CLI, the napari widgets and the tests share the same code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from blastoseg import __version__
from blastoseg.errors import BlastosegError


def _progress_printer(label: str) -> Callable[[int, int], None]:
    """A progress callback that redraws one line on stderr (quiet when not a terminal)."""
    interactive = sys.stderr.isatty()

    def report(done: int, total: int) -> None:
        if interactive:
            width = 30
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "-" * (width - filled)
            end = "\n" if done >= total else ""
            print(f"\r{label} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)
        elif done >= total:
            print(f"{label}: {done}/{total} done", file=sys.stderr)

    return report


# --- verbs ------------------------------------------------------------------------------


def _cmd_synth_embryos(args: argparse.Namespace) -> int:
    from blastoseg.synth import EmbryoConfig, write_synthetic_embryos

    config = EmbryoConfig(image_size=(args.size, args.size))
    path = write_synthetic_embryos(
        args.out,
        n=args.n,
        seed=args.seed,
        timelapse=args.timelapse,
        config=config,
        overwrite=args.overwrite,
        progress=_progress_printer("rendering"),
    )
    print(f"wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from blastoseg.demo import format_table, run_demo

    result = run_demo(
        args.out, n_frames=args.frames, seed=args.seed, progress=_progress_printer("demo")
    )
    print(format_table(result))
    print(f"\noutputs in {result.out_dir}:")
    for name, path in result.outputs.items():
        print(f"  {name:<14} {path}")
    return 0


def _cmd_import_labelme(args: argparse.Namespace) -> int:
    from blastoseg.io import import_labelme

    path = import_labelme(args.source, args.out, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


# --- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blastoseg",
        description="Amodal segmentation of human IVF embryos: synthetic data, datasets, demo.",
    )
    parser.add_argument("--version", action="version", version=f"blastoseg {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    synth = verbs.add_parser("synth", help="generate synthetic data in the dataset format")
    synth_kinds = synth.add_subparsers(dest="kind", metavar="KIND")
    emb = synth_kinds.add_parser(
        "embryos", help="synthetic day 1-3 embryos under relief contrast, with amodal masks"
    )
    emb.add_argument("--n", type=int, default=100, help="frames, or videos with --timelapse")
    emb.add_argument("--seed", type=int, default=0, help="random seed (output is deterministic)")
    emb.add_argument("--out", required=True, type=Path, help="output dataset folder")
    emb.add_argument("--timelapse", type=int, metavar="T", default=None,
                     help="write N cleaving-embryo time-lapses of T frames each")
    emb.add_argument("--size", type=int, default=500, help="frame size in pixels (square)")
    emb.add_argument("--overwrite", action="store_true",
                     help="replace an existing annotations.json (the old one is kept as a backup)")
    emb.set_defaults(func=_cmd_synth_embryos)

    demo = verbs.add_parser(
        "demo", help="generate a synthetic cleaving-embryo time-lapse, measure it, write outputs"
    )
    demo.add_argument("--out", type=Path, default=Path("blastoseg_demo"), help="output folder")
    demo.add_argument("--frames", type=int, default=24, help="time-lapse length")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the synthetic embryo")
    demo.set_defaults(func=_cmd_demo)

    imp = verbs.add_parser("import", help="convert annotations from other tools")
    imp_kinds = imp.add_subparsers(dest="kind", metavar="FORMAT")
    lm = imp_kinds.add_parser("labelme", help="LabelMe polygon JSON (one file per image)")
    lm.add_argument("source", type=Path, help="a LabelMe .json file or a folder of them")
    lm.add_argument("--out", required=True, type=Path, help="output dataset folder")
    lm.add_argument("--overwrite", action="store_true",
                    help="replace an existing annotations.json (the old one is kept as a backup)")
    lm.set_defaults(func=_cmd_import_labelme)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        # no verb, or a verb group without its kind (e.g. `blastoseg synth`): show help, fail
        group = {"synth": "synth", "import": "import"}.get(getattr(args, "verb", None) or "")
        sub = parser._subparsers._group_actions[0].choices.get(group) if group else None
        (sub or parser).print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except BlastosegError as exc:
        print(f"blastoseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("blastoseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
