"""One writer per annotation project: a lock file holding the writer's process id.

Two napari sessions (or a session and a script) saving one project would each rewrite
``annotations.json`` from their own copy, and the later save silently drops the other's edits.
The first process to save takes ``<project>/.blastoseg-lock`` (created exclusively, with its pid
and host); another process that tries to save gets :class:`ProjectLockedError` naming the
holder, and keeps its edits in memory (it can save them elsewhere or after the holder closes).
A lock whose process is gone (a crash, kill -9) on this host is taken over. The lock is released
when the project is closed or the process exits.

Opening a project whose lock a live process holds is refused up front ("open elsewhere",
:meth:`ProjectLock.refuse_if_held_elsewhere`), unless it is opened read-only. And a project
whose ``annotations.json`` changed on disk since it was read (another process saved it, then
died or closed it) is not saved over: its :func:`digest` no longer matches.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import socket
from pathlib import Path

from blastoseg.errors import DatasetFormatError

__all__ = ["LOCK_FILE", "ProjectLock", "ProjectLockedError", "ProjectReadOnlyError", "digest"]

LOCK_FILE = ".blastoseg-lock"


class ProjectLockedError(DatasetFormatError):
    """Another process holds the project's lock: saving here would drop its edits."""


class ProjectReadOnlyError(DatasetFormatError):
    """The project was opened read-only (another process had it open): it is never saved."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def digest(data: bytes) -> bytes:
    """sha256 of a file's bytes: how a project notices its file changed under it."""
    return hashlib.sha256(data).digest()


class ProjectLock:
    """The lock of one project folder, taken on :meth:`acquire`, given back on :meth:`release`."""

    _held: set[Path] = set()  # locks this process holds (released at exit)

    def __init__(self, root: str | os.PathLike) -> None:
        self.path = Path(root) / LOCK_FILE

    def holder(self) -> dict | None:
        """The lock file's content ({"pid", "host"}), or None when there is none."""
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: treated as stale below

    def _stale(self, holder: dict) -> bool:
        pid, host = holder.get("pid"), holder.get("host")
        if not isinstance(pid, int):
            return True
        return host == socket.gethostname() and not _alive(pid)

    def other_holder(self) -> dict | None:
        """{"pid", "host"} of a live process other than this one holding the lock, else None
        (no lock, ours, or stale: its process is gone)."""
        holder = self.holder()
        if holder is None:
            return None
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            return None
        return None if self._stale(holder) else holder

    def refuse_if_held_elsewhere(self) -> None:
        """Raise :class:`ProjectLockedError` ("open elsewhere") when another live process
        holds the lock: opening the project to edit it would lose one side's edits."""
        holder = self.other_holder()
        if holder is not None:
            raise ProjectLockedError(
                f"{self.path.parent} is open elsewhere (process {holder.get('pid')} on "
                f"{holder.get('host')}): close it there first, or open it read-only to look "
                "at it (edits there are not saved)")

    def acquire(self) -> None:
        """Take the lock (idempotent for this process). Raises :class:`ProjectLockedError`
        when a live process holds it."""
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue  # released meanwhile: try again
                if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                    ProjectLock._held.add(self.path)
                    return
                if self._stale(holder):
                    self.path.unlink(missing_ok=True)  # its process is gone (crash, kill -9)
                    continue
                raise ProjectLockedError(
                    f"{self.path.parent} is open elsewhere (process {holder.get('pid')} on "
                    f"{holder.get('host')}): saving here would drop its edits. Close it there "
                    "first, or save this copy as a new project") from None
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me))
            ProjectLock._held.add(self.path)
            return
        raise ProjectLockedError(f"{self.path.parent}: cannot take the project's lock")

    def release(self) -> None:
        """Give the lock back if this process holds it."""
        holder = self.holder()
        if holder and holder.get("pid") == os.getpid() and \
                holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        ProjectLock._held.discard(self.path)


@atexit.register
def _release_all() -> None:
    for path in list(ProjectLock._held):
        ProjectLock(path.parent).release()
