r"""Sort-free exact sparsemax and 1.5-entmax on the CPU, compiled with Numba.

Both maps are :math:`y = [x - \tau]_+^{p}` (sparsemax: x = z, p = 1; 1.5-entmax: x = z/2, p = 2)
where τ is the root of the convex, decreasing :math:`f(\tau) = \sum_i [x_i - \tau]_+^p - 1`.
Each row is solved in place of a sort:

1. One pass finds the maximum and keeps the candidates :math:`x_i > \max x - 1` (no other
   entry can be in the support, since :math:`\tau \ge \max x - 1`) in a scratch buffer.
2. Newton's method on f from the lower bound :math:`\tau_0 = \max x - 1`.  Because f is convex
   and decreasing, every Newton iterate stays below the root and the candidate set
   :math:`\{x_i > \tau_t\}` only shrinks: each iteration compacts the buffer.
3. Exactness.  Sparsemax: f is linear on a fixed support, so once the candidate set stops
   changing the Newton iterate *is* τ.  1.5-entmax: on the current candidate set S the
   quadratic :math:`\sum_S (x_i - \tau)^2 = 1` is solved in closed form; if every candidate stays
   above that root it is the exact threshold (S is self-consistent), otherwise a Newton step
   shrinks S.

Work is O(K) per row plus a few passes over the (usually small) candidate buffer; sums are
accumulated in float64.  Rows are split over Numba's threads.  Rows of all ``-inf`` give the
uniform vector (the library's documented limit).  The kernels read 2-D C-contiguous float32 or
float64 arrays and write a new array.
"""

from __future__ import annotations

import functools
import importlib.util
from types import ModuleType

import numpy as np

_PARALLEL_MIN_SIZE = 1 << 15


@functools.cache
def _kernels() -> ModuleType | None:
    if importlib.util.find_spec("numba") is None:
        return None
    from mixedarray._native import threshold_kernels

    return threshold_kernels


def register_numpy_rules() -> None:
    """Make the kernels the NumPy rules of ``sparsemax`` and ``entmax15`` (if Numba is here)."""
    if not available():
        return
    from mixedarray._backend import register_rule

    for name in ("sparsemax", "entmax15"):
        register_rule("numpy", name)(functools.partial(_numpy_rule, name))


def _numpy_rule(name: str, x: np.ndarray, alpha: object, n_iter: object) -> np.ndarray:
    return project(name, x)


def vjp(name: str, y: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """The closed-form VJP of ``name`` at the output ``y`` (see ``projections.entmax_jvp``)."""
    kernels = _kernels()
    if kernels is None:  # pragma: no cover
        raise RuntimeError("numba is not installed")
    shape = y.shape
    rows = np.ascontiguousarray(y.reshape(-1, shape[-1]))
    grads = np.ascontiguousarray(np.broadcast_to(grad, shape).reshape(-1, shape[-1]))
    out = np.empty(rows.shape, dtype=np.result_type(rows, grads))
    chunks = min(rows.shape[0], 8 * kernels.numba.get_num_threads())
    getattr(kernels, f"{name}_vjp_parallel")(rows, grads, out, max(chunks, 1))
    return out.reshape(shape)


def available() -> bool:
    """Whether Numba is installed, so the compiled kernels can be used."""
    return _kernels() is not None


def project(name: str, x: np.ndarray) -> np.ndarray:
    """``name`` ("sparsemax" or "entmax15") of the float32/float64 array ``x``, last axis."""
    kernels = _kernels()
    if kernels is None:  # pragma: no cover
        raise RuntimeError("numba is not installed")
    shape = x.shape
    rows = np.ascontiguousarray(x.reshape(-1, shape[-1]))
    out = np.empty_like(rows)
    tolerance = 4 * float(np.finfo(rows.dtype).eps)  # ties with τ give exact zeros
    if rows.size >= _PARALLEL_MIN_SIZE and rows.shape[0] > 1:
        chunks = min(rows.shape[0], 8 * kernels.numba.get_num_threads())
        getattr(kernels, f"{name}_parallel")(rows, out, tolerance, chunks)
    else:
        getattr(kernels, f"{name}_serial")(rows, out, tolerance)
    return out.reshape(shape)
