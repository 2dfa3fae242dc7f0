"""Two processes saving one annotation project (issue 18, item 17): the second gets a clear
"open elsewhere" error instead of silently dropping the first one's edits."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from blastoseg.annotate import AnnotationProject
from blastoseg.annotate.project_lock import LOCK_FILE, ProjectLockedError
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
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "saved"
        mine = AnnotationProject.open(folder)
        mine.set_reviewed(1, True)
        with pytest.raises(ProjectLockedError, match=f"open elsewhere \\(process {holder.pid}"):
            mine.save()
        assert AnnotationProject.open(folder).reviewed(0)  # the holder's edit is on disk
        assert mine.is_dirty  # and mine is kept in memory, not lost
    finally:
        holder.kill()
        holder.wait()
    # its process is gone (kill -9 leaves the lock file): the lock is stale and taken over
    assert (folder / LOCK_FILE).exists()
    mine.save()
    reopened = AnnotationProject.open(folder)
    assert reopened.reviewed(0) and reopened.reviewed(1)
    mine.close()
    assert not (folder / LOCK_FILE).exists()


def test_one_process_may_save_and_reopen_freely(tmp_path):
    p = _project(tmp_path / "proj")
    p.save()
    again = AnnotationProject.open(tmp_path / "proj")
    again.set_reviewed(0, True)
    again.save()  # same process: allowed
    p.close()
    assert not (tmp_path / "proj" / LOCK_FILE).exists()
