"""Annotation projects: an annotation session is a blastoseg dataset folder, so it can be
trained on, evaluated and opened in napari as it is. Per-frame review state lives in each image
entry's extra keys (``"reviewed": true``, ``"note": "..."``), which keeps the file valid COCO.

Saving (details in docs/annotation_projects.md): images are written once, by ``create``;
``save`` rewrites only ``annotations.json``, atomically (temporary file, fsync, rename), so a
crash mid-save leaves the previous complete file; hence no journal. The replaced version is
copied to ``annotations.json.prev`` (one file: for when the latest save itself went wrong),
and to a timestamped ``.bak`` on the first save of a session and then at most every
``backup_interval_s`` (10 min), the newest ``keep_backups`` (20) kept: autosave every 2 s
would otherwise leave thousands of files a day. ``open`` falls back to ``.prev`` (then the
newest readable ``.bak``) when ``annotations.json`` is unreadable, with a warning. One
process saves a project at a time (``annotate/project_lock.py``): the first save takes a lock
file with the process id, :meth:`AnnotationProject.close` gives it back, and a second process
that tries to save (or to open it, unless ``read_only``) gets a clear "open elsewhere" error
instead of overwriting the other's edits.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from blastoseg.annotate.project_lock import (
    ProjectLock,
    ProjectLockedError,
    ProjectReadOnlyError,
    digest,
)
from blastoseg.errors import DatasetFormatError, ImageReadError, InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.io.atomic import atomic_write_bytes, atomic_write_text, backup_existing
from blastoseg.io.coco_rle import DEFAULT_CATEGORIES, parse_categories, validate_coco
from blastoseg.io.dataset import (
    ANNOTATIONS_FILE,
    FORMAT_VERSION,
    Dataset,
    Sample,
    _annotations_for,  # the writer's own encoder, so saves match write_dataset exactly
    _json_default,
    lossless_suffix,
    write_dataset,
)
from blastoseg.io.images import read_image

__all__ = ["PREV_FILE", "AnnotationProject", "ProjectRecoveredWarning"]

PREV_FILE = ANNOTATIONS_FILE + ".prev"
_BAK_RE = re.compile(re.escape(ANNOTATIONS_FILE) + r"\.\d{8}-\d{6}(-\d+)?\.bak")


class ProjectRecoveredWarning(UserWarning):
    """``annotations.json`` was unreadable and an earlier version was restored."""


def _as_frames(images: Any) -> tuple[list[np.ndarray], bool]:
    """A list of 2D (or (H, W, 3) RGB) frames, and whether the input was one stacked array
    (a time-lapse)."""
    if isinstance(images, (list, tuple)):
        frames, stacked = [np.asarray(f) for f in images], False
    else:
        arr = np.asarray(images)
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3):
            frames, stacked = [arr], False
        elif arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] == 3):
            frames, stacked = list(arr), True
        else:
            raise InvalidImageError(f"images must be a 2D frame, a (T, H, W) stack or a list "
                                    f"of 2D frames; got shape {arr.shape}")
    if not frames:
        raise InvalidImageError("no images given: a project needs at least one frame")
    for t, f in enumerate(frames):
        if not (f.ndim == 2 or (f.ndim == 3 and f.shape[-1] == 3)):
            raise InvalidImageError(f"frame {t} must be (H, W) or (H, W, 3) RGB; got {f.shape}")
    return frames, stacked


def _frame_file_name(wanted: str | None, image: np.ndarray, t: int, used: set[str]) -> str:
    """A safe, unused, lossless relative file name for frame ``t``."""
    suffix = lossless_suffix(image)
    name = None
    if wanted:
        rel = PurePosixPath(str(wanted).replace("\\", "/"))
        if rel.parts and not rel.is_absolute() and ".." not in rel.parts:
            keep = rel.suffix.lower() in (".tif", ".tiff") or rel.suffix.lower() == suffix
            name = (rel if keep else rel.with_suffix(suffix)).as_posix()
    if name is None or name in used:
        name, k = f"images/frame_{t:04d}{suffix}", 1
        while name in used:
            name, k = f"images/frame_{t:04d}_{k}{suffix}", k + 1
    used.add(name)
    return name


def _load_doc(path: Path) -> dict:
    """Parse and structurally validate an annotations file (no mask decoding)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetFormatError(f"{path.parent}: no {ANNOTATIONS_FILE} in this folder; make "
                                 f"a project with AnnotationProject.create") from None
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{path}: invalid JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: cannot read ({exc})") from None
    validate_coco(doc, path)
    return doc


