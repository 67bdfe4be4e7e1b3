"""Handing CUDA arrays of PyTorch, CuPy and JAX to the Numba kernels, without copies.

Numba reads any object with ``__cuda_array_interface__`` (CuPy arrays, torch CUDA tensors) as a
device array view of the same memory, and launches on the caller's stream through
``numba.cuda.external_stream`` (torch: ``torch.cuda.current_stream(device)``, CuPy:
``cupy.cuda.get_current_stream()``), so a kernel is ordered after the work that produced its
inputs and before whatever the caller does next, with no synchronisation.  Outputs are
allocated by the caller's library, so results are its arrays on its device.

``numba.cuda`` is imported only here and only when a CUDA array arrives (:func:`available`);
without a usable GPU (no driver, or Numba without its CUDA target) every fast path is skipped
and the public functions use the standard-API reference.

Eager JAX arrays on a CUDA GPU take the CuPy route through DLPack (:func:`jax_array_ok`,
:func:`to_cupy`, :func:`to_jax`, :func:`through_cupy`): ``cupy.from_dlpack`` views the JAX
buffer and passes CuPy's current stream to ``jax.Array.__dlpack__``, which makes that stream
wait for the computation that produced the buffer (an event, no host synchronisation); the
kernels run on that stream into CuPy outputs, and ``jax.numpy.from_dlpack`` hands those back to
JAX, whose stream in turn waits for CuPy's.  Traced arrays (``jit``, ``vmap``, staged
``grad``) cannot be read at all and keep the standard-API reference.  CuPy is imported only
once an array is known to be a single-device JAX array on a CUDA GPU.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

from mixedarray import _backend

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
    """The CUDA device ordinal of ``x`` (0 for host arrays, as in the simulator)."""
    module = type(x).__module__
    if module.startswith("torch"):
        import torch

        return x.device.index if x.device.index is not None else torch.cuda.current_device()
    if module.startswith("cupy"):
        return int(x.device.id)
    return 0


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


def launch_draws(
    kernel: Any,
    parameters: tuple[Any, ...],
    seeds: Any,
    sizes: list[int],
    tol: float,
    out: Any,
    *,
    stream: Any,
    device: int,
    threads: int,
    blocks: int | None,
    progress: Any,
) -> None:
    """One launch per chunk of a drawing kernel: ``(*parameters, seeds, i, sizes[i], tol, out)``.

    The grid is ``(blocks, members)``: a row of blocks per batch member (``parameters[0]`` is
    ``(members, K)``), each thread drawing with stride; ``blocks`` defaults to enough to fill
    the device, and a chunk never gets more blocks than it has draws for.  ``progress``
    optionally wraps the chunk indices (e.g. ``tqdm``).
    """
    members = parameters[0].shape[0]
    if blocks is None:
        resident = multiprocessors() * (2048 // threads)
        blocks = max(1, math.ceil(resident / members))
    chunks = range(len(sizes)) if progress is None else progress(range(len(sizes)))
    for i in chunks:
        grid_x = max(1, min(blocks, math.ceil(sizes[i] / threads)))
        launch(
            kernel, (grid_x, members), threads, stream, *parameters, seeds, i, sizes[i], tol, out,
            device=device,
        )  # fmt: skip


def size_class(width: int) -> int:
    """Length of the per-thread arrays that hold a draw of ``width`` entries (a power of 2 ≥ 16)."""
    return max(16, 1 << (width - 1).bit_length())


def support_tolerance(dtype: str) -> float:
    """The support rule's gap tolerance, 4 eps of ``dtype`` (``projections._positive_part``)."""
    return 4 * (2.0**-23 if dtype == "float32" else 2.0**-52)


def contiguous(x: Array) -> Array:
    """``x`` C-contiguous (torch: detached; host arrays, as in the simulator, as they are)."""
    module = type(x).__module__
    if module.startswith("torch"):
        return x.detach().contiguous()
    if module.startswith("cupy"):
        import cupy

        return cupy.ascontiguousarray(x)
    return x


@functools.cache
def multiprocessors() -> int:
    """Streaming multiprocessors of the current device (16 where it cannot be asked)."""
    from numba import cuda

    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:
        return 16


# ---------------------------------------------------------------------------------------------
# Eager JAX arrays on a CUDA GPU: zero-copy through DLPack to CuPy and back.

_FLOATS = ("float32", "float64")
_KDLCUDA = 2  # DLPack's device type of CUDA device memory


