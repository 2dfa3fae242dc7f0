"""The batch manifest: ``OUT/manifest.json``, the state of every embryo of a batch.

States: ``pending`` (not run yet, or in flight when a run was stopped), ``running`` (on a
worker now; a killed run leaves these, and the next run does them again), ``done`` (with the
input's stamp: size, newest mtime and file count, see
:func:`blastoseg.batch.embryos.input_stamp`) and ``failed`` (with the error). A rerun skips an
embryo that is done with the same input stamp, the same tasks and options, and whose output
folder is still there.

Only the client process writes the manifest (workers report to it), and every save is
atomic, so a killed run leaves the last complete manifest.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from blastoseg.errors import BlastosegError
from blastoseg.io.atomic import atomic_write_text

__all__ = ["MANIFEST_FILE", "STATES", "Manifest"]

MANIFEST_FILE = "manifest.json"
STATES = ("pending", "running", "done", "failed")
_VERSION = 1


class Manifest:
    """The manifest of one output folder; :meth:`save` after each change."""

    def __init__(self, out_dir: str | os.PathLike, entries: dict | None = None,
                 meta: dict | None = None) -> None:
        self.out = Path(out_dir)
        self.path = self.out / MANIFEST_FILE
        self.entries: dict[str, dict] = entries or {}
        self.meta: dict = meta or {}

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> Manifest:
        """The manifest in ``out_dir``, or an empty one when there is none yet."""
        path = Path(out_dir) / MANIFEST_FILE
        if not path.is_file():
            return cls(out_dir)
        try:
            doc = json.loads(path.read_text())
            return cls(out_dir, dict(doc["embryos"]), dict(doc.get("meta", {})))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BlastosegError(f"{path}: not a readable batch manifest ({exc}); move it away "
                                 "to start the batch afresh") from None

    def save(self) -> Path:
        doc = {"version": _VERSION, "meta": self.meta, "embryos": self.entries}
        return atomic_write_text(self.path, json.dumps(doc, indent=1, sort_keys=False))

    def is_done(self, name: str, stamp: dict, settings: dict) -> bool:
        """Whether ``name`` finished with this input and these tasks/options (its output folder
        still there): a rerun skips it."""
        e = self.entries.get(name)
        return (e is not None and e.get("state") == "done" and e.get("stamp") == stamp
                and e.get("settings") == settings and (self.out / name).is_dir())

    def set(self, name: str, state: str, **fields) -> dict:
        """Move ``name`` to ``state``; ``fields`` are added (None removes a field)."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        entry = self.entries.setdefault(name, {})
        entry["state"] = state
        entry["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if state != "failed":
            entry.pop("error", None)
        for key, value in fields.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
        return entry

    def state(self, name: str) -> str | None:
        e = self.entries.get(name)
        return None if e is None else e.get("state")

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for e in self.entries.values():
            out[e.get("state", "pending")] = out.get(e.get("state", "pending"), 0) + 1
        return out
