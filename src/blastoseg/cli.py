"""The ``blastoseg`` command line: ``blastoseg VERB ...``.

Every widget action has a command-line twin; each verb (one module in
``blastoseg.commands``) parses its arguments and calls one library function, so the CLI,
the napari widgets and the tests share the same code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from blastoseg import __version__
from blastoseg.commands import batch, data, models, segment, timeline, train
from blastoseg.errors import BlastosegError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blastoseg",
        description="Amodal segmentation of human IVF embryos: synthetic data, datasets, "
                    "training, models, demo.",
    )
    parser.add_argument("--version", action="version", version=f"blastoseg {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    data.add_parsers(verbs)
    segment.add_parsers(verbs)
    train.add_parsers(verbs)
    models.add_parsers(verbs)
    timeline.add_parsers(verbs)
    batch.add_parsers(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        # no verb, or a verb group without its kind (e.g. `blastoseg synth`): show help, fail
        choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        (choices.get(getattr(args, "verb", None) or "") or parser).print_help(sys.stderr)
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
