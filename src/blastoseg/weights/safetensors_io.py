"""Reading and writing weights as ``.safetensors`` (never pickle), with clear errors.

A wrong or damaged file (not safetensors, truncated, a pickle, keys or shapes that do not
match the model) raises :class:`WeightsError` naming the file and what is wrong. torch is
imported lazily so that listing models stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blastoseg.errors import BlastosegError
from blastoseg.io.atomic import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = [
    "WeightsError",
    "check_state_dict",
    "load_into_model",
    "load_weights",
    "read_metadata",
    "save_weights",
    "sha256_file",
]

_MAX_HEADER = 100_000_000  # the safetensors library's own limit


class WeightsError(BlastosegError):
    """A weights file or model card is missing, damaged, or does not fit the model."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _metadata_to_str(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """safetensors metadata is str -> str: JSON-encode anything that is not a string."""
    out: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        out[str(key)] = value if isinstance(value, str) else json.dumps(value)
    return out


def save_weights(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
    *,
    fp16: bool = False,
) -> Path:
    """Write a state dict to a ``.safetensors`` file atomically.

    Parameters
    ----------
    state_dict
        Name -> tensor (e.g. ``model.state_dict()``). Tensors are moved to the CPU and made
        contiguous; tensors sharing memory are stored as separate copies.
    path
        Destination ``.safetensors`` file.
    metadata
        Small str-keyed metadata stored in the file header (non-string values are JSON).
    fp16
        Store floating-point tensors of 32/64 bits as float16 (halves the file; used to keep
        bundled weights < 25 MB). :func:`load_into_model` casts them back to the model's dtype.

    Returns
    -------
    Path
        The written file.
    """
    import torch
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"cannot save weights to {path}: entry {key!r} is a {type(value).__name__}, "
                "not a tensor"
            )
        t = value.detach().to("cpu")
        if fp16 and t.dtype in (torch.float32, torch.float64):
            t = t.to(torch.float16)
        tensors[str(key)] = t.contiguous().clone()
    meta = _metadata_to_str(metadata)
    if fp16:
        meta.setdefault("blastoseg_storage_dtype", "float16")
    return atomic_write_bytes(path, _canonical(save(tensors, metadata=meta)))


def _canonical(blob: bytes) -> bytes:
    """Rewrite a safetensors header with sorted keys, so equal weights and metadata give
    byte-identical files (and equal sha256) in every process: the safetensors library writes
    the metadata in hash-map order, which varies between runs."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    ordered: dict[str, Any] = {}
    if "__metadata__" in header:
        ordered["__metadata__"] = dict(sorted(header.pop("__metadata__").items()))
    ordered.update(sorted(header.items()))
    text = json.dumps(ordered, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data section 8-byte aligned
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def _read_header(path: Path) -> dict:
    """Parse and sanity-check a safetensors header, raising WeightsError with the reason."""
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise WeightsError(
                f"{path} is not a safetensors weights file: it is only {size} bytes long"
            )
        (n,) = struct.unpack("<Q", head)
        # a pickle starts with 0x80 and a torch.save zip with "PK"; a real safetensors header
        # length may start with 0x80 too, so only call it a pickle when that length cannot fit
        if (head[:1] == b"\x80" or head[:2] == b"PK") and (n > size - 8 or n > _MAX_HEADER):
            raise WeightsError(
                f"{path} looks like a pickle / torch.save file, not safetensors; blastoseg "
                "never loads pickled weights. Convert it with "
                "blastoseg.weights.save_weights(torch.load(path, weights_only=True), new_path)"
            )
        if n == 0 or n > _MAX_HEADER or n > size - 8:
            raise WeightsError(
                f"{path} is not a valid safetensors file (header length {n} does not fit a "
                f"{size}-byte file): the file is damaged, truncated, or of another format"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(
            f"{path} is not a valid safetensors file: its header is not JSON ({exc})"
        ) from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path} is not a valid safetensors file: header is not an object")
    data_len = size - 8 - n
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise WeightsError(
                f"{path} is not a valid safetensors file: bad entry for tensor {key!r}"
            ) from None
    if end > data_len:
        raise WeightsError(
            f"{path} is truncated: its header describes {end} bytes of tensor data but only "
            f"{data_len} are present (an interrupted copy or download?)"
        )
    return header


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The str -> str metadata stored in a safetensors file's header."""
    return dict(_read_header(Path(path)).get("__metadata__") or {})


def load_weights(path: str | os.PathLike, *, device: str | torch.device = "cpu"
                 ) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file into a state dict.

    Raises
    ------
    WeightsError
        The file is missing, not safetensors (e.g. a pickle), or truncated/corrupt.
    """
    path = Path(path)
    _read_header(path)
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # SafetensorError and friends
        raise WeightsError(f"could not read weights file {path}: {exc}") from None


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str | os.PathLike = "",
    *, strict: bool = True,
) -> None:
    """Check that ``state_dict`` fits ``model`` (keys and shapes); raise a WeightsError if not.

    With ``strict=False`` missing and unexpected keys are allowed but shapes of shared keys
    must still match.
    """
    expected = model.state_dict()
    where = f" in {source}" if source else ""
    problems: list[str] = []
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
    if strict and unexpected:
        problems.append(
            f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})"
        )
    bad_shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if bad_shapes:
        problems.append(f"{len(bad_shapes)} shape mismatch(es) ({'; '.join(bad_shapes[:3])})")
    if problems:
        raise WeightsError(
            f"the weights{where} do not fit the {type(model).__name__} model: "
            + "; ".join(problems)
            + ". Are these weights for another model kind or configuration?"
        )


def load_into_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    card: Mapping[str, Any] | None = None,
    expected_kind: str | None = None,
    strict: bool = True,
) -> nn.Module:
    """Load a ``.safetensors`` file into ``model`` after checking kind, keys and shapes.

    Parameters
    ----------
    model
        The module to fill (its parameters keep their device and dtype).
    path
        The weights file.
    card
        Its model card (dict); when given with ``expected_kind``, the card's ``kind`` must match.
    expected_kind
        The model kind the caller needs (e.g. ``"amodal"``).
    strict
        Require exactly the model's keys.
    """
    if expected_kind is not None and card is not None:
        kind = card.get("kind")
        if kind != expected_kind:
            raise WeightsError(
                f"{path} holds a {kind!r} model but a {expected_kind!r} model is needed"
            )
    state = load_weights(path)
    check_state_dict(model, state, path, strict=strict)
    reference = model.state_dict()
    state = {
        k: (v.to(reference[k].dtype) if k in reference and v.is_floating_point() else v)
        for k, v in state.items()
    }
    model.load_state_dict(state, strict=strict)
    return model
