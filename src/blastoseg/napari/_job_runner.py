"""The background-worker plumbing shared by the dock widgets that run a model.

The segment, overlap and brightfield widgets each run a Qt-free generator job in a napari
thread worker that yields ``(message, done, total)``. They used to repeat the same code to
start it, drive the form's progress bar and a napari ``progress`` bar, disable Run while it
runs, cancel it and tidy up when it finishes; :class:`JobRunnerMixin` holds that code once.
"""

from __future__ import annotations


class JobRunnerMixin:
    """Runs a job in a napari thread worker for a magicgui form.

    The widget provides ``run_button``, ``cancel_button``, ``progress``, ``status``,
    ``device_used``, ``_predictor`` (None until the worker loaded one), ``worker`` and
    ``_pbar`` (both None while idle) and ``_on_done(result)``; it sets ``_cancel_message``
    and may override :meth:`_show_device` or ``_pbar_follows_total``.
    """

    _cancel_message = "cancelling..."
    _pbar_follows_total = True  # napari's progress bar takes the total of every update

    def start_job(self, fn, *args, desc: str, total: int = 1, **kwargs) -> None:
        """Run ``fn(*args, **kwargs)`` in a thread worker, with ``desc`` on napari's bar."""
        from napari.qt.threading import create_worker
        from napari.utils import progress

        self.worker = create_worker(fn, *args, **kwargs, _start_thread=False,
                                    _ignore_errors=True)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self.status.value = "starting..."
        self._pbar = progress(total=total, desc=desc)
        self.worker.start()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.value = self._cancel_message

    # --- worker callbacks (GUI thread) --------------------------------------------------------
    def _show_device(self, message: str) -> None:
        """Show the device of the loaded predictor during a run."""
        if self._predictor is not None:
            self.device_used.value = self._predictor.device_name

    def _on_progress(self, update: tuple[str, int, int]) -> None:
        message, done, total = update
        self.progress.max = max(total, 1)
        self.progress.value = done
        self.status.value = message
        self._show_device(message)
        pbar = self._pbar  # set_description may process events, and a finish with them
        if pbar is not None:
            if self._pbar_follows_total:
                pbar.total = max(total, 1)
            pbar.set_description(message)
            pbar.n = done
            pbar.refresh()

    def _on_error(self, exc: Exception) -> None:
        # a bug: napari's worker already shows it with its traceback
        self.status.value = f"error: {exc}"

    def _on_aborted(self) -> None:
        self.status.value = "cancelled: no layers were changed"

    def _on_finished(self) -> None:
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.worker = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
