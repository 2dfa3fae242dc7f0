"""Fine-tuning jobs (no Qt): check the data before anything runs, make the job, move jobs to
another machine and bring their models back.

- :func:`check_dataset` / :func:`check_datasets`: missing or unreadable images, image sizes that
  differ from the masks, no annotations, empty masks: each a DatasetFormatError saying what to do.
- :func:`create_finetune_job`: a job folder that fine-tunes a registered model with its own
  architecture config (the widget's Start; CLI twin ``blastoseg train KIND --base ...``).
- :func:`export_job_folder`: a self-contained copy (datasets, a user base model, the last
  checkpoint) that ``blastoseg train JOB_DIR`` runs on a GPU server.
- :func:`import_model`: register a ``.safetensors`` or a finished job folder's model
  (CLI twin ``blastoseg models import``).

Running and following a job: :mod:`blastoseg.train.monitor`.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from blastoseg.errors import DatasetFormatError
from blastoseg.train.checkpoint import CHECKPOINT_DIR, LAST_CHECKPOINT
from blastoseg.train.job import JOB_FILE, JobError, TrainJob, create_job, export_job

__all__ = ["DatasetCheck", "check_dataset", "check_datasets", "create_finetune_job",
           "export_job_folder", "import_model", "split_paths"]


# --- checks before a job starts -------------------------------------------------------------

@dataclass
class DatasetCheck:
    """What a usable dataset folder holds."""

    path: Path
    n_images: int
    n_annotations: int
    n_unannotated: int  # images without any cell (allowed: negatives)


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header when possible (fast), else by reading the image."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tf:
                return tuple(tf.pages[0].shape[:2])  # type: ignore[return-value]
        from PIL import Image

        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except Exception:  # unusual encodings: read_image knows them all (or says why not)
        from blastoseg.io import read_image

        return read_image(path, collapse_grey=False).shape[:2]


def _mask_area(seg, h: int, w: int) -> int:
    from pycocotools import mask as mask_utils

    from blastoseg.io.coco_rle import rle_area

    if isinstance(seg, dict):
        return rle_area(seg)
    polygons = [p for p in seg if len(p) >= 6]
    if not polygons:
        return 0
    return int(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))))


def _listing(items: list[str], n: int = 4) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def check_dataset(folder: str | os.PathLike) -> DatasetCheck:
    """Check that a dataset folder can be trained on, or raise a DatasetFormatError that says
    what to fix: missing or unreadable images, image sizes that differ from annotations.json
    (and so from the masks), no annotations at all, annotations with an empty mask."""
    from blastoseg.io import read_dataset

    ds = read_dataset(folder)  # structure, ids, categories, RLE sizes vs declared sizes
    root = ds.root
    if len(ds) == 0:
        raise DatasetFormatError(f"{root}: annotations.json lists no images")
    missing, wrong, empty, n_ann, unannotated = [], [], [], 0, 0
    for i, entry in enumerate(ds.images):
        path = root / entry["file_name"]
        if not path.is_file():
            missing.append(entry["file_name"])
            continue
        try:
            size = _image_size(path)
        except Exception as exc:
            raise DatasetFormatError(f"{path}: cannot read this image ({exc})") from None
        want = (entry["height"], entry["width"])
        if tuple(size) != want:
            wrong.append(f"{entry['file_name']} is {size[0]}x{size[1]}, "
                         f"its masks {want[0]}x{want[1]}")
        anns = ds.annotations(i)
        n_ann += len(anns)
        unannotated += not anns
        empty += [f"{a['id']} ({entry['file_name']})" for a in anns
                  if _mask_area(a["segmentation"], *want) == 0]
    if missing:
        raise DatasetFormatError(
            f"{root}: {len(missing)} image file(s) named in annotations.json are missing: "
            f"{_listing(missing)}. Copy them into the folder or export the dataset again")
    if wrong:
        raise DatasetFormatError(
            f"{root}: {len(wrong)} image(s) differ in size from their masks (height x width): "
            f"{_listing(wrong)}. Re-export the dataset from the images it was annotated on")
    if n_ann == 0:
        raise DatasetFormatError(
            f"{root}: no annotated cells (annotations.json has no annotations), so there is "
            "nothing to learn from; correct some frames in napari and export them first")
    if empty:
        raise DatasetFormatError(
            f"{root}: {len(empty)} annotation(s) have an empty mask: {_listing(empty)}. "
            "Delete or redraw them")
    return DatasetCheck(root, len(ds), n_ann, unannotated)


def split_paths(data) -> list[str]:
    """Dataset folders from comma-separated text or a list (blanks dropped)."""
    if data is None:
        return []
    if isinstance(data, (str, os.PathLike)):
        data = str(data).split(",")
    return [str(Path(str(p).strip()).expanduser()) for p in data if str(p).strip()]


def check_datasets(train_data, val_data=None) -> list[DatasetCheck]:
    """:func:`check_dataset` on every training and validation folder (comma-separated text
    or a list); at least one training folder is needed."""
    train, val = split_paths(train_data), split_paths(val_data)
    if not train:
        raise DatasetFormatError("no training data: choose at least one dataset folder")
    return [check_dataset(p) for p in [*train, *val]]


def base_config(base, kind: str = "amodal") -> tuple[dict, dict]:
    """The architecture config of a base model (from its card, calibration left out) and the
    hyper-parameters that must follow it, so a fine-tuning job loads the base's weights."""
    from blastoseg.weights import resolve_model

    entry = resolve_model(base, kind=kind) if isinstance(base, (str, os.PathLike)) else base
    config = {k: v for k, v in copy.deepcopy(entry.card.config).items() if k != "postprocess"}
    framing = config.pop("framing", None) or {}
    hyper: dict = {"fp16_weights": True}  # half the size, as the shipped models
    if "use_localisation" in framing:  # frame training crops as the base model was framed
        hyper["use_localisation"] = bool(framing["use_localisation"])
    return config, hyper


