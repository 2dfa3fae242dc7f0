"""Results one frame at a time: a predictor's run as an iterator, for writers that take
them one by one (``blastoseg segment`` on long stacks).

:func:`stream_predictions` runs :meth:`~blastoseg.predict.base.PredictorBase.iter_predict`
with ``on_result`` and hands each frame's result on as soon as its step is done, so neither
the predictor nor this function holds the results of finished frames: memory stays flat with
the stack's length (issue 18 item 24), where ``predict`` returns them all at the end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from blastoseg.io.frames import as_frames

__all__ = ["stream_predictions"]


def stream_predictions(predictor, image, progress: Callable[[int, int], None] | None = None,
                       **kind_options: Any) -> Iterator[Any]:
    """The results of ``predictor.predict(image, progress, **kind_options)``, one per frame
    in frame order, as an iterator (a 2D frame gives one); each stack frame's ``meta["frame"]``
    is its index, as ``predict`` sets it. The image is checked (and bad kind options
    refused) when the iterator is first advanced, before any frame runs."""
    frames, stack = as_frames(image)
    ready: deque = deque()
    steps = predictor.iter_predict(frames, on_result=lambda i, r: ready.append((i, r)),
                                   **kind_options)
    for done, total in steps:
        if progress is not None:
            progress(done, total)
        while ready:
            index, result = ready.popleft()
            if stack:
                result.meta["frame"] = index
            yield result
