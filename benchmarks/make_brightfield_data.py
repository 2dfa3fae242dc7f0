"""Write the synthetic brightfield sets that ``overlap-default`` and the S4 tables use.

Cells are rendered larger than :class:`BrightfieldConfig`'s default, to span the ISBI 2014
cell sizes (median equivalent diameter ~135 px at 512 px) as well as smaller cultured cells.

Sets (each a dataset folder under ``--out``):

- ``bf_train``: 200 scenes, 75 % rendered directly, 25 % copy-paste with the physical optics;
- ``bf_val``: 30 rendered scenes, another seed (held out: validation and benchmarks);
- ``bf_p2p`` (``--translator MODEL``): 80 copy-paste scenes whose focal planes come from the
  pix2pix phase-to-brightfield model (thesis section 4.4.2).

Usage::

    python benchmarks/make_brightfield_data.py --out ../data [--translator pix2pix-brightfield]
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: the training-data look: larger cells than the default, fewer per frame
TRAIN_CONFIG = {"cell_length_px": [90.0, 220.0], "n_cells": [4.0, 11.0]}


def config():
    from blastoseg.synth.brightfield import BrightfieldConfig

    return BrightfieldConfig.from_dict({**BrightfieldConfig().to_dict(), **TRAIN_CONFIG})


def main() -> None:
    from blastoseg.commands.progress import progress_printer
    from blastoseg.synth.brightfield import write_synthetic_brightfield

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO.parent / "data")
    ap.add_argument("--translator", default=None, help="pix2pix model for the bf_p2p set")
    ap.add_argument("--only", default="", help="comma-separated set names to write")
    args = ap.parse_args()
    sets = {"bf_train": dict(n=200, seed=1, copy_paste=0.25),
            "bf_val": dict(n=30, seed=3, copy_paste=0.0)}
    if args.translator:
        from blastoseg.synth.brightfield.translate import PhaseTranslator

        sets["bf_p2p"] = dict(n=80, seed=5, copy_paste=1.0,
                              translator=PhaseTranslator(args.translator, device="cpu"))
    only = [s for s in args.only.split(",") if s]
    for name, kw in sets.items():
        if only and name not in only:
            continue
        path = write_synthetic_brightfield(args.out / name, config=config(), overwrite=True,
                                           progress=progress_printer(name), **kw)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
