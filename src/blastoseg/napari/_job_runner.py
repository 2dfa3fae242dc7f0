"""The background-worker plumbing of the dock widgets that run a model.

A model run is a Qt-free generator job that yields ``(message, done, total)`` and returns its
result. :class:`JobRunnerMixin` runs it in a napari thread worker: it starts it, drives the
form's progress bar and a napari ``progress`` bar, disables Run while it runs, cancels it and
tidies up when it finishes. A user error raised by the job (a bad input, a missing model, no
such device: any :class:`~blastoseg.errors.BlastosegError`) comes back as a result and is shown
in the status line; napari's worker would show it with a traceback, which is right for bugs
only. Closing the widget's dock stops its job, and what the job returns then is dropped (issue
18 item 5: a closed Segment dock went on and added its layers later).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

from blastoseg.errors import BlastosegError


@dataclass(frozen=True)
class UserError:
    """What a job returns instead of raising a user error."""

    error: BlastosegError


def user_errors_returned(job: Callable[..., Generator], *args, **kwargs) -> Generator:
    """``job(*args, **kwargs)``, returning a user error as :class:`UserError`."""
    try:
        return (yield from job(*args, **kwargs))
    except BlastosegError as exc:
        return UserError(exc)


@dataclass
class _CloseState:
    """Whether a widget's dock was closed while its job ran (its result is then dropped)
    and whether its Qt widgets are gone (nothing to show anything in)."""

    worker: object = None
    closed: bool = False
    destroyed: bool = False

    def running(self, worker) -> None:
        self.worker, self.closed = worker, False

    def close(self, destroyed: bool) -> None:
        self.destroyed = self.destroyed or destroyed
        if self.worker is not None:
            self.closed = True
            self.worker.quit()


class JobRunnerMixin:
    """Runs a job in a napari thread worker for a magicgui form.

    The widget provides ``run_button``, ``cancel_button``, ``progress``, ``status``,
    ``device_used``, ``_predictor`` (None until the worker loaded one), ``worker`` and
    ``_pbar`` (both None while idle), ``_on_done(result)`` and ``_report_error(exc)``; it sets
    ``_cancel_message`` and may override :meth:`_show_device` or ``_pbar_follows_total``.
    """

    _cancel_message = "cancelling..."
    _pbar_follows_total = True  # napari's progress bar takes the total of every update
    _close: _CloseState | None = None

    def stop_jobs_when_closed(self) -> None:
        """Closing the widget's dock (or deleting the widget) cancels the running job."""
        from blastoseg.napari import _ui

        self._close = state = _CloseState()
        # the handler holds the state, not the widget: Qt may call it while the widget is
        # being torn down
        _ui.on_close(self, state.close)

    def _on_close(self, destroyed: bool = False) -> None:
        if self._close is not None:
            self._close.close(destroyed)

    @property
    def _closed(self) -> bool:
        return self._close is not None and self._close.closed

    @property
    def _destroyed(self) -> bool:
        return self._close is not None and self._close.destroyed

    def start_job(self, fn, *args, desc: str, total: int = 1, **kwargs) -> None:
        """Run ``fn(*args, **kwargs)`` in a thread worker, with ``desc`` on napari's bar."""
        from napari.qt.threading import create_worker
        from napari.utils import progress

        self.worker = create_worker(user_errors_returned, fn, *args, **kwargs,
                                    _start_thread=False, _ignore_errors=True)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_error)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        if self._close is not None:
            self._close.running(self.worker)
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
        if self._closed:
            return
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

    def _on_returned(self, result) -> None:
        if self._closed:  # finished before the close reached it: no layers, nothing shown
            return
        if isinstance(result, UserError):
            self._report_error(result.error)
        else:
            self._on_done(result)

    def _on_error(self, exc: Exception) -> None:
        # a bug: napari's worker already shows it with its traceback
        if not self._destroyed:
            self.status.value = f"error: {exc}"

    def _on_aborted(self) -> None:
        if not self._destroyed:
            self.status.value = ("cancelled: the widget was closed; no layers were changed"
                                 if self._closed else "cancelled: no layers were changed")

    def _on_finished(self) -> None:
        self.worker = None
        if self._close is not None:
            self._close.worker = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if not self._destroyed:
            self.run_button.enabled = True
            self.cancel_button.enabled = False