def create_finetune_job(train_data, out: str | os.PathLike, *, base: str, val_data=None,
                        kind: str = "amodal", epochs: int | None = None,
                        minutes: float | None = None, lr: float = 1e-4,
                        aug_strength: float = 1.0, device: str = "auto",
                        name: str | None = None, hyper: dict | None = None,
                        seed: int = 0) -> Path:
    """Check everything, then write a job folder that fine-tunes ``base`` (returns it).

    The architecture config is the base model's own (from its card), so its weights fit.
    Raises DatasetFormatError (bad data), WeightsError (bad base model) or JobError (bad
    length, name taken, folder already holds a job) before any process starts.
    """
    from blastoseg.weights import list_models, resolve_model, verify

    check_datasets(train_data, val_data)
    entry = resolve_model(base, kind=kind)
    verify(entry)
    if name and any(e.name == name for e in list_models()):
        raise JobError(f"a model named {name!r} exists already: choose another new model name")
    if (epochs is None) == (minutes is None):
        raise JobError("give either a number of epochs or a time budget in minutes")
    config, task_hyper = base_config(entry, kind)
    task_hyper.update({"lr": float(lr), "aug_strength": float(aug_strength)})
    return create_job(kind, split_paths(train_data), out, val_data=split_paths(val_data) or None,
                      base=entry.name if entry.source != "file" else str(entry.weights_path),
                      config=config, hyper={**task_hyper, **(hyper or {})}, epochs=epochs,
                      time_budget_min=minutes, device=device, seed=seed, name=name or None)


# --- moving jobs and models ------------------------------------------------------------------

def export_job_folder(job_dir: str | os.PathLike, dest: str | os.PathLike, *,
                      with_checkpoint: bool = True) -> Path:
    """Copy a job to ``dest`` so that ``blastoseg train DEST`` runs it on another machine (a
    GPU server): datasets are copied in, a user base model is copied to ``DEST/base/``, and
    the last checkpoint too (the run there continues from it). Returns ``dest``."""
    from blastoseg.weights import resolve_model

    job = TrainJob.load(job_dir)
    dest = Path(dest).resolve()
    if dest == Path(job_dir).resolve():
        raise JobError("export the job to another folder than its own")
    if (dest / JOB_FILE).exists():
        raise JobError(f"{dest} holds a training job already; choose an empty folder")
    out = export_job(job, dest, copy_data=True)
    if job.base:
        entry = resolve_model(job.resolve_path(job.base) if job.base.endswith(".safetensors")
                              else job.base, kind=job.kind)
        if entry.source != "bundled":  # bundled models exist wherever blastoseg is installed
            (out / "base").mkdir(exist_ok=True)
            for src in (entry.weights_path, entry.card_path):
                shutil.copy2(src, out / "base" / f"{entry.name}{src.suffix}")
            moved = TrainJob.load(out)
            moved.base = f"base/{entry.name}.safetensors"
            moved.save(out)
    if with_checkpoint:
        ckpt = Path(job_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
        if ckpt.is_file():
            (out / CHECKPOINT_DIR).mkdir(exist_ok=True)
            shutil.copy2(ckpt, out / CHECKPOINT_DIR / LAST_CHECKPOINT)
    return out


def import_model(path: str | os.PathLike, name: str | None = None, *, overwrite: bool = False):
    """Register a model: a ``.safetensors`` file (its ``.json`` card beside it) or the result
    of a finished job folder (e.g. one trained on a GPU server and copied back). A job result
    that is registered already is returned as is. Returns the ModelEntry."""
    from blastoseg.weights import list_models, register_model, sha256_file

    path = Path(path).expanduser()
    if path.name == JOB_FILE:
        path = path.parent
    if path.is_dir():
        from blastoseg.train.monitor import read_progress

        progress = read_progress(path)
        weights = Path(progress.weights) if progress.weights else None
        if weights is None or not weights.is_file():  # moved folder: look in output/
            found = sorted((path / "output").glob("*.safetensors"))
            weights = found[-1] if found else None
        if weights is None:
            raise JobError(f"{path} holds no finished model (the job is {progress.state}); "
                           "resume it until it is done")
        sha = sha256_file(weights)
        for entry in list_models():
            if entry.card.sha256 == sha and (name is None or entry.name == name):
                return entry
        path = weights
    # a model that cannot be built and loaded is refused here, not when a user segments
    from blastoseg.predict.base import check_model_loads

    check_model_loads(path)
    return register_model(path, name=name, overwrite=overwrite)