def _backups(root: Path) -> list[Path]:
    """Timestamped backups of annotations.json, oldest first (their mtime is the time of the
    version they hold: backup_existing copies it)."""
    found = [p for p in root.iterdir() if _BAK_RE.fullmatch(p.name) and p.is_file()]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def _restore(root: Path, error: DatasetFormatError) -> dict:
    """Put back the newest readable earlier version (``.prev``, then the ``.bak`` files),
    keeping the unreadable file as ``annotations.json.corrupt-<stamp>``; warn."""
    ann = root / ANNOTATIONS_FILE
    candidates = [c for c in [root / PREV_FILE, *_backups(root)[::-1]] if c.is_file()]
    for cand in candidates:
        try:
            doc = _load_doc(cand)
        except DatasetFormatError:
            continue
        kept = ""
        if ann.exists():
            corrupt = ann.with_name(f"{ANNOTATIONS_FILE}.corrupt-"
                                    f"{datetime.now().strftime('%Y%m%d-%H%M%S')}")
            os.replace(ann, corrupt)
            kept = f"; the unreadable file was kept as {corrupt.name}"
        saved = datetime.fromtimestamp(cand.stat().st_mtime).isoformat(timespec="seconds")
        atomic_write_bytes(ann, cand.read_bytes())
        warnings.warn(f"{error}. Recovered the version saved at {saved} from {cand.name}"
                      f"{kept}", ProjectRecoveredWarning, stacklevel=3)
        return doc
    tried = f" (no readable backup among {[c.name for c in candidates]})" if candidates else ""
    raise DatasetFormatError(f"{error}{tried}") from None


