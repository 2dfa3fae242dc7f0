"""``blastoseg segment KIND``, ``blastoseg eval KIND`` and ``blastoseg calibrate KIND``.

One sub-verb per model kind: each kind's command module (``cli`` in :mod:`blastoseg.kinds`)
adds its own with ``add_segment_parser``, ``add_eval_parser`` and, when the kind can be
calibrated, ``add_calibrate_parser``. A new kind appears here by its table entry alone.
Sub-verbs that are not model kinds (``eval timeline``) come from :data:`EXTRA_MODULES`.
"""

from __future__ import annotations

import argparse

from blastoseg.kinds import KINDS, import_ref

#: verb -> (help, the hook a kind's command module defines to add its sub-verb)
VERBS = {
    "segment": ("segment images or time-lapses", "add_segment_parser"),
    "eval": ("evaluate a model on a dataset folder", "add_eval_parser"),
    "calibrate": ("choose post-processing thresholds on validation data",
                  "add_calibrate_parser"),
}

#: verb -> command modules adding a sub-verb that is not a model kind (same hooks as above)
EXTRA_MODULES = {"eval": ["blastoseg.commands.timeline"]}


def add_parsers(verbs: argparse._SubParsersAction) -> None:
    modules = [import_ref(kind.cli) for kind in KINDS.values() if kind.cli]
    for verb, (help_text, hook) in VERBS.items():
        parser = verbs.add_parser(verb, help=help_text)
        kinds = parser.add_subparsers(dest="kind", metavar="KIND")
        extra = [import_ref(ref) for ref in EXTRA_MODULES.get(verb, [])]
        for module in modules + extra:
            add = getattr(module, hook, None)
            if add is not None:
                add(kinds)
