"""Find the embryos of a batch input folder, and stamp their inputs.

One embryo is one of these inside INPUT:

- a TIFF stack (``E01.tif``);
- a dataset folder (it holds ``annotations.json``);
- a folder of frames, focal planes included: incubator exports put one folder per well and
  write the plane into the file names (``..._RUN012_F15.JPG``) or into ``F-15/``, ``F0/``
  sub-folders; :func:`blastoseg.io.images.read_frame_folder` reads both.

Folders that hold only other folders (a slide or a day holding its wells) are searched
below, and the embryo's name is its path relative to INPUT (``slide1/WELL4``); its results go
to the same relative path under OUT.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from blastoseg.errors import BlastosegError
from blastoseg.io.frame_names import focal_folder_value, natural_key
from blastoseg.io.images import SUPPORTED_EXTENSIONS

__all__ = ["Embryo", "find_embryos", "input_stamp"]

_TIFF = (".tif", ".tiff")
#: how deep below INPUT wells are looked for (slide / day / well)
MAX_DEPTH = 3


@dataclass(frozen=True)
class Embryo:
    """One embryo of a batch: its name (path relative to INPUT, "/"-separated), its input
    and what kind of input it is ("tiff", "frames" or "dataset")."""

    name: str
    path: Path
    source: str


def _visible(p: Path) -> bool:
    return not p.name.startswith((".", "_"))


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS and _visible(p)
               for p in folder.iterdir())


def _classify(folder: Path) -> str | None:
    """"dataset", "frames" or None (not an embryo by itself)."""
    if (folder / "annotations.json").is_file():
        return "dataset"
    if _has_images(folder):
        return "frames"
    planes = [p for p in folder.iterdir() if p.is_dir() and focal_folder_value(p.name) is not None]
    if planes and any(_has_images(p) for p in planes):
        return "frames"
    return None


def find_embryos(input_dir: str | os.PathLike, exclude: str | os.PathLike | None = None
                 ) -> list[Embryo]:
    """The embryos of ``input_dir`` in natural name order (``E2`` before ``E10``).

    ``exclude`` (the output folder, when it lies inside the input) is not searched.

    Raises
    ------
    BlastosegError
        ``input_dir`` is not a folder, is one embryo's frame folder itself, or holds none.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise BlastosegError(f"{root}: not a folder; batch takes a folder holding one TIFF "
                             "stack, frame folder or dataset folder per embryo")
    if _classify(root) is not None and not any(p.suffix.lower() in _TIFF for p in root.iterdir()):
        raise BlastosegError(f"{root}: looks like the frames of one embryo; give the folder "
                             "that holds one folder (or TIFF stack) per embryo, or run "
                             "`blastoseg segment` on this one")
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[Embryo] = []

    def walk(folder: Path, depth: int) -> None:
        for p in sorted(folder.iterdir(), key=lambda q: natural_key(q.name)):
            if not _visible(p) or (skip is not None and p.resolve() == skip):
                continue
            name = p.relative_to(root).as_posix()
            if p.is_file() and p.suffix.lower() in _TIFF:
                found.append(Embryo(name.rsplit(".", 1)[0], p, "tiff"))
            elif p.is_dir():
                source = _classify(p)
                if source is not None:
                    found.append(Embryo(name, p, source))
                elif depth < MAX_DEPTH:
                    walk(p, depth + 1)

    walk(root, 1)
    names = [e.name for e in found]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:  # E1.tif beside a folder E1: keep the file's extension in its name
        found = [Embryo(e.path.relative_to(root).as_posix(), e.path, e.source)
                 if e.name in clashes and e.source == "tiff" else e for e in found]
    if not found:
        raise BlastosegError(f"{root}: no embryos found (TIFF stacks, frame folders or dataset "
                             "folders)")
    return found


def input_stamp(path: str | os.PathLike) -> dict:
    """What says an input is unchanged since it was processed: the total size, the newest
    modification time (ns) and the number of files (a folder is walked)."""
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "files": 1}
    size = newest = count = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            size += st.st_size
            newest = max(newest, st.st_mtime_ns)
            count += 1
    return {"size": size, "mtime_ns": newest, "files": count}