class AnnotationProject:
    """An annotation session stored as a dataset folder; see the module docstring.

    Make one with :meth:`create` or :meth:`open`. Frames are numbered ``t = 0 .. n_frames-1``
    in the order of ``annotations.json``. Not thread-safe: call it from one thread.

    Attributes: ``root`` (the folder), ``path`` (its ``annotations.json``), ``categories``
    (id -> name), ``info`` (the COCO ``info`` block), ``backup_interval_s`` and
    ``keep_backups`` (the timestamped-backup policy; ``keep_backups=None`` deletes none).
    """

    def __init__(self, root: Path, doc: dict, *, backup_interval_s: float = 600.0,
                 keep_backups: int | None = 20, read_only: bool = False) -> None:
        self.root = Path(root)
        self.path = self.root / ANNOTATIONS_FILE
        self.info: dict = dict(doc.get("info") or {})
        self.categories: dict[int, str] = parse_categories(doc, self.path)
        self._entries: list[dict] = [dict(e) for e in doc["images"]]
        by_image: dict[int, list[dict]] = {e["id"]: [] for e in self._entries}
        for ann in sorted(doc["annotations"], key=lambda a: a["id"]):
            by_image[ann["image_id"]].append(ann)
        self._anns: list[list[dict]] = [by_image[e["id"]] for e in self._entries]
        self.backup_interval_s = float(backup_interval_s)
        self.keep_backups = keep_backups
        self._dirty_frames: set[int] = set()
        self._last_save = time.monotonic()
        self._last_backup = float("-inf")  # the first save of a session always keeps a .bak
        self._lock = ProjectLock(self.root)  # taken at the first save, given back by close()
        #: opened to look at only (another process had it open): never saved
        self.read_only = bool(read_only)
        self._on_disk: bytes | None = None  # annotations.json as last read or written here

    # --- creating and opening -----------------------------------------------------------
    @classmethod
    def create(cls, folder: str | os.PathLike, images: Any,
               instances: Sequence[FrameInstances] | None = None,
               pixel_size_um: float | None = None, source: Any = None,
               overwrite: bool = False, *, frames: Sequence[dict] | None = None,
               categories: dict[int, str] | None = None) -> AnnotationProject:
        """Write a new project folder (images once, ``annotations.json``) and open it.

        ``images``: a 2D frame ((H, W) or (H, W, 3) RGB), a (T, H, W[, 3]) stack (a
        time-lapse: its frames get ``video_id`` 1 and ``frame_index`` t) or a list of frames
        (independent frames, sizes may differ). ``instances``: one FrameInstances per frame to
        start from (e.g. a model's output); default empty. ``pixel_size_um`` applies to every
        frame (it overrides ``frames``). ``source`` (a path, a model name...) is stored in
        ``info["source"]``. ``overwrite`` replaces a project in ``folder``; its
        ``annotations.json`` and ``.prev`` are kept as timestamped ``.bak``, as are images that
        change. ``frames``: per-frame metadata, e.g. ``meta["frames"]`` of
        :func:`~blastoseg.annotate.exchange.import_annotations`: dicts with any of
        ``file_name``, ``video_id``, ``frame_index``, ``focal_plane``, ``pixel_size_um`` and
        ``extra`` (e.g. ``{"reviewed": True}``). ``categories``: id -> name, default
        ``{1: "blastomere"}``.

        Raises DatasetFormatError if a project exists and ``overwrite`` is False or a class
        id has no category; InvalidImageError for bad image shapes or instances that do not
        match their frame.
        """
        root = Path(folder)
        if (root / ANNOTATIONS_FILE).exists() and not overwrite:
            raise DatasetFormatError(f"{root} already holds a project ({ANNOTATIONS_FILE}); "
                                     f"open it with AnnotationProject.open, or pass "
                                     f"overwrite=True to replace it")
        pixels, stacked = _as_frames(images)
        n = len(pixels)
        if instances is None:
            instances = [FrameInstances.empty(p.shape[:2]) for p in pixels]
        instances = list(instances)
        if len(instances) != n:
            raise InvalidImageError(f"{n} frames but {len(instances)} FrameInstances")
        if frames is not None and len(frames) != n:
            raise InvalidImageError(f"{n} frames but {len(frames)} frame metadata entries")
        samples, used = [], set()
        for t, (image, inst) in enumerate(zip(pixels, instances, strict=True)):
            if not isinstance(inst, FrameInstances):
                raise InvalidImageError(f"frame {t}: expected FrameInstances, got "
                                        f"{type(inst).__name__}")
            if inst.shape != image.shape[:2]:
                raise InvalidImageError(f"frame {t}: image is {image.shape[:2]} but its "
                                        f"instance masks are {inst.shape}")
            spec = dict(frames[t]) if frames is not None else {}
            pixel = spec.get("pixel_size_um") if pixel_size_um is None else pixel_size_um
            samples.append(Sample(
                image=image, instances=inst,
                file_name=_frame_file_name(spec.get("file_name"), image, t, used),
                video_id=spec.get("video_id", 1 if stacked else None),
                frame_index=spec.get("frame_index", t if stacked else None),
                focal_plane=spec.get("focal_plane"), pixel_size_um=pixel,
                extra=dict(spec.get("extra") or {})))
        info = {"description": "blastoseg annotation project", "created_by": "blastoseg.annotate",
                "created": datetime.now().isoformat(timespec="seconds")}
        if source is not None:
            info["source"] = source
        write_dataset(root, samples, categories, overwrite=overwrite, info=info)
        if (root / PREV_FILE).exists():  # the replaced project's; must not be "recovered" later
            backup_existing(root / PREV_FILE, move=True)
        return cls.open(root)

    @classmethod
    def open(cls, folder: str | os.PathLike, *, backup_interval_s: float = 600.0,
             keep_backups: int | None = 20, read_only: bool = False) -> AnnotationProject:
        """Open a project, or any dataset folder, for annotation.

        An unreadable ``annotations.json`` is replaced by ``annotations.json.prev`` (or the
        newest readable ``.bak``) with a :class:`ProjectRecoveredWarning`; the unreadable file
        is kept as ``annotations.json.corrupt-<stamp>`` (not when ``read_only``).

        ``read_only``: to look at, even while another process has it open; it takes no lock
        and is never saved (:meth:`save` raises :class:`ProjectReadOnlyError`).

        Raises DatasetFormatError: no such folder, no readable annotations file (nor backup),
        or image files missing; :class:`ProjectLockedError` ("open elsewhere") unless
        ``read_only``: another live process holds the project.
        """
        root = Path(folder)
        if root.is_file() and root.name == ANNOTATIONS_FILE:
            root = root.parent
        if not root.is_dir():
            raise DatasetFormatError(f"{root}: project folder does not exist")
        if not read_only:
            ProjectLock(root).refuse_if_held_elsewhere()
        try:
            doc = _load_doc(root / ANNOTATIONS_FILE)
        except DatasetFormatError as exc:
            if read_only:
                raise
            doc = _restore(root, exc)
        project = cls(root, doc, backup_interval_s=backup_interval_s, keep_backups=keep_backups,
                      read_only=read_only)
        if project.path.is_file():
            project._on_disk = digest(project.path.read_bytes())
        missing = [e["file_name"] for e in project._entries
                   if not (root / e["file_name"]).is_file()]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DatasetFormatError(f"{project.path}: image file(s) missing from {root}: "
                                     f"{missing[:5]}{more}")
        return project

    # --- frames ---------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return len(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (f"AnnotationProject({str(self.root)!r}, frames={self.n_frames}, "
                f"reviewed={len(self.reviewed_frames())}, dirty={self.is_dirty})")

    def _check_t(self, t: int) -> int:
        if not -self.n_frames <= int(t) < self.n_frames:
            raise IndexError(f"frame {t} out of range for {self.n_frames} frames")
        return int(t) % self.n_frames

    def frame_info(self, t: int) -> dict:
        """A copy of frame ``t``'s image entry (``file_name``, ``height``, ``video_id``...)."""
        return dict(self._entries[self._check_t(t)])

    def image(self, t: int) -> np.ndarray:
        """Pixels of frame ``t`` exactly as stored."""
        entry = self._entries[self._check_t(t)]
        path = self.root / entry["file_name"]
        try:
            image = read_image(path, collapse_grey=False)
        except ImageReadError as exc:
            raise DatasetFormatError(f"{self.path}: frame {t}: {exc}") from None
        if image.shape[:2] != (entry["height"], entry["width"]):
            raise DatasetFormatError(f"{path}: image is {image.shape[:2]} but {self.path.name}"
                                     f" says {(entry['height'], entry['width'])}")
        return image

    def instances(self, t: int) -> FrameInstances:
        """The current (possibly unsaved) instances of frame ``t``."""
        t = self._check_t(t)
        doc = {"images": [self._entries[t]], "annotations": self._anns[t],
               "categories": self._categories_list()}
        return Dataset(self.root, doc, self.path).instances(0)  # the reader's exact decoding

    def set_instances(self, t: int, instances: FrameInstances) -> None:
        """Replace frame ``t``'s instances (encoded at once; the caller may reuse its arrays).
        Marks the frame dirty unless nothing changed."""
        t = self._check_t(t)
        entry = self._entries[t]
        if not isinstance(instances, FrameInstances):
            raise InvalidImageError(f"expected FrameInstances, got {type(instances).__name__}")
        if instances.shape != (entry["height"], entry["width"]):
            raise InvalidImageError(f"frame {t} is {(entry['height'], entry['width'])} but the "
                                    f"instance masks are {instances.shape}")
        unknown = sorted(set(instances.class_ids.tolist()) - set(self.categories))
        if unknown:
            raise DatasetFormatError(f"class id(s) {unknown} have no category in this project "
                                     f"(categories: {self.categories})")
        anns = _annotations_for(instances, entry["id"], 1)
        strip = [[{k: v for k, v in a.items() if k != "id"} for a in x]
                 for x in (anns, self._anns[t])]
        if strip[0] != strip[1]:
            self._anns[t] = anns
            self._dirty_frames.add(t)

    def _set_entry_key(self, t: int, key: str, value: Any) -> None:
        t = self._check_t(t)
        entry = self._entries[t]
        old = entry.get(key)
        if value in (None, False, ""):  # unset flags are left out of the file
            entry.pop(key, None)
        else:
            entry[key] = value
        if entry.get(key) != old:
            self._dirty_frames.add(t)

    def reviewed(self, t: int) -> bool:
        """Whether a person has marked frame ``t`` as checked."""
        return bool(self._entries[self._check_t(t)].get("reviewed", False))

    def set_reviewed(self, t: int, value: bool = True) -> None:
        self._set_entry_key(t, "reviewed", bool(value))

    def reviewed_frames(self) -> list[int]:
        return [t for t, e in enumerate(self._entries) if e.get("reviewed")]

    def note(self, t: int) -> str:
        """The free-text note of frame ``t`` ("" when none)."""
        return str(self._entries[self._check_t(t)].get("note", ""))

    def set_note(self, t: int, text: str) -> None:
        self._set_entry_key(t, "note", str(text))

    @property
    def pixel_size_um(self) -> float | None:
        """The first frame's pixel size (µm), or None."""
        return next((e["pixel_size_um"] for e in self._entries
                     if e.get("pixel_size_um") is not None), None)

    @pixel_size_um.setter
    def pixel_size_um(self, value: float | None) -> None:
        for t in range(self.n_frames):
            self._set_entry_key(t, "pixel_size_um", None if value is None else float(value))

    # --- saving ---------------------------------------------------------------------------
    @property
    def is_dirty(self) -> bool:
        """Unsaved changes exist."""
        return bool(self._dirty_frames)

    @property
    def dirty_frames(self) -> list[int]:
        """Frames changed since the last save."""
        return sorted(self._dirty_frames)

    def _categories_list(self) -> list[dict]:
        cats = self.categories or DEFAULT_CATEGORIES
        return [{"id": k, "name": v} for k, v in sorted(cats.items())]

    def to_json(self) -> str:
        """The ``annotations.json`` text of the current state (annotation ids renumbered
        1, 2, ... in frame order, as write_dataset numbers them)."""
        next_id = 1
        for t, anns in enumerate(self._anns):
            self._anns[t] = [{**a, "id": next_id + k} for k, a in enumerate(anns)]
            next_id += len(anns)
        info = {**self.info, "format": "blastoseg-coco", "format_version": FORMAT_VERSION}
        doc = {"info": info, "images": self._entries,
               "annotations": [a for anns in self._anns for a in anns],
               "categories": self._categories_list()}
        return json.dumps(doc, indent=1, default=_json_default) + "\n"

    def save(self) -> Path:
        """Write ``annotations.json`` atomically if its content changed (images are never
        rewritten). The replaced version goes to ``annotations.json.prev`` and, per the backup
        policy, to a timestamped ``.bak``. An OSError (e.g. disk full) propagates and the
        project stays dirty, so the next save tries again."""
        if self.read_only:
            raise ProjectReadOnlyError(
                f"{self.root} was opened read-only (it was open elsewhere): these edits are "
                "not saved; open it again, not read-only, once it is closed there")
        # one writer per project: a second process saving would drop this one's edits
        self._lock.acquire()
        text = self.to_json()
        data = text.encode("utf-8")
        if self.path.exists():
            old = self.path.read_bytes()
            if old != data and self._on_disk is not None and digest(old) != self._on_disk:
                raise ProjectLockedError(f"{self.path} was changed by another process since "
                                         "it was opened here: saving would drop its edits")
            if old != data and _parses(old):  # never let garbage overwrite a good .prev
                atomic_write_bytes(self.root / PREV_FILE, old)
                self._maybe_backup()
            if old == data:
                self._mark_clean()
                return self.path
        atomic_write_text(self.path, text)
        self._on_disk = digest(data)
        self._mark_clean()
        return self.path

    def close(self) -> None:
        """Give the project's lock back (another process may then save it). Unsaved
        changes are not saved here: call :meth:`save` first."""
        self._lock.release()

    def _mark_clean(self) -> None:
        self._dirty_frames.clear()
        self._last_save = time.monotonic()

    def _maybe_backup(self) -> None:
        now = time.monotonic()
        if now - self._last_backup < self.backup_interval_s:
            return
        backup_existing(self.path)
        self._last_backup = now
        if self.keep_backups is not None:
            for old in _backups(self.root)[:-max(int(self.keep_backups), 1)]:
                old.unlink(missing_ok=True)

    def autosave(self, min_interval_s: float = 2.0) -> bool:
        """Save if there are unsaved changes and the last save is at least ``min_interval_s``
        old; return whether it saved.

        Call it after every edit, and from a timer (or :meth:`flush` on close) so the last
        edit of a burst is saved too. Saves are atomic, so a crash loses at most the edits of
        the last interval; no journal is kept.
        """
        if not self.is_dirty or time.monotonic() - self._last_save < min_interval_s:
            return False
        self.save()
        return True

    def flush(self) -> bool:
        """Save now if there are unsaved changes; return whether it saved."""
        if not self.is_dirty:
            return False
        self.save()
        return True

    def __enter__(self) -> AnnotationProject:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.flush()


def _parses(data: bytes) -> bool:
    try:
        json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True
