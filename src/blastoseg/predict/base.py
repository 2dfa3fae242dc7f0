"""What every predictor is: the contract, the shared inference context, the cached loader.

A predictor is a loaded model of one kind (see :mod:`blastoseg.kinds`) ready to run on
images. All of them, whatever their kind, follow :class:`Predictor`:

* ``predict(image, progress=None, cancel=None)``: a 2D frame gives one result, a (T, Y, X)
  stack a list (one per frame); ``progress(done, total)`` is called as work advances and
  ``cancel()`` returning True stops the run between frames (:class:`~blastoseg.progress.Cancelled`).
* ``iter_predict(frames, on_result=None)``: a generator for GUI workers and long stacks:
  yields ``(done, total)``; each frame's result goes to ``on_result(index, result)`` as soon
  as it is ready (and is not kept) or, without ``on_result``, is returned at the end.

:class:`PredictorBase` holds what the kinds share: the model entry, the typed card, the
device and the model in eval mode, loaded strictly. :func:`inference_context` is the one
place that turns on inference mode (and autocast on CUDA). :func:`load_predictor` resolves a
name, file or job folder, picks the predictor class from the card's kind and keeps the last
few loaded predictors, so code that calls it in a loop loads the weights once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from blastoseg.kinds import get_kind
from blastoseg.predict.device import describe_device, resolve_device
from blastoseg.progress import run_with_progress
from blastoseg.weights import ModelEntry, resolve_model

__all__ = ["Predictor", "PredictorBase", "clear_predictor_cache",
           "inference_context", "load_predictor"]

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


@runtime_checkable
class Predictor(Protocol):
    """The contract every predictor kind follows (see the module docstring)."""

    kind: str
    entry: ModelEntry
    device: torch.device

    def iter_predict(self, frames: Sequence, on_result: Callable[[int, Any], None] | None = None
                     ) -> Generator[tuple[int, int], None, list]: ...

    def predict(self, image, progress: Progress | None = None, cancel: Cancel | None = None
                ) -> Any: ...


@contextmanager
def inference_context(device: torch.device):
    """No autograd, and float16 autocast on CUDA (CPU and MPS run in float32)."""
    amp = (torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda"
           else nullcontext())
    with torch.inference_mode(), amp:
        yield


class PredictorBase:
    """The part every predictor shares: resolve the model, read its card once, load it.

    Subclasses set :attr:`kind` and implement :meth:`build_model` (the network for the typed
    card) and ``iter_predict``; ``predict`` comes from here.
    """

    kind: str = ""

    def __init__(self, model: str, device: str | torch.device = "auto") -> None:
        self.entry: ModelEntry = resolve_model(model, kind=self.kind)
        #: the model card's config, read once into the kind's typed dataclass
        self.card = get_kind(self.kind).card_class().from_card(self.entry.card)
        self.device = resolve_device(device)
        self.device_name = describe_device(self.device)
        net = self.build_model()
        from blastoseg.weights import load_into_model

        load_into_model(net, self.entry.weights_path, card=self.entry.card.to_dict(),
                        expected_kind=self.kind)
        self.model = net.to(self.device).eval()

    def build_model(self) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def inference(self):
        """``with self.inference(): ...`` around every forward pass."""
        return inference_context(self.device)

    def iter_predict(self, frames, on_result=None, **options):  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, image, progress: Progress | None = None, cancel: Cancel | None = None,
                **options: Any):
        """A 2D frame -> one result; a (T, Y, X) stack -> a list, one per frame.

        ``options`` are the kind's own (e.g. the amodal ``embryo=``); they go to
        :meth:`iter_predict`. ``cancel()`` returning True stops between frames
        (:class:`blastoseg.progress.Cancelled`)."""
        from blastoseg.io.frames import as_frames

        frames, stack = as_frames(image)
        results = run_with_progress(self.iter_predict(frames, **options), progress, cancel)
        return results if stack else results[0]


# --- a bounded cache of loaded predictors ------------------------------------------------------

CACHE_SIZE = 3
_cache: OrderedDict[tuple, Any] = OrderedDict()
_cache_lock = threading.Lock()


def _file_stamp(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return str(path), -1, -1
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def load_predictor(name_or_path: str | Path, device: str = "auto", *, kind: str | None = None,
                   **options: Any):
    """A loaded predictor for a model name, ``.safetensors`` file or training job folder.

    The predictor class comes from the card's kind (:mod:`blastoseg.kinds`); ``kind=``
    insists on one (a clear error otherwise); ``options`` go to the predictor's constructor
    (e.g. ``score_threshold``, ``batch_size``). The last :data:`CACHE_SIZE` predictors are
    kept by model, device, options and the weights and card files (path, modification time,
    size), so a model retrained or re-calibrated under the same name is loaded afresh. The
    returned predictor is shared: do not change its attributes.
    """
    entry = resolve_model(name_or_path, kind=kind)
    key = (entry.kind, str(name_or_path), str(device),
           tuple(sorted((k, repr(v)) for k, v in options.items())),
           _file_stamp(entry.weights_path), _file_stamp(entry.card_path))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    cls = get_kind(entry.kind).predictor_class()
    predictor = cls(str(name_or_path), device=device, **options)
    with _cache_lock:
        # drop older versions of the same model (its files changed) and the least recent
        for old in [k for k in _cache if k[:4] == key[:4]]:
            del _cache[old]
        _cache[key] = predictor
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return predictor


def clear_predictor_cache() -> None:
    """Forget every predictor :func:`load_predictor` kept."""
    with _cache_lock:
        _cache.clear()
