"""What every predictor is: the contract, the shared inference context, the cached loader.

A predictor is a loaded model of one kind (see :mod:`blastoseg.kinds`) ready to run on
images. All of them, whatever their kind, follow :class:`Predictor`:

* ``predict(image, progress=None, cancel=None, **kind_options)``: a 2D frame (grey or grey
  RGB) gives one result, a (T, Y, X) stack a list (one per frame, each with
  ``meta["frame"]``); ``progress(done, total)`` is called as work advances and ``cancel()``
  returning True stops the run between steps (:class:`~blastoseg.progress.Cancelled`).
* ``iter_predict(frames, on_result=None, **kind_options)``: a generator for GUI workers and
  long stacks over a sequence of frames (a (T, H, W[, C]) array or a list of 2D frames):
  yields ``(done, total)``; each frame's result goes to ``on_result(index, result)`` as soon
  as it is ready and is not kept (the generator then returns ``[]``), or, without
  ``on_result``, the results are returned at the end, one per frame. Bad kind options raise
  when ``iter_predict`` is called, before any frame is run.

What ``done``/``total`` count is the kind's unit of work (frames for amodal, network windows
for overlap and brightfield); ``done`` reaches ``total`` at the end.

:class:`PredictorBase` holds what the kinds share: the model entry, the typed card
(:mod:`blastoseg.predict.cards`), the device and the model in eval mode, loaded strictly, and
the streaming of results. A kind implements :meth:`PredictorBase.build_model` and
:meth:`PredictorBase.run_frames`. :func:`inference_context` is the one place that turns on
inference mode (and autocast on CUDA). :func:`load_predictor` resolves a name, file or job
folder, picks the predictor class from the card's kind and keeps the last few loaded
predictors, so code that calls it in a loop loads the weights once.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.kinds import get_kind
from blastoseg.predict.device import describe_device, resolve_device
from blastoseg.progress import run_with_progress
from blastoseg.weights import ModelEntry, load_into_model, resolve_model

__all__ = ["Predictor", "check_model_loads", "PredictorBase", "StreamingPredictor",
           "clear_predictor_cache", "inference_context", "load_predictor"]

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
OnResult = Callable[[int, Any], None]
#: what :meth:`PredictorBase.run_frames` yields: (done, total, [(frame index, result), ...])
Step = tuple[int, int, list[tuple[int, Any]]]


@runtime_checkable
class Predictor(Protocol):
    """The contract every predictor kind follows (see the module docstring)."""

    kind: str
    entry: ModelEntry
    device: torch.device
    device_name: str

    def iter_predict(self, frames: Sequence, on_result: OnResult | None = None,
                     **kind_options: Any) -> Generator[tuple[int, int], None, list]: ...

    def predict(self, image, progress: Progress | None = None, cancel: Cancel | None = None,
                **kind_options: Any) -> Any: ...


@contextmanager
def inference_context(device: torch.device):
    """No autograd, and float16 autocast on CUDA (CPU and MPS run in float32)."""
    amp = (torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda"
           else nullcontext())
    with torch.inference_mode(), amp:
        yield


def _frame_sequence(frames: Sequence) -> Sequence:
    """``frames`` as given, refusing a lone 2D array (iterating it would give image rows)."""
    if isinstance(frames, np.ndarray) and frames.ndim < 3:
        raise InvalidImageError(
            f"iter_predict takes a sequence of frames, got one array of shape {frames.shape}; "
            "pass [frame] (or image[None]), or call predict(image)")
    if not hasattr(frames, "__len__") or not hasattr(frames, "__getitem__"):
        raise BlastosegError(f"iter_predict takes a sequence of frames (a (T, H, W) array or "
                             f"a list), got {type(frames).__name__}")
    return frames


def _deliver(steps: Iterator[Step], on_result: OnResult | None
             ) -> Generator[tuple[int, int], None, list]:
    """Stream (``on_result``) or collect the results of a kind's steps; yield the progress."""
    results: list = []
    for done, total, finished in steps:
        for index, result in finished:
            if on_result is None:
                results.append(result)
            else:
                on_result(index, result)
        yield done, total
    return results


class StreamingPredictor:
    """``iter_predict`` and ``predict`` of the contract over :meth:`run_frames` (the kind's
    work): shared by the predictors of one model (:class:`PredictorBase`) and the ones that
    run several (:class:`~blastoseg.predict.fused_counter.FusedCounter`)."""

    def run_frames(self, frames: Sequence, **kind_options: Any) -> Iterator[Step]:
        """The kind's work on a sequence of frames: an iterator of ``(done, total,
        finished)`` with ``finished`` the ``(index, result)`` pairs completed in that step.
        Check ``kind_options`` before returning it (they must fail before any frame runs)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def iter_predict(self, frames: Sequence, on_result: OnResult | None = None,
                     **kind_options: Any) -> Generator[tuple[int, int], None, list]:
        """Run the frames, yielding ``(done, total)``; returns one result per frame, or ``[]``
        when each result went to ``on_result(index, result)`` as soon as it was ready."""
        steps = self.run_frames(_frame_sequence(frames), **kind_options)
        return _deliver(steps, on_result)

    def predict(self, image, progress: Progress | None = None, cancel: Cancel | None = None,
                **kind_options: Any):
        """A 2D frame -> one result; a (T, Y, X) stack -> a list, one per frame (its
        ``meta["frame"]`` is the frame's index).

        ``kind_options`` are the kind's own (e.g. the amodal ``embryo=``); they go to
        :meth:`iter_predict`. ``cancel()`` returning True stops between steps
        (:class:`blastoseg.progress.Cancelled`).

        Raises
        ------
        InvalidImageError
            An image that is not a frame or a stack of frames (see
            :func:`blastoseg.io.frames.as_frames`).
        """
        from blastoseg.io.frames import as_frames

        frames, stack = as_frames(image)
        results = run_with_progress(self.iter_predict(frames, **kind_options), progress, cancel)
        if not stack:
            return results[0]
        for t, result in enumerate(results):
            result.meta["frame"] = t
        return results


class PredictorBase(StreamingPredictor):
    """The part every predictor shares: resolve the model, read its card once, load it, run
    the contract.

    Subclasses set :attr:`kind` and implement :meth:`build_model` (the network for
    :attr:`card`) and :meth:`run_frames`; ``iter_predict`` and ``predict`` come from here.

    Parameters
    ----------
    model
        Registered model name (see ``blastoseg models``), a ``.safetensors`` path with its
        ``.json`` card beside it, or a training job folder (its finished model); None: the
        kind's shipped default model.
    device
        "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    """

    kind: ClassVar[str] = ""

    def __init__(self, model: str | None = None, device: str | torch.device = "auto") -> None:
        spec = get_kind(self.kind)
        self.entry: ModelEntry = resolve_model(
            spec.default_model if model is None else model, kind=self.kind)
        #: the model card's config, read once into the kind's typed dataclass
        self.card = spec.card_class().from_card(self.entry.card)
        self.device = resolve_device(device)
        self.device_name = describe_device(self.device)
        net = self.build_model()
        load_into_model(net, self.entry.weights_path, card=self.entry.card.to_dict(),
                        expected_kind=self.kind)
        self.model = net.to(self.device).eval()

    def build_model(self) -> torch.nn.Module:  # pragma: no cover - abstract
        """The kind's network for :attr:`card` (weights are loaded into it afterwards)."""
        raise NotImplementedError

    def inference(self):
        """``with self.inference(): ...`` around every forward pass."""
        return inference_context(self.device)


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


def load_predictor(name_or_path: str | Path | None, device: str = "auto", *,
                   kind: str | None = None, **options: Any):
    """A loaded predictor for a model name, ``.safetensors`` file or training job folder
    (None: the shipped default model of ``kind``).

    The predictor class comes from the card's kind (:mod:`blastoseg.kinds`); ``kind=``
    insists on one (a clear error otherwise); ``options`` go to the predictor's constructor
    (e.g. ``score_threshold``, ``batch_size``). The last :data:`CACHE_SIZE` predictors are
    kept by model, device, options and the weights and card files (path, modification time,
    size), so a model retrained or re-calibrated under the same name is loaded afresh. The
    returned predictor is shared: do not change its attributes (``copy.copy`` it and change
    the copy; the copy shares the loaded network).
    """
    if name_or_path is None:
        if kind is None:
            raise BlastosegError("load_predictor needs a model name or path, or a kind")
        name_or_path = get_kind(kind).default_model
        if name_or_path is None:
            raise BlastosegError(f"{kind!r} models have no shipped default; name one")
    entry = resolve_model(name_or_path, kind=kind)
    cls = get_kind(entry.kind).predictor_class()
    key = (entry.kind, str(name_or_path), str(device), _options_key(cls, options),
           _file_stamp(entry.weights_path), _file_stamp(entry.card_path))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    predictor = cls(str(name_or_path), device=device, **options)
    with _cache_lock:
        # drop older versions of the same model (its files changed) and the least recent
        for old in [k for k in _cache if k[:4] == key[:4]]:
            del _cache[old]
        _cache[key] = predictor
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return predictor


def _options_key(cls, options: dict) -> tuple:
    """The options that make a predictor differ, for the cache key: an option given at its
    constructor's default value (``flips=False``, ``count_stacked=None``) is left out, so a
    caller that names it and one that does not share one loaded predictor."""
    defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    kept = {k: v for k, v in options.items() if not (k in defaults and _same(v, defaults[k]))}
    return tuple(sorted((k, repr(v)) for k, v in kept.items()))


def _same(a: Any, b: Any) -> bool:
    try:
        return a is b or bool(a == b)
    except (TypeError, ValueError):  # e.g. an array: compare nothing, keep the option
        return False


def clear_predictor_cache() -> None:
    """Forget every predictor :func:`load_predictor` kept."""
    with _cache_lock:
        _cache.clear()


def check_model_loads(name_or_path: str | Path) -> str:
    """Build the network a model card describes and load its weights into it strictly, on
    the CPU: what ``blastoseg models verify`` and ``models import`` check beyond the sha256.
    Catches a card with a wrong architecture, another kind's weights and a card whose kind
    does not match the tensors, before a user's segmentation fails on them.

    Returns a one-line description; raises :class:`~blastoseg.errors.BlastosegError`
    (:class:`~blastoseg.weights.WeightsError`, ``UnknownKindError``, ...) naming the problem.
    """
    from blastoseg.weights import load_into_model

    entry = resolve_model(name_or_path)
    kind = get_kind(entry.kind)
    try:
        if kind.predictor is not None:
            kind.predictor_class()(str(entry.weights_path), device="cpu")
        else:
            from blastoseg.train.task import get_task

            net = get_task(kind.name).build_model(dict(entry.card.config or {}))
            load_into_model(net, entry.weights_path, card=entry.card.to_dict(),
                            expected_kind=kind.name)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        from blastoseg.weights import WeightsError

        raise WeightsError(f"{entry.name}: its card does not describe a model these weights "
                           f"fit ({type(exc).__name__}: {exc})") from None
    return (f"{entry.name} ({kind.name}): its weights load into the network its card "
            "describes")
