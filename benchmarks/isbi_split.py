"""Split the ISBI 2014 semi-synthetic set into a training part and a held-out part.

The held-out part is every 5th image in id order (6 of 30, cell counts 2-9), so the split is
fixed and documented: ``overlap-default`` and ``brightfield-default`` train on the rest and
are reported on these. The images are real data that are not ours to ship: the split is
written OUTSIDE the repository (default ``../data/isbi_train`` and ``../data/isbi_val``
beside the project), each a dataset folder with its nuclei masks beside the images.

Usage::

    python benchmarks/isbi_split.py [--src ../shared/data/real/isbi14_semisynthetic] \\
        [--out ../data]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "real" / "isbi14_semisynthetic"
HOLD_OUT_EVERY = 5


def split(src: Path, out: Path) -> dict[str, Path]:
    from blastoseg.io.dataset import Sample, read_dataset, write_dataset

    ds = read_dataset(src)
    order = sorted(range(len(ds)), key=lambda i: ds.images[i]["id"])
    parts = {"isbi_train": [i for k, i in enumerate(order) if k % HOLD_OUT_EVERY],
             "isbi_val": [i for k, i in enumerate(order) if k % HOLD_OUT_EVERY == 0]}
    written = {}
    for name, idx in parts.items():
        folder = out / name
        samples = []
        for i in idx:
            entry = ds.images[i]
            file_name = entry["file_name"]
            nuclei = Path(file_name).with_name(Path(file_name).stem + "_nuclei.tif")
            if (ds.root / nuclei).is_file():
                (folder / nuclei).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ds.root / nuclei, folder / nuclei)
            samples.append(Sample(image=ds.load_image(i), instances=ds.instances(i),
                                  file_name=file_name,
                                  extra={**ds.extra(i), "isbi_id": entry["id"]}))
        written[name] = write_dataset(folder, samples, categories=ds.categories,
                                      overwrite=True)
        print(f"{name}: {len(idx)} images -> {folder}")
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--out", type=Path, default=REPO.parent / "data")
    args = ap.parse_args()
    split(args.src, args.out)


if __name__ == "__main__":
    main()
