"""Device choice: ``auto`` picks CUDA, then MPS (Apple GPU), then CPU, and says which.

Everything else in blastoseg is device-agnostic: it calls :func:`resolve_device` once and
moves modules and tensors with ``.to(device)``.
"""

from __future__ import annotations

import re

import torch

from blastoseg.errors import BlastosegError

__all__ = ["DeviceUnavailableError", "available_devices", "describe_device", "resolve_device"]

_DEVICE_RE = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


class DeviceUnavailableError(BlastosegError):
    """The requested compute device does not exist on this machine or is not a device name."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Names of the devices usable here, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn a device name into a usable :class:`torch.device`.

    Parameters
    ----------
    name
        ``"auto"`` (or None): CUDA if available, else MPS, else CPU. Or an explicit
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a :class:`torch.device`.

    Returns
    -------
    torch.device

    Raises
    ------
    DeviceUnavailableError
        The name is not a device name, or the device is not available on this machine.
    """
    if name is None:
        name = "auto"
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise DeviceUnavailableError(
            f"device must be a string such as 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps', "
            f"got {name!r}"
        )
    key = name.strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    match = _DEVICE_RE.match(key)
    if match is None:
        raise DeviceUnavailableError(
            f"unknown device {name!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' "
            f"(available here: {', '.join(available_devices())})"
        )
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise DeviceUnavailableError(
                "device 'mps' (Apple GPU) is not available on this machine; "
                f"use 'auto' or one of: {', '.join(available_devices())}"
            )
        return torch.device("mps")
    # cuda
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device {name!r} requested but no CUDA GPU is available on this machine "
            "(torch.cuda.is_available() is False: no NVIDIA GPU, no driver, or a CPU-only "
            f"torch build); use 'auto' or one of: {', '.join(available_devices())}"
        )
    count = torch.cuda.device_count()
    idx = torch.cuda.current_device() if index is None else int(index)
    if idx >= count:
        raise DeviceUnavailableError(
            f"device {name!r} requested but this machine has {count} CUDA GPU(s) "
            f"(cuda:0 .. cuda:{count - 1})"
        )
    return torch.device("cuda", idx)


def describe_device(device: str | torch.device) -> str:
    """A short human-readable description, e.g. ``"CPU (2 threads)"``, ``"CUDA: NVIDIA H100"``."""
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if device.type == "cpu":
        return f"CPU ({torch.get_num_threads()} threads)"
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        try:
            props = torch.cuda.get_device_properties(idx)
            gib = props.total_memory / 2**30
            return f"CUDA: {props.name} (cuda:{idx}, {gib:.0f} GiB)"
        except Exception:  # pragma: no cover - description only
            return f"CUDA (cuda:{idx})"
    if device.type == "mps":
        return "MPS: Apple GPU"
    return str(device)
