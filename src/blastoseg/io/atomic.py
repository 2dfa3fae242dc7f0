"""Atomic file writes and backups, so that an interrupted export never leaves a half-written
file and an overwrite never loses the previous version.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "backup_existing",
           "remove_stale_temp_files"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    The bytes go to a temporary file in the same directory (same file system, so the final
    ``os.replace`` is atomic), are flushed and fsync'ed, then the temporary file replaces
    ``path``. Readers see either the old file or the complete new one, never a partial one.

    Parameters
    ----------
    path
        Destination file; its parent directories are created if needed.
    data
        The complete file content.

    Returns
    -------
    Path
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the usual permissions (umask applied)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def backup_existing(path: str | os.PathLike, *, move: bool = False) -> Path | None:
    """Keep a copy of an existing file as a timestamped sibling before it gets replaced.

    The backup is named ``<name>.YYYYmmdd-HHMMSS.bak``; if that exists already (two backups in
    the same second), ``-1``, ``-2``, ... is appended to the timestamp, so no backup is ever
    overwritten.

    Parameters
    ----------
    path
        File that is about to be overwritten.
    move
        Rename the file instead of copying it (the original disappears). Copying (the default)
        keeps the original in place until the new version atomically replaces it.

    Returns
    -------
    Path or None
        The backup path, or None when ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        return None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    n = 0
    while True:
        suffix = stamp if n == 0 else f"{stamp}-{n}"
        backup = path.with_name(f"{path.name}.{suffix}.bak")
        if not backup.exists():
            break
        n += 1
    if move:
        os.replace(path, backup)
    else:
        # copy to a temp name then rename, so a crash never leaves a truncated .bak
        atomic_write_bytes(backup, path.read_bytes())
        shutil.copystat(path, backup)
    return backup


def _fsync_dir(directory: Path) -> None:
    """Persist a rename on POSIX by fsync'ing the directory (a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an interrupted :func:`atomic_write_bytes` left in ``folder``
    (``.<name>.<random>.tmp``: a process killed with SIGKILL never reaches its cleanup; a
    checkpoint's is as large as the checkpoint). Call it only where no other writer can be
    busy (e.g. a training job's own folders when the job starts). Returns what was removed."""
    removed = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for path in root.glob(".*.tmp"):
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed

