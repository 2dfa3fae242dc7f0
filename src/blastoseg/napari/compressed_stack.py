"""A (T, H, W) (or (T, ...)) array that keeps each frame zlib-compressed, for label and map layers of long
time-lapses.

Why: result layers of a 500-frame 500 x 500 stack at 8 cells need 5-7 amodal Labels layers
plus the visible labels and the occlusion map; as plain arrays that is 7-9 times the image's
memory. Label frames are a few large uniform regions, so zlib (level 1) shrinks each by 50-200
times, and napari only ever reads the displayed frame: the whole result then costs a few
percent of the image (measured in docs/napari_layers.md).

napari 0.9 reads and paints Labels data through indexing only (``data[key]`` and
``data[key] = value`` with basic slices, integer tuples or tuples of index arrays; see
``napari.layers.Labels.data_setitem`` and its masked paint atoms), so this class supports
exactly NumPy's semantics for those keys; ``np.asarray(stack)`` materialises the whole stack
(use it for small stacks or exports only). A few decoded frames are cached, so scrubbing and
painting do not decompress the same frame again and again.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict

import numpy as np

__all__ = ["CompressedStack"]

_LEVEL = 1  # fastest: ~1 ms per 500 x 500 label frame, still 50-200x smaller
_CACHE_FRAMES = 4


class CompressedStack:
    """(T, H, W) array-like with zlib-compressed frames, readable and writable by index.

    Parameters
    ----------
    shape
        (T, H, W), or (T, 1, H, W) etc.: the first axis is the frame axis, each frame is
        stored and compressed on its own.
    dtype
        An integer or float dtype; frames start all zero.
    """

    def __init__(self, shape: tuple[int, int, int], dtype=np.uint8) -> None:
        if len(shape) < 2 or min(shape) < 1:
            raise ValueError(f"CompressedStack needs a (T, ...) shape, all sizes >= 1; got {shape}")
        self._shape = tuple(int(s) for s in shape)
        self._dtype = np.dtype(dtype)
        self._frames: list[bytes | None] = [None] * self._shape[0]  # None: all zero
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    @classmethod
    def from_array(cls, data: np.ndarray) -> CompressedStack:
        data = np.asarray(data)
        out = cls(data.shape, data.dtype)
        for t in range(data.shape[0]):
            out.set_frame(t, data[t])
        return out

    # --- array protocol --------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return int(np.prod(self._shape))

    @property
    def nbytes(self) -> int:
        """Bytes of the materialised array (what ``np.asarray`` would allocate)."""
        return self.size * self._dtype.itemsize

    @property
    def compressed_nbytes(self) -> int:
        """Bytes actually held: compressed frames plus the cache of decoded frames."""
        held = sum(len(b) for b in self._frames if b is not None)
        return held + sum(a.nbytes for a in self._cache.values())

    def __len__(self) -> int:
        return self._shape[0]

    def __repr__(self) -> str:
        return (f"CompressedStack(shape={self._shape}, dtype={self._dtype}, "
                f"{self.compressed_nbytes / 2**20:.1f} MiB held)")

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty(self._shape, dtype=self._dtype)
        for t in range(self._shape[0]):
            out[t] = self.frame(t)
        return out if dtype is None else out.astype(dtype, copy=False)

    def astype(self, dtype, copy: bool = True) -> np.ndarray:
        return np.asarray(self).astype(dtype, copy=copy)

    # --- frames ----------------------------------------------------------------------------
    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` decoded (a read-only view of the cached array: copy before changing)."""
        arr = self._decoded(t)
        view = arr.view()
        view.flags.writeable = False
        return view

    def set_frame(self, t: int, data: np.ndarray) -> None:
        t = self._frame_index(t)
        arr = np.asarray(data)
        if arr.shape != self._shape[1:]:
            raise ValueError(f"frame of shape {arr.shape} does not fit {self._shape[1:]}")
        arr = np.ascontiguousarray(arr, dtype=self._dtype)
        self._store(t, arr.copy())

    def promote(self, dtype) -> None:
        """Change the dtype in place (e.g. uint8 -> uint16 when a label value outgrows it)."""
        dtype = np.dtype(dtype)
        if dtype == self._dtype:
            return
        frames = [self._decoded(t).astype(dtype) if self._frames[t] is not None else None
                  for t in range(self._shape[0])]
        self._dtype = dtype
        self._cache.clear()
        for t, arr in enumerate(frames):
            if arr is not None:
                self._store(t, arr)

    def digest(self) -> str:
        """A digest of the content (shape, dtype and every compressed frame), computed without
        decoding: zlib gives the same bytes for the same frame, so equal stacks have equal
        digests (what :mod:`blastoseg.napari.result_edits` compares to find corrections)."""
        import hashlib

        h = hashlib.blake2b(f"{self._shape}{self._dtype}".encode(), digest_size=16)
        for blob in self._frames:
            h.update(b"0" if blob is None else len(blob).to_bytes(8, "little") + blob)
        return h.hexdigest()

    def _frame_index(self, t) -> int:
        t = int(t)
        n = self._shape[0]
        if not -n <= t < n:
            raise IndexError(f"frame index {t} out of range for {n} frames")
        return t % n

    def _decoded(self, t: int) -> np.ndarray:
        t = self._frame_index(t)
        arr = self._cache.get(t)
        if arr is not None:
            self._cache.move_to_end(t)
            return arr
        blob = self._frames[t]
        if blob is None:
            arr = np.zeros(self._shape[1:], dtype=self._dtype)
        else:
            arr = np.frombuffer(zlib.decompress(blob), dtype=self._dtype)
            arr = arr.reshape(self._shape[1:]).copy()
        self._remember(t, arr)
        return arr

    def _remember(self, t: int, arr: np.ndarray) -> None:
        self._cache[t] = arr
        self._cache.move_to_end(t)
        while len(self._cache) > _CACHE_FRAMES:
            self._cache.popitem(last=False)

    def _store(self, t: int, arr: np.ndarray) -> None:
        # an all-zero frame is stored as None: empty frames (and new layers) cost nothing
        self._frames[t] = zlib.compress(arr.tobytes(), _LEVEL) if arr.any() else None
        self._remember(t, arr)

    # --- indexing --------------------------------------------------------------------------
    def _split_key(self, key) -> tuple[object, tuple]:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - (len(key) - 1))
            key = key[:i] + fill + key[i + 1:]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-dimensional stack: {len(key)}")
        return key[0], tuple(key[1:])

    @staticmethod
    def _is_fancy(k) -> bool:
        return isinstance(k, (np.ndarray, list)) and not isinstance(k, (str, bytes))

    def __getitem__(self, key):
        first, rest = self._split_key(key)
        if self._is_fancy(first) or any(self._is_fancy(k) for k in rest):
            return self._get_fancy(first, rest)
        if isinstance(first, (int, np.integer)):
            return self._decoded(first)[rest].copy() if rest else self._decoded(first).copy()
        ts = range(*first.indices(self._shape[0])) if isinstance(first, slice) else None
        if ts is None:
            raise IndexError(f"unsupported index {key!r}")
        planes = [self._decoded(t)[rest] if rest else self._decoded(t) for t in ts]
        if planes:
            return np.stack(planes)
        probe = np.zeros(self._shape[1:], dtype=self._dtype)
        return np.zeros((0, *probe[rest].shape), dtype=self._dtype)

    def __setitem__(self, key, value) -> None:
        first, rest = self._split_key(key)
        if self._is_fancy(first) or any(self._is_fancy(k) for k in rest):
            self._set_fancy(first, rest, value)
            return
        if isinstance(first, (int, np.integer)):
            t = self._frame_index(first)
            arr = self._decoded(t).copy()
            arr[rest if rest else ...] = value
            self._store(t, arr)
            return
        if not isinstance(first, slice):
            raise IndexError(f"unsupported index {key!r}")
        ts = list(range(*first.indices(self._shape[0])))
        inner = rest if rest else (Ellipsis,)
        region = np.zeros(self._shape[1:], dtype=bool)[inner].shape
        value = np.broadcast_to(np.asarray(value), (len(ts), *region))
        for i, t in enumerate(ts):
            arr = self._decoded(t).copy()
            arr[inner] = value[i]
            self._store(t, arr)

    def _fancy_frames(self, first, rest) -> tuple[np.ndarray, tuple]:
        """Frame index per element, and the in-frame index arrays (broadcast together)."""
        if (not self._is_fancy(first) or any(not self._is_fancy(k) for k in rest)
                or len(rest) != self.ndim - 1):
            raise IndexError("fancy indexing of a CompressedStack needs one index array per axis")
        t, *inner = np.broadcast_arrays(np.asarray(first), *(np.asarray(k) for k in rest))
        t = np.where(t < 0, t + self._shape[0], t)
        return t, tuple(inner)

    def _get_fancy(self, first, rest) -> np.ndarray:
        t, inner = self._fancy_frames(first, rest)
        out = np.zeros(t.shape, dtype=self._dtype)
        for frame in np.unique(t):
            sel = t == frame
            out[sel] = self._decoded(int(frame))[tuple(k[sel] for k in inner)]
        return out

    def _set_fancy(self, first, rest, value) -> None:
        t, inner = self._fancy_frames(first, rest)
        value = np.broadcast_to(np.asarray(value, dtype=self._dtype), t.shape)
        for frame in np.unique(t):
            sel = t == frame
            arr = self._decoded(int(frame)).copy()
            arr[tuple(k[sel] for k in inner)] = value[sel]
            self._store(int(frame), arr)
