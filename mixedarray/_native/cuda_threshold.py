r"""Sparsemax and 1.5-entmax of CUDA arrays (torch, CuPy) by the Numba kernels of
:mod:`mixedarray._native.cuda_kernels`: each row read once from global memory, written once.

The maps are those of :mod:`mixedarray._native.cpu_threshold`, :math:`y = [x - \tau]_+^{p}`
(sparsemax: x = z, p = 1; 1.5-entmax: x = z/2, p = 2), τ by Newton's method from
:math:`\max x - 1` with float64 sums, ties with τ snapped to exactly 0 as the reference
(``projections._positive_part``) does, so the support agrees with it exactly.  Launch shapes:

* K ≤ 32: one thread per row (128 rows per block);
* 32 < K ≤ 1024: one block of 128 threads per row, the row held in shared memory;
* K > 1024: one block of 256 threads per row, the row in shared memory up to 4096 entries
  (float32; 2048 for float64), beyond that its candidates (entries within 1 of the running
  maximum) — see the kernel module for the memory traffic of each case.

Float64 accumulation, not float32 with Kahan summation: the sums are a handful per Newton step
per thread, so float64 costs nothing measurable in a memory-bound kernel, and it is what the
CPU kernel and the tests' tolerance (1e-6 on float32 outputs) assume.

Taken by the public functions (``sparsemax``, ``entmax15``) for CuPy arrays (rules registered
the first time a CuPy array arrives), for eager torch CUDA tensors (``mixedarray.torch``) and
for eager JAX arrays on a CUDA GPU (``mixedarray.jax``, which hands :func:`project` CuPy views
of them through DLPack), whenever :func:`available`; otherwise the reference runs, silently.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from mixedarray._native import cuda_interop, fast_paths_enabled
from mixedarray._native.cuda_interop import available

__all__ = ["available", "launch_rows", "launch_vjp", "project", "register_cupy_rules", "vjp"]

Array = Any

SMALL_K = 32  # rows up to this width: one thread per row
_THREADS_PER_ROW_BLOCK = 128


def _shape_class(dtype: str, width: int) -> tuple[int, int]:
    """``(capacity, threads)`` of the block kernel for rows of ``width`` entries."""
    if width <= 1024:
        return 1024, 128
    return (4096 if dtype == "float32" else 2048), 256


def launch_rows(
    name: str,
    x: Any,
    out: Any,
    *,
    stream: Any = 0,
    device: int = 0,
    capacity: int | None = None,
    threads: int | None = None,
    small_k: int = SMALL_K,
) -> None:
    """Launch ``name`` ("sparsemax" or "entmax15") on the rows of ``x`` (R, K) into ``out``.

    ``x`` and ``out`` are C-contiguous float32/float64 arrays Numba accepts (device arrays; host
    NumPy arrays in the simulator).  ``capacity``/``threads`` override the block kernel's shared
    buffer and block size (tests use small ones to reach every path); ``small_k`` is the widest
    row solved by one thread.
    """
    from mixedarray._native import cuda_kernels

    rows, width = x.shape
    if rows == 0:
        return
    dtype = str(x.dtype)
    tol = 4 * _eps(dtype)  # gaps within rounding of 0 are ties: exact zeros
    if width <= small_k:
        kernel = getattr(cuda_kernels, f"{name}_thread")
        block = _THREADS_PER_ROW_BLOCK
        grid = (rows + block - 1) // block
    else:
        default_capacity, default_threads = _shape_class(dtype, width)
        block = threads or default_threads
        kernels = cuda_kernels.block_kernels(dtype, capacity or default_capacity, block)
        kernel = kernels[0 if name == "sparsemax" else 1]
        grid = rows
    cuda_interop.launch(kernel, grid, block, stream, x, out, tol, device=device)


def launch_vjp(
    name: str, y: Any, g: Any, out: Any, *, stream: Any = 0, device: int = 0, threads: int = 0
) -> None:
    """Launch the VJP of ``name`` at the outputs ``y`` (R, K) for cotangents ``g`` into ``out``."""
    from mixedarray._native import cuda_kernels

    rows, width = y.shape
    if rows == 0:
        return
    block = threads or (32 if width <= 64 else 128 if width <= 1024 else 256)
    kernel = cuda_kernels.vjp_kernels(block)[0 if name == "sparsemax" else 1]
    cuda_interop.launch(kernel, rows, block, stream, y, g, out, device=device)


@functools.cache
def _eps(dtype: str) -> float:
    return 2.0**-23 if dtype == "float32" else 2.0**-52


# ---------------------------------------------------------------------------------------------
# The caller's arrays


def _rows(x: Array) -> tuple[Array, tuple[int, ...]]:
    """``x`` as a C-contiguous (R, K) array of its own library (a view when it already is)."""
    shape = tuple(x.shape)
    width = shape[-1]
    rows = math.prod(shape[:-1])
    if type(x).__module__.startswith("torch"):
        return x.detach().reshape(rows, width).contiguous(), shape
    import cupy

    return cupy.ascontiguousarray(x.reshape(rows, width)), shape


def _empty_like(x: Array) -> Array:
    if type(x).__module__.startswith("torch"):
        import torch

        return torch.empty_like(x, memory_format=torch.contiguous_format)
    import cupy

    return cupy.empty_like(x, order="C")


def project(name: str, x: Array) -> Array:
    """``name`` of the torch CUDA tensor or CuPy array ``x`` along its last axis.

    (Eager JAX GPU arrays arrive here as CuPy views:
    :func:`mixedarray._native.cuda_interop.through_cupy`.)

    The result is a new array of ``x``'s library, dtype (float32/float64) and device, computed
    on the library's current stream of that device, without synchronising.
    """
    rows, shape = _rows(x)
    out = _empty_like(rows)
    launch_rows(
        name,
        cuda_interop.view(rows),
        cuda_interop.view(out),
        stream=cuda_interop.stream(rows),
        device=cuda_interop.device_index(rows),
    )
    return out.reshape(shape)


def vjp(name: str, y: Array, grad: Array) -> Array:
    """The closed-form VJP of ``name`` at the output ``y`` (same library, dtype, device)."""
    rows, shape = _rows(y)
    grads, _ = _rows(grad)
    out = _empty_like(rows)
    launch_vjp(
        name,
        cuda_interop.view(rows),
        cuda_interop.view(grads),
        cuda_interop.view(out),
        stream=cuda_interop.stream(rows),
        device=cuda_interop.device_index(rows),
    )
    return out.reshape(shape)


def register_cupy_rules() -> None:
    """Make the kernels the CuPy rules of ``sparsemax`` and ``entmax15`` (if a GPU is usable)."""
    if not available():
        return
    from mixedarray._backend import register_rule

    for name in ("sparsemax", "entmax15"):
        register_rule("cupy", name)(functools.partial(_cupy_rule, name))


def _cupy_rule(name: str, x: Array, alpha: object, n_iter: object) -> Array:
    if not fast_paths_enabled():  # inside mixedarray._native.reference_only()
        from mixedarray import _backend, projections

        return projections.reference(name, _backend.array_namespace(x), x, alpha, n_iter)
    return project(name, x)
