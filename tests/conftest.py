"""Shared fixtures: the ``backend`` matrix over every installed array library.

``backend`` yields ``(xp, device)``: an array-API namespace and the device to put test inputs
on.  A library that is not installed (or a GPU that is not present) is a visible skip with its
reason, never a silent pass.  JAX runs with float64 enabled.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("JAX_ENABLE_X64", "1")


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda_available() -> bool:
    if not _have("cupy"):
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _make_backend(name: str):
    if name == "numpy":
        if not _have("numpy"):
            pytest.skip("numpy is not installed")
        import array_api_compat.numpy as xp

        return xp, "cpu"
    if name == "array_api_strict":
        if not _have("array_api_strict"):
            pytest.skip("array-api-strict is not installed")
        import array_api_strict as xp

        return xp, xp.Device("CPU_DEVICE")
    if name in ("torch", "torch-cuda"):
        if not _have("torch"):
            pytest.skip("torch is not installed")
        import array_api_compat.torch as xp
        import torch

        if name == "torch-cuda":
            if not torch.cuda.is_available():
                pytest.skip("no CUDA device for torch")
            return xp, torch.device("cuda")
        return xp, torch.device("cpu")
    if name in ("jax", "jax-gpu"):
        if not _have("jax"):
            pytest.skip("jax is not installed")
        import jax
        import jax.numpy as xp

        jax.config.update("jax_enable_x64", True)
        if name == "jax-gpu":
            try:
                return xp, jax.devices("gpu")[0]
            except RuntimeError:
                pytest.skip("no GPU device for jax")
        return xp, jax.devices("cpu")[0]
    if name == "cupy":
        if not _cuda_available():
            pytest.skip("cupy is not installed or no CUDA device is present")
        import array_api_compat.cupy as xp
        import cupy

        return xp, cupy.cuda.Device(0)
    raise ValueError(name)


BACKENDS = ["numpy", "array_api_strict", "torch", "jax", "cupy", "torch-cuda", "jax-gpu"]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request):
    """``(xp, device)`` for every installed array library (and GPU devices when present)."""
    return _make_backend(request.param)


@pytest.fixture(scope="session", params=["numpy", "array_api_strict", "torch", "jax"])
def cpu_backend(request):
    """The CPU backends alone, for tests that inspect values on the host by design."""
    return _make_backend(request.param)
