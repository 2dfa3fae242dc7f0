"""Work around a napari crash on layer removal (issue 18 item 6; docs/napari_crash.md).

When a layer is removed, napari (0.9.2: ``VispyCanvas._clean_and_update_scenegraph``, from
the ``layers.events.removed`` and ``end_batch`` handlers) calls vispy's ``context.finish()``,
which runs the queued GL commands (``glDeleteProgram`` of the removed layer's shaders,
``glFinish``) at once, outside the canvas's paint event and without making the canvas's GL
context current. At that moment the current context is Qt's own (the one that composes the
window), so the deletions go to the wrong context: under Mesa's llvmpipe (Xvfb, remote
desktops without a GPU) the next draw of a remaining layer, or of the next image, can then
die with a segmentation fault in ``glDrawArrays``.

:func:`guard_layer_removal` makes the canvas's context current before napari's handlers run,
so those commands reach the context they belong to. It changes nothing that is drawn.
"""

from __future__ import annotations

import warnings
import weakref

__all__ = ["canvas_gl_widget", "guard_layer_removal", "make_canvas_current"]

_MARK = "_blastoseg_gl_guard"


def canvas_gl_widget(viewer):
    """The viewer's canvas as a Qt OpenGL widget (with ``makeCurrent``), or None (no window,
    or a napari whose private layout differs)."""
    with warnings.catch_warnings():
        # these attributes are private on purpose (the workaround needs the GL widget);
        # napari announces their removal no earlier than 0.10, and then this returns None
        warnings.simplefilter("ignore", FutureWarning)
        qt_viewer = getattr(getattr(viewer, "window", None), "_qt_viewer", None)
        canvas = getattr(qt_viewer, "canvas", None)
        scene_canvas = getattr(canvas, "_scene_canvas", canvas)  # napari >= 0.5: a wrapper
    native = getattr(scene_canvas, "native", None)
    if native is None or not hasattr(native, "makeCurrent") or not hasattr(native, "context"):
        return None
    return native


def make_canvas_current(viewer) -> bool:
    """Make the canvas's GL context current; False when there is none yet (the canvas was
    never shown) or no canvas at all."""
    native = canvas_gl_widget(viewer)
    if native is None:
        return False
    try:
        context = native.context()
        if context is None or not context.isValid():
            return False
        native.makeCurrent()
    except RuntimeError:  # the Qt widget is already deleted (viewer closing)
        return False
    return True


def guard_layer_removal(viewer) -> bool:
    """Make the canvas's GL context current whenever napari is about to flush GL commands
    after a layer removal (once per viewer; True when the guard was added now).

    napari runs its own callbacks before any plugin's, whatever ``position`` asks, so the
    guard cannot sit in front of napari's ``removed`` handler; it listens to the events
    that come before: ``removing`` (each removal) and ``begin_batch`` (``remove_selected``
    and ``clear``, which flush once at ``end_batch``). Nothing between them and napari's
    flush runs the Qt event loop, so the context stays current."""
    layers = getattr(viewer, "layers", None)
    events = getattr(layers, "events", None)
    if events is None or not hasattr(events, "removing") or not hasattr(events, "begin_batch"):
        return False
    if any(getattr(cb, _MARK, False) for cb in events.removing.callbacks):
        return False
    viewer_ref = weakref.ref(viewer)  # no cycle through the layer list's events

    def before_gl_flush(event=None) -> None:
        live = viewer_ref()
        if live is not None:
            make_canvas_current(live)

    setattr(before_gl_flush, _MARK, True)
    events.removing.connect(before_gl_flush)
    events.begin_batch.connect(before_gl_flush)
    return True
