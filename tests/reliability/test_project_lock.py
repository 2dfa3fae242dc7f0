"""Two processes saving one annotation project (issue 18, item 17): the second gets a clear
"open elsewhere" error instead of silently dropping the first one's edits."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from blastoseg.annotate import AnnotationProject
from blastoseg.annotate.project_lock import LOCK_FILE, ProjectLockedError, ProjectReadOnlyError
from blastoseg.instances import FrameInstances


def _project(folder):
    masks = np.zeros((1, 32, 32), bool)
    masks[0, 8:20, 8:20] = True
    images = np.zeros((2, 32, 32), np.uint8)
    return AnnotationProject.create(folder, images, [FrameInstances(masks=masks)] * 2)


HOLDER = textwrap.dedent("""
    import sys, time
    from blastoseg.annotate import AnnotationProject
    p = AnnotationProject.open(sys.argv[1])
    p.set_reviewed(0, True)
    p.save()                      # takes the lock
    print("saved", flush=True)
    time.sleep(120)
""")


def test_a_second_process_cannot_overwrite_the_first_ones_edits(tmp_path):
    folder = tmp_path / "proj"
    _project(folder).close()
    mine = AnnotationProject.open(folder)  # opened before the other process took the lock
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "saved"
        mine.set_reviewed(1, True)
        with pytest.raises(ProjectLockedError, match=f"open elsewhere \\(process {holder.pid}"):
            mine.save()
        assert AnnotationProject.open(folder, read_only=True).reviewed(0)  # holder's edit saved
        assert mine.is_dirty  # and mine is kept in memory, not lost
    finally:
        holder.kill()
        holder.wait()
    # its process is gone (kill -9 leaves the lock file): the lock is stale and taken over,
    # but the file changed since `mine` read it: saving would drop the holder's saved edit
    assert (folder / LOCK_FILE).exists()
    with pytest.raises(ProjectLockedError, match="changed by another process"):
        mine.save()
    mine.close()
    reopened = AnnotationProject.open(folder)  # reopened: the holder's edit, then mine again
    assert reopened.reviewed(0)
    reopened.set_reviewed(1, True)
    reopened.save()
    reopened.close()
    assert not (folder / LOCK_FILE).exists()
    final = AnnotationProject.open(folder)
    assert final.reviewed(0) and final.reviewed(1)
    final.close()


def test_one_process_may_save_and_reopen_freely(tmp_path):
    p = _project(tmp_path / "proj")
    p.save()
    again = AnnotationProject.open(tmp_path / "proj")
    again.set_reviewed(0, True)
    again.save()  # same process: allowed
    p.close()
    assert not (tmp_path / "proj" / LOCK_FILE).exists()


def test_opening_a_project_open_elsewhere_says_so_or_opens_read_only(tmp_path):
    """Item 17's read-only open: a project another live process holds is refused at open
    ("open elsewhere", before any edit is made), or opened read-only: its content is there,
    it is never saved, and closing it leaves the other process's lock alone."""
    folder = tmp_path / "proj"
    _project(folder).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "saved"
        with pytest.raises(ProjectLockedError, match=f"open elsewhere \\(process {holder.pid}"
                                                     ".*open it read-only"):
            AnnotationProject.open(folder)
        look = AnnotationProject.open(folder, read_only=True)
        assert look.read_only and look.reviewed(0)  # the holder's saved edit is shown
        before = (folder / "annotations.json").read_bytes()
        look.set_reviewed(1, True)
        with pytest.raises(ProjectReadOnlyError, match="opened read-only"):
            look.flush()
        assert (folder / "annotations.json").read_bytes() == before
        look.close()
        assert (folder / LOCK_FILE).exists()  # still the holder's
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: the project opens for editing again
    again = AnnotationProject.open(folder)
    assert not again.read_only
    again.close()
