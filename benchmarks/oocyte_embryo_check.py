"""How often the oocyte widget's "looks like an embryo" warning fires, on oocytes and embryos.

The rule (:class:`blastoseg.predict.oocyte_embryo_check.EmbryoCheck`) was chosen on the two
validation sets given with ``--oocytes-val`` and ``--embryos-val`` (synthetic only): the grid
of candidate rules printed first is the table it was chosen from (at most one false warning
in the validation oocytes, then the most embryos flagged). Then the shipped rule on the
held-out synthetic oocytes (``--oocytes-test``) and on every real set that shows embryos
(``--real``: the 16 crops by cell count, mouse DIC, Hoffman blastocysts, EmbryoScope
blastocysts). On an oocyte a warning is a false alarm; on an embryo of 2 or more cells a
missing one is a miss.

Usage::

    nice python benchmarks/oocyte_embryo_check.py --oocytes-val OOCYTE_VAL
        --embryos-val EMBRYO_VAL --oocytes-test OOCYTE_TEST --real ../shared/data/real
        [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

GRID_SURE = (0.8, 0.9, 0.95)
GRID_SCORE = (0.4, 0.5, 0.6, 0.7, None)  # None: the sure rule alone


def detections(files: list[Path]) -> list[dict]:
    """amodal-default's instances (scores, areas) on each file."""
    from blastoseg.io.images import read_image
    from blastoseg.predict.amodal import segment_amodal

    out = []
    for f in files:
        r = segment_amodal(read_image(f))
        out.append({"file": str(f), "scores": r.scores.tolist(), "areas": r.areas.tolist()})
    return out


def dataset_files(root: Path) -> list[tuple[Path, int]]:
    """(image, number of cells) of a dataset folder in the project's format."""
    from blastoseg.io.dataset import read_dataset

    ds = read_dataset(root)
    return [(ds.root / e["file_name"], int(e.get("n_cells", len(ds.annotations(i)))))
            for i, e in enumerate(ds.images)]


def flagged(rows: list[dict], check) -> int:
    return sum(check.looks_like_embryo(np.array(r["scores"]), np.array(r["areas"]))
               for r in rows)


def real_sets(real: Path) -> dict[str, list[Path]]:
    crops = sorted((real / "embryo_counts").glob("*/*.*"))
    return {
        "real crops, 1 cell": [f for f in crops if f.name.startswith("1cell")],
        "real crops, 2-8 cells": [f for f in crops if not f.name.startswith("1cell")],
        "mouse DIC (BBBC003)": sorted((real / "mouse_embryo_dic" / "images").glob("*")),
        "human blastocysts, Hoffman": sorted((real / "blastocyst_hmc" / "images").glob("*")),
        "EmbryoScope blastocysts": sorted(
            p for p in (real / "blastocyst_embryoscope_focal").rglob("*")
            if p.suffix.lower() in (".jpg", ".jpeg", ".png")),
    }


def main() -> int:
    from blastoseg.predict.oocyte_embryo_check import EmbryoCheck

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--oocytes-val", type=Path, required=True)
    p.add_argument("--embryos-val", type=Path, required=True)
    p.add_argument("--oocytes-test", type=Path, required=True)
    p.add_argument("--real", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    oocyte_val = detections([f for f, _ in dataset_files(args.oocytes_val)])
    embryo_files = dataset_files(args.embryos_val)
    embryo_val = detections([f for f, n in embryo_files if n >= 2])
    shipped = EmbryoCheck()

    print(f"## Choosing the rule: {len(oocyte_val)} validation oocytes, {len(embryo_val)} "
          "validation embryos of 2-8 cells (synthetic)\n")
    print("| sure score (>= 2 cells) | or score (>= 3 cells) | oocytes warned | embryos warned |")
    print("|---|---|---|---|")
    for sure in GRID_SURE:
        for score in GRID_SCORE:
            rule = replace(shipped, sure_score=sure,
                           **({"min_cells": 10**6} if score is None else {"score": score}))
            print(f"| {sure} | {score or '-'} | {flagged(oocyte_val, rule)} | "
                  f"{100 * flagged(embryo_val, rule) / len(embryo_val):.1f} % |")

    sets = {"synthetic oocytes, held out": [f for f, _ in dataset_files(args.oocytes_test)]}
    if args.real is not None:
        sets.update(real_sets(args.real))
    results = {}
    print(f"\n## The shipped rule ({shipped})\n")
    print("| set | frames | warned | share |")
    print("|---|---:|---:|---:|")
    for name, files in sets.items():
        rows = detections(files)
        k = flagged(rows, shipped)
        results[name] = {"frames": len(rows), "warned": k}
        print(f"| {name} | {len(rows)} | {k} | {100 * k / max(len(rows), 1):.0f} % |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
