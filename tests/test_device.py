"""Device choice: auto -> CUDA, MPS, CPU; clear errors for unavailable devices."""

from __future__ import annotations

import pytest
import torch

from blastoseg.errors import BlastosegError
from blastoseg.predict import device as device_module
from blastoseg.predict.device import DeviceUnavailableError, describe_device, resolve_device


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)


def test_auto_is_cpu_without_gpu(no_gpu):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_prefers_cuda_then_mps():
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if device_module._mps_available() else "cpu")
    assert resolve_device("auto").type == expected


def test_unavailable_devices_are_clear(no_gpu):
    with pytest.raises(DeviceUnavailableError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    with pytest.raises(DeviceUnavailableError, match="cuda:1"):
        resolve_device("cuda:1")
    with pytest.raises(DeviceUnavailableError, match="'mps'.*not available"):
        resolve_device("mps")
    with pytest.raises(DeviceUnavailableError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    assert issubclass(DeviceUnavailableError, BlastosegError)


def test_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceUnavailableError, match="has 1 CUDA GPU"):
        resolve_device("cuda:3")


def test_describe_cpu():
    text = describe_device(torch.device("cpu"))
    assert text.startswith("CPU (") and "threads" in text
    assert describe_device("cpu") == text
