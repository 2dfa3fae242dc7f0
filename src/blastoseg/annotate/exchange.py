"""Moving annotations in and out of projects: export for (re)training with a train/validation
split, import from our dataset folders, plain COCO files and LabelMe, and checks of training
data before a training starts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from blastoseg.annotate.project import AnnotationProject
from blastoseg.errors import BlastosegError, DatasetFormatError, ImageReadError
from blastoseg.instances import FrameInstances
from blastoseg.io.dataset import (
    ANNOTATIONS_FILE,
    Dataset,
    Sample,
    lossless_suffix,
    read_dataset,
    write_dataset,
)
from blastoseg.io.images import read_image
from blastoseg.io.labelme import import_labelme

__all__ = ["TrainingExport", "check_training_data", "export_for_training",
           "import_annotations", "import_project", "validate_training_data"]

_FRAME_KEYS = ("video_id", "frame_index", "focal_plane", "pixel_size_um")


class _Frames:
    """Uniform read access to a project (its current, possibly unsaved state), an opened
    Dataset, or a dataset folder / annotations file."""

    def __init__(self, source: Any) -> None:
        if isinstance(source, AnnotationProject):
            self.n, self.entry = source.n_frames, source.frame_info
            self.image, self.instances = source.image, source.instances
        else:
            source = source if isinstance(source, Dataset) else read_dataset(source)
            self.n, self.entry = len(source), source.images.__getitem__
            self.image, self.instances = source.load_image, source.instances
        self.root, self.categories = source.root, source.categories

    def __len__(self) -> int:
        return self.n


def _as_list(sources: Any) -> list:
    if isinstance(sources, (str, os.PathLike, Dataset, AnnotationProject)):
        return [sources]
    return list(sources)


def _frame_problems(src: _Frames, i: int) -> tuple[list[str], FrameInstances | None]:
    """Problems of one frame (unreadable masks or image, sizes that disagree)."""
    try:
        inst = src.instances(i)
        image = src.image(i)
    except BlastosegError as exc:
        return [str(exc)], None
    if image.shape[:2] != inst.shape:
        return [f"{src.root}: {src.entry(i)['file_name']}: image is {image.shape[:2]} but its "
                f"masks are {inst.shape}"], None
    empty = np.flatnonzero(inst.areas == 0) if len(inst) else []
    if len(empty):  # a cell without pixels: a box of nothing to learn from
        return [f"{src.root}: {src.entry(i)['file_name']}: {len(empty)} of its {len(inst)} "
                f"cell masks are empty (cell {int(empty[0]) + 1} first); delete or redraw "
                "them"], inst
    return [], inst


def _listing(names: list[str], k: int = 5) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def validate_training_data(folders: Any, *, allow_empty_frames: bool = False,
                           allow_empty_datasets: bool = False) -> list[str]:
    """Problems that would spoil a training on these datasets (an empty list: none).

    Parameters
    ----------
    folders
        Dataset folders (or annotations files), opened Datasets or AnnotationProjects; one or
        a list.
    allow_empty_frames
        Frames without any annotation are reported (in embryo images they are nearly always
        frames nobody annotated, which would teach the model "no cells here") unless True.
    allow_empty_datasets
        A dataset none of whose frames has an annotation is reported unless True (a set of
        negatives, e.g. blastocyst frames mixed into a training run, is deliberate there).

    Returns
    -------
    list of str
        One message per problem: unreadable folders or files, missing images, sizes that do
        not match, datasets or frames without annotations.
    """
    folders = _as_list(folders)
    if not folders:
        return ["no training data given"]
    problems: list[str] = []
    for folder in folders:
        try:
            src = _Frames(folder)
        except BlastosegError as exc:
            problems.append(str(exc))
            continue
        if len(src) == 0:
            problems.append(f"{src.root}: the dataset has no images")
            continue
        empty = []
        for i in range(len(src)):
            found, inst = _frame_problems(src, i)
            problems += found
            if inst is not None and len(inst) == 0:
                empty.append(src.entry(i)["file_name"])
        if len(empty) == len(src) and not allow_empty_datasets:
            problems.append(f"{src.root}: none of its {len(src)} frames has annotations")
        elif empty and not allow_empty_frames:
            problems.append(f"{src.root}: {len(empty)} of {len(src)} frames have no "
                            f"annotations ({_listing(empty)}); annotate them, or export with "
                            f"export_for_training, which leaves them out")
    return problems


def check_training_data(folders: Any, *, allow_empty_frames: bool = False) -> None:
    """Raise DatasetFormatError listing every problem :func:`validate_training_data` finds."""
    problems = validate_training_data(folders, allow_empty_frames=allow_empty_frames)
    if problems:
        raise DatasetFormatError(f"the training data has {len(problems)} problem(s):\n"
                                 + "\n".join(f"  - {p}" for p in problems))


@dataclass
class TrainingExport:
    """What :func:`export_for_training` wrote."""

    train_dir: Path
    val_dir: Path | None
    n_train: int
    n_val: int
    skipped_empty: int = 0
    skipped_unreviewed: int = 0


def _split(groups: list[list], val_fraction: float, seed: int) -> tuple[set[int], set[int]]:
    """Group indices for train and val: a seeded shuffle, then the first groups whose frame
    count comes closest to the wanted fraction (at least one group on each side)."""
    if val_fraction == 0:
        return set(range(len(groups))), set()
    order = np.random.default_rng(seed).permutation(len(groups))
    sizes = np.array([len(groups[k]) for k in order])
    target = val_fraction * sizes.sum()
    cut = int(np.argmin(np.abs(np.cumsum(sizes)[:-1] - target))) + 1
    return {int(k) for k in order[cut:]}, {int(k) for k in order[:cut]}


def _merge_categories(sources: list[_Frames]) -> dict[int, str]:
    cats: dict[int, str] = {}
    for src in sources:
        for cid, name in src.categories.items():
            if cats.setdefault(cid, name) != name:
                raise DatasetFormatError(f"category id {cid} is {cats[cid]!r} in one source but "
                                         f"{name!r} in {src.root}; renumber one of them")
    return cats


def export_for_training(sources: Any, out_dir: str | os.PathLike, val_fraction: float = 0.2,
                        seed: int = 0, reviewed_only: bool = False, split_by: str = "video",
                        overwrite: bool = False, *,
                        progress: Callable[[int, int], None] | None = None) -> TrainingExport:
    """Write annotated frames as ``out_dir/train`` and ``out_dir/val`` dataset folders.

    ``sources``: AnnotationProjects (their current state, saved or not), Datasets or dataset
    folders, one or a list. ``val_fraction`` (0 <= f < 1; 0 writes no ``val``) is the wanted
    share of frames in ``val``; whole groups move, so the closest reachable share is used.
    The split is a seeded shuffle: same inputs and ``seed``, same split. ``split_by="video"``
    keeps all frames of one time-lapse (``video_id``) in one split, so validation never sees
    a neighbour of a training frame (frames without a video are split one by one);
    ``"frame"`` splits every frame on its own. ``reviewed_only`` exports only frames marked
    reviewed; frames without annotations are always left out (most likely not annotated
    yet). ``overwrite`` replaces existing ``train``/``val`` datasets (old files kept as .bak).
    ``progress(done, total)`` is called as frames are written.

    Raises
    ------
    DatasetFormatError
        Existing output without ``overwrite``, no frames, nothing annotated (or reviewed),
        missing or unreadable images, masks whose size differs from the image, a split that
        is impossible (one video only), conflicting category names.
    """
    if split_by not in ("video", "frame"):
        raise ValueError(f"split_by must be 'video' or 'frame'; got {split_by!r}")
    if not 0 <= float(val_fraction) < 1:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    out = Path(out_dir)
    train_dir, val_dir = out / "train", (out / "val" if val_fraction > 0 else None)
    for d in (train_dir, val_dir):
        if d is not None and (d / ANNOTATIONS_FILE).exists() and not overwrite:
            raise DatasetFormatError(f"{d / ANNOTATIONS_FILE} already exists; choose another "
                                     f"output folder or pass overwrite=True")
    srcs = [_Frames(s) for s in _as_list(sources)]
    categories = _merge_categories(srcs)
    total = sum(len(s) for s in srcs)
    if total == 0:
        raise DatasetFormatError("nothing to export: the sources have no frames")

    # check everything before writing anything, so a bad frame leaves no half export
    chosen: list[tuple[int, int]] = []
    problems: list[str] = []
    n_empty = n_unreviewed = 0
    for j, src in enumerate(srcs):
        for i in range(len(src)):
            if reviewed_only and not src.entry(i).get("reviewed"):
                n_unreviewed += 1
                continue
            found, inst = _frame_problems(src, i)
            problems += found
            if inst is not None and len(inst) == 0:
                n_empty += 1
            elif inst is not None:
                chosen.append((j, i))
    if problems:
        raise DatasetFormatError(f"cannot export, {len(problems)} problem(s):\n"
                                 + "\n".join(f"  - {p}" for p in problems))
    if not chosen:
        raise DatasetFormatError(f"nothing to export: of {total} frames, {n_empty} have no "
                                 f"annotations and {n_unreviewed} are not marked reviewed")

    groups: dict[tuple, list[tuple[int, int]]] = {}
    for j, i in chosen:
        vid = srcs[j].entry(i).get("video_id")
        key = (j, 0, vid) if split_by == "video" and vid is not None else (j, 1, i)
        groups.setdefault(key, []).append((j, i))
    group_list = [groups[k] for k in sorted(groups)]
    if val_fraction > 0 and len(chosen) == 1:
        raise DatasetFormatError(
            "only 1 frame to export: one frame cannot be split into train and validation; "
            "annotate more frames or export it with no validation share (val_fraction=0)")
    if val_fraction > 0 and len(group_list) < 2:
        raise DatasetFormatError(
            f"cannot split {len(chosen)} frames of a single video into train and validation "
            f"with split_by='video'; add another video, use split_by='frame' (validation then "
            f"sees neighbours of training frames) or val_fraction=0")
    train_g, val_g = _split(group_list, float(val_fraction), seed)

    tags = _source_tags(srcs)
    videos: dict[tuple[int, Any], int] = {}
    for j, i in chosen:  # one new video id per (source, video), in source order
        vid = srcs[j].entry(i).get("video_id")
        if vid is not None:
            videos.setdefault((j, vid), len(videos) + 1)
    done = [0]

    def samples(which: set[int]):
        frames = sorted(f for k in which for f in group_list[k])
        used: set[str] = set()
        for j, i in frames:
            src, entry = srcs[j], srcs[j].entry(i)
            image = src.image(i)
            name = _export_name(tags[j], entry["file_name"], lossless_suffix(image), used)
            extra = {k: v for k, v in entry.items()
                     if k not in ("id", "file_name", "height", "width", *_FRAME_KEYS)}
            extra.update(source_dataset=str(src.root.resolve()),
                         source_file=entry["file_name"])
            vid = entry.get("video_id")
            yield Sample(image=image, instances=src.instances(i), file_name=name,
                         video_id=None if vid is None else videos[(j, vid)],
                         **{k: entry.get(k) for k in _FRAME_KEYS if k != "video_id"},
                         extra=extra)
            done[0] += 1
            if progress is not None:
                progress(done[0], len(chosen))

    n_train = sum(len(group_list[k]) for k in train_g)
    for folder, which, split in ((train_dir, train_g, "train"), (val_dir, val_g, "val")):
        if folder is not None:
            write_dataset(folder, samples(which), categories, overwrite=overwrite, info={
                "description": "blastoseg training export", "split": split,
                "split_by": split_by, "seed": int(seed), "val_fraction": float(val_fraction),
                "sources": [str(s.root.resolve()) for s in srcs]})
    return TrainingExport(train_dir, val_dir, n_train, len(chosen) - n_train, n_empty,
                          n_unreviewed)


def _source_tags(srcs: list[_Frames]) -> list[str]:
    """A distinct folder name per source, so images of different sources never collide."""
    tags: list[str] = []
    for src in srcs:
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in src.root.name) or "src"
        tags.append(next(t for n in range(1, len(srcs) + 2)
                         if (t := base if n == 1 else f"{base}_{n}") not in tags))
    return tags


def _export_name(tag: str, file_name: str, suffix: str, used: set[str]) -> str:
    parts = [p for p in PurePosixPath(file_name.replace("\\", "/")).parts
             if p not in ("/", "..", ".")]
    if parts and parts[0] == "images":
        parts = parts[1:]
    rel = PurePosixPath("images", tag, *(parts or ["frame"]))
    if rel.suffix.lower() not in (".tif", ".tiff", suffix):
        rel = rel.with_suffix(suffix)
    name, k = rel.as_posix(), 1
    while name in used:  # two entries naming one file (e.g. focal planes of one TIFF)
        name, k = f"{rel.with_suffix('')}_{k}{rel.suffix}", k + 1
    used.add(name)
    return name


# --- import ----------------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: invalid JSON ({exc})") from None
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read ({exc})") from None


def _detect(path: Path) -> tuple[str, Path]:
    """("dataset" | "labelme", path to read)."""
    if path.is_dir():
        if (path / ANNOTATIONS_FILE).is_file():
            return "dataset", path / ANNOTATIONS_FILE
        files = sorted(p for p in path.glob("*.json") if not p.name.startswith("."))
        if not files:
            raise DatasetFormatError(f"{path}: no {ANNOTATIONS_FILE}, COCO or LabelMe .json "
                                     f"file in this folder")
        if len(files) > 1:
            # a folder of several .json files is LabelMe's layout; parse one to be sure
            if isinstance(doc := _read_json(files[0]), dict) and "shapes" in doc:
                return "labelme", path
            raise DatasetFormatError(f"{path}: several .json files and {files[0].name} is not "
                                     f"a LabelMe file; give the path of the COCO file")
        path = files[0]
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such file or folder")
    doc = _read_json(path)
    if isinstance(doc, dict) and isinstance(doc.get("shapes"), list):
        return "labelme", path
    if isinstance(doc, dict) and "images" in doc and "annotations" in doc:
        return "dataset", path
    raise DatasetFormatError(f"{path}: neither a COCO instances file (images, annotations) "
                             f"nor a LabelMe file (shapes)")


def _find_image(root: Path, file_name: str) -> Path:
    rel = PurePosixPath(file_name.replace("\\", "/"))
    candidates = [root / rel, root / "images" / rel, root / "images" / rel.name, root / rel.name]
    for cand in candidates:
        if cand.is_file():
            return cand
    raise DatasetFormatError(f"{root}: image {file_name!r} not found (looked for "
                             f"{', '.join(str(c) for c in dict.fromkeys(candidates))})")


def _project_name(file_name: str) -> str:
    """Where an imported foreign image goes in a project: under ``images/``, no escaping."""
    parts = [p for p in PurePosixPath(file_name.replace("\\", "/")).parts
             if p not in ("/", "..", ".") and not p.endswith(":")]
    if not parts or parts[0] != "images":
        parts = ["images", *parts]
    return PurePosixPath(*parts).as_posix()


def _from_dataset(ds: Dataset, ours: bool) -> tuple[list, list, dict]:
    images, instances, frames = [], [], []
    for i, entry in enumerate(ds.images):
        path = _find_image(ds.root, entry["file_name"])
        try:  # ours: exact pixels; other tools' JPEGs of grey content become one channel
            image = read_image(path, collapse_grey=not ours)
        except ImageReadError as exc:
            raise DatasetFormatError(f"{ds.path}: {exc}") from None
        if image.shape[:2] != (entry["height"], entry["width"]):
            raise DatasetFormatError(f"{path}: image is {image.shape[:2]} but {ds.path.name} "
                                     f"says height={entry['height']}, width={entry['width']}")
        images.append(image)
        instances.append(ds.instances(i))
        frames.append({"file_name": entry["file_name"] if ours
                       else _project_name(entry["file_name"]),
                       **{k: entry.get(k) for k in _FRAME_KEYS}, "extra": ds.extra(i)})
    pixel = next((f["pixel_size_um"] for f in frames if f["pixel_size_um"] is not None), None)
    return images, instances, {"categories": dict(ds.categories), "pixel_size_um": pixel,
                               "frames": frames, "info": dict(ds.info)}


def import_annotations(path: str | os.PathLike
                       ) -> tuple[list[np.ndarray], list[FrameInstances], dict]:
    """Read annotated frames from a dataset folder, a COCO file or LabelMe files.

    Parameters
    ----------
    path
        One of: a blastoseg dataset / project folder (or its ``annotations.json``); a plain
        COCO instances ``.json`` (polygons, RLE or uncompressed RLE) whose images lie next to
        it or in an ``images/`` folder next to it (a folder holding just that one ``.json``
        works too); a LabelMe ``.json`` or a folder of them.

    Returns
    -------
    images
        One array per frame, as stored ((H, W) or (H, W, 3)); ``np.stack`` them for a napari
        layer when they share a size.
    instances
        One FrameInstances per frame (track ids when every annotation has one).
    meta
        ``format`` ("blastoseg", "coco" or "labelme"), ``source`` (the path), ``categories``,
        ``pixel_size_um`` (first frame's, or None), ``frames`` (per-frame metadata for
        ``AnnotationProject.create(frames=...)``) and ``info``.

    Raises
    ------
    DatasetFormatError
        Unrecognised or unreadable files, missing images, sizes that disagree.
    """
    p = Path(path)
    kind, target = _detect(p)
    if kind == "labelme":
        with tempfile.TemporaryDirectory(prefix="blastoseg-labelme-") as tmp:
            import_labelme(target, Path(tmp))
            images, instances, meta = _from_dataset(read_dataset(tmp), ours=True)
        fmt = "labelme"
    else:
        ds = read_dataset(target)
        fmt = "blastoseg" if ds.info.get("format") == "blastoseg-coco" else "coco"
        images, instances, meta = _from_dataset(ds, ours=fmt == "blastoseg")
    return images, instances, {"format": fmt, "source": str(p), **meta}


def import_project(path: str | os.PathLike, folder: str | os.PathLike,
                   overwrite: bool = False) -> AnnotationProject:
    """:func:`import_annotations` then :meth:`AnnotationProject.create`, keeping per-frame
    metadata (videos, reviewed flags, pixel sizes) and categories."""
    images, instances, meta = import_annotations(path)
    return AnnotationProject.create(folder, images, instances, source=meta["source"],
                                    overwrite=overwrite, frames=meta["frames"],
                                    categories=meta["categories"])