def jax_array_ok(*arrays: Array) -> bool:
    """Whether the JAX arrays may go to the Numba kernels through DLPack and CuPy.

    True when every one of ``arrays`` is an eager (not traced) float32/float64 JAX array with
    at least one element, held in device memory of one CUDA GPU (the same for all), CuPy and
    Numba's CUDA target are usable (:func:`dlpack_available`), and the fast paths are not
    switched off (:func:`mixedarray._native.reference_only`).  Imports nothing unless the
    arrays are on a CUDA GPU, so CPU (and TPU) users load neither CuPy nor Numba.

    Parameters
    ----------
    *arrays : array
        The arrays a kernel would read.

    Returns
    -------
    bool
        Whether :func:`through_cupy` may take them.
    """
    from mixedarray._native import fast_paths_enabled

    if not arrays or "jax" not in sys.modules or not fast_paths_enabled():
        return False
    device = None
    for x in arrays:
        if _backend.library_name(x) != "jax" or _backend.is_traced(x):
            return False
        if str(x.dtype) not in _FLOATS or x.size == 0:
            return False
        here = _cuda_device(x)
        if here is None or (device is not None and here != device):
            return False
        device = here
    return dlpack_available()


def _cuda_device(x: Array) -> Any:
    """The one CUDA device whose memory holds the concrete JAX array ``x``, else ``None``.

    ``None`` for CPU and TPU arrays, ROCm GPUs (also platform ``"gpu"`` in JAX, but not
    DLPack's CUDA device type), arrays sharded over several devices, and host memory kinds
    (``pinned_host``) of a GPU.
    """
    devices = x.devices()
    if len(devices) != 1:
        return None
    (device,) = devices
    if device.platform not in ("gpu", "cuda"):
        return None
    if getattr(x.sharding, "memory_kind", None) not in (None, "device"):
        return None
    if int(x.__dlpack_device__()[0]) != _KDLCUDA:
        return None
    return device


@functools.cache
def dlpack_available() -> bool:
    """Whether the DLPack route can run here: CuPy sees a CUDA device and Numba can launch."""
    if importlib.util.find_spec("cupy") is None or not available():
        return False
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # a CuPy without a matching CUDA runtime is "no fast path", not an error
        return False


def to_cupy(x: Array) -> Any:
    """A CuPy array viewing the memory of the eager JAX GPU array ``x`` (no copy).

    ``cupy.from_dlpack`` asks ``x.__dlpack__`` with CuPy's current stream of ``x``'s device,
    and JAX makes that stream wait for the work that produced ``x``: kernels launched on it
    afterwards see ``x`` complete, and the host never waits.  The view is read-only by
    contract (JAX buffers are immutable): kernels write only to arrays CuPy allocates.
    """
    import cupy

    return cupy.from_dlpack(x)


def to_jax(y: Any) -> Array:
    """The CuPy array ``y`` as a JAX array on the same GPU (no copy when ``y`` is C-contiguous).

    ``jax.numpy.from_dlpack`` asks ``y.__dlpack__`` with JAX's stream, and CuPy makes it wait
    for CuPy's current stream (an event), so JAX's later work on the result, and on memory it
    frees, is ordered after the kernels that wrote ``y``.  Call it with ``y``'s device current
    (:func:`through_cupy` does), since CuPy records that event on the current device's stream.
    """
    import cupy
    import jax.numpy as jnp

    return jnp.from_dlpack(cupy.ascontiguousarray(y))


def through_cupy(fn: Callable[..., Any], *arrays: Array) -> Any:
    """``fn`` applied to CuPy views of the JAX GPU ``arrays``; its result(s) as JAX arrays.

    Everything runs with the arrays' device current and on CuPy's current stream there, without
    a host synchronisation.  The caller has checked :func:`jax_array_ok` first.

    Parameters
    ----------
    fn : callable
        Takes one CuPy array per JAX array, returns a CuPy array or a tuple of them (arrays CuPy
        allocated, never the input views).
    *arrays : array
        Eager JAX arrays on one CUDA GPU.

    Returns
    -------
    array or tuple of arrays
        JAX arrays on the same device, sharing the memory of ``fn``'s results.
    """
    views = [to_cupy(x) for x in arrays]
    device = getattr(views[0], "device", None)
    with device if hasattr(device, "__enter__") else contextlib.nullcontext():
        out = fn(*views)
        if isinstance(out, tuple):
            return tuple(to_jax(y) for y in out)
        return to_jax(out)
