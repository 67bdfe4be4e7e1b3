"""Handing CUDA arrays of PyTorch and CuPy to the Numba kernels, without copies.

Numba reads any object with ``__cuda_array_interface__`` (CuPy arrays, torch CUDA tensors) as a
device array view of the same memory, and launches on the caller's stream through
``numba.cuda.external_stream`` (torch: ``torch.cuda.current_stream(device)``, CuPy:
``cupy.cuda.get_current_stream()``), so a kernel is ordered after the work that produced its
inputs and before whatever the caller does next, with no synchronisation.  Outputs are
allocated by the caller's library, so results are its arrays on its device.

``numba.cuda`` is imported only here and only when a CUDA array arrives (:func:`available`);
without a usable GPU (no driver, or Numba without its CUDA target) every fast path is skipped
and the public functions use the standard-API reference.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import warnings
from typing import Any

Array = Any


@functools.cache
def available() -> bool:
    """Whether Numba's CUDA target can launch kernels here (a real GPU, or the simulator)."""
    if importlib.util.find_spec("numba") is None:
        return False
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # a broken CUDA installation is "no fast path", not an error
        return False


def torch_tensor_ok(t: Any) -> bool:
    """Whether a torch tensor may go to a kernel: a plain CUDA tensor, eager, float32/64."""
    import torch

    if t.device.type != "cuda" or t.dtype not in (torch.float32, torch.float64):
        return False
    if type(t) is not torch.Tensor or torch.compiler.is_compiling():
        return False
    functorch = getattr(torch._C, "_functorch", None)
    return functorch is None or not functorch.is_functorch_wrapped_tensor(t)


def view(x: Array) -> Any:
    """A Numba device array sharing ``x``'s memory (torch: detached; NumPy passes through)."""
    from numba import cuda

    if type(x).__module__.startswith("torch"):
        x = x.detach()
    if not hasattr(x, "__cuda_array_interface__"):
        return x  # host arrays, for the simulator
    return cuda.as_cuda_array(x, sync=False)  # ordered by launching on the same stream


def stream(x: Array) -> Any:
    """The Numba stream the caller's library is using for ``x``'s device (0: the default)."""
    module = type(x).__module__
    if module.startswith("torch"):
        import torch

        return _external(torch.cuda.current_stream(x.device).cuda_stream)
    if module.startswith("cupy"):
        import cupy

        with x.device:
            return _external(cupy.cuda.get_current_stream().ptr)
    return 0


def _external(pointer: int) -> Any:
    from numba import cuda

    return cuda.default_stream() if pointer == 0 else _wrapped(pointer)


@functools.lru_cache(maxsize=64)
def _wrapped(pointer: int) -> Any:
    from numba import cuda

    return cuda.external_stream(pointer)


def device_index(x: Array) -> int:
    """The CUDA device ordinal of ``x``."""
    module = type(x).__module__
    if module.startswith("torch"):
        import torch

        return x.device.index if x.device.index is not None else torch.cuda.current_device()
    return int(x.device.id)


def launch(kernel: Any, grid: Any, block: int, on: Any, *args: Any, device: int = 0) -> None:
    """``kernel[grid, block, on](*args)`` with CUDA device ``device`` current.

    Numba warns about grids under 128 blocks (small inputs); that is expected here, so the
    warning is silenced for such launches only.
    """
    from numba import cuda

    blocks = grid if isinstance(grid, int) else grid[0] * grid[1]
    switch = hasattr(cuda, "get_current_device") and cuda.get_current_device().id != device
    with cuda.gpus[device] if switch else contextlib.nullcontext():
        if blocks >= 128:
            kernel[grid, block, on](*args)
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Grid size")
            kernel[grid, block, on](*args)


@functools.cache
def multiprocessors() -> int:
    """Streaming multiprocessors of the current device (16 where it cannot be asked)."""
    from numba import cuda

    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:
        return 16
