"""Test helpers: moving reference data in and out of every backend."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of any backend's array (tests only; the library never does this)."""
    module = type(x).__module__
    if module.startswith("torch"):
        import torch

        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.detach().cpu().numpy()
    if module.startswith("cupy"):
        return x.get()
    if module.startswith("array_api_strict"):
        import array_api_strict as xps

        if x.dtype == xps.bool:
            return np.from_dlpack(xps.astype(x, xps.uint8)).astype(bool)
        return np.asarray(np.from_dlpack(x)).copy()
    return np.asarray(x)


def from_numpy(backend: tuple[Any, Any], a: Any, dtype: Any = None) -> Any:
    """``a`` (NumPy data) as an array of ``backend`` on its device, in ``dtype`` of that library.

    ``dtype`` may be a name such as ``"float32"`` or a dtype of the backend.
    """
    xp, device = backend
    if isinstance(dtype, str):
        dtype = getattr(xp, dtype)
    a = np.asarray(a)
    if dtype is None and a.dtype == np.float64:
        dtype = xp.float64
    if "torch" in xp.__name__:
        import torch

        t = torch.from_numpy(np.ascontiguousarray(a).reshape(a.shape)).to(device)
        return t if dtype is None else t.to(dtype)
    if "array_api_strict" in xp.__name__:
        return xp.asarray(a.tolist() if a.ndim == 0 else a, dtype=dtype, device=device)
    if xp.__name__.startswith("jax"):
        import jax

        return jax.device_put(xp.asarray(a, dtype=dtype), device)
    return xp.asarray(a, dtype=dtype, device=device) if dtype is not None else xp.asarray(a)


def library_of(backend: tuple[Any, Any]) -> str:
    """Short library name for a backend: numpy, array_api_strict, torch, jax or cupy."""
    name = backend[0].__name__
    for lib in ("array_api_strict", "torch", "jax", "cupy", "numpy"):
        if lib in name:
            return lib
    return name
