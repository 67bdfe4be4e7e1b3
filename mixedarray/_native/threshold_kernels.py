"""Numba kernels of :mod:`mixedarray._native.cpu_threshold` (imported only when Numba is).

Defined at module level so that Numba caches their machine code between processes.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_MAX_NEWTON = 200
_njit = numba.njit(cache=True, nogil=True, error_model="numpy")


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _uniform(out):
    for i in range(out.shape[0]):
        out[i] = 1.0 / out.shape[0]


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _gather(x, buf, scale):
    # One pass: the running max, and into buf the entries with scale·(x - running max) > -1
    # (differences, so huge scores lose no precision).  Returns (max, count).
    top = x[0]
    n = 0
    for i in range(x.shape[0]):
        v = x[i]
        if scale * (v - top) > -1.0:
            buf[n] = v
            n += 1
            if v > top:
                top = v
    return top, n


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sparsemax_row(x, out, buf, tol):
    """Sparsemax of one row ``x`` into ``out`` (``buf``: float64 scratch of the row's size).

    Gaps ``x − τ ≤ tol`` (rounding level: ties with the threshold) give exactly 0.
    """
    top, n = _gather(x, buf, 1.0)
    if top == -math.inf:
        _uniform(out)
        return
    # Relative to the maximum: the threshold is top + tau.
    tau = -1.0
    previous = -1
    for _ in range(_MAX_NEWTON):
        k = 0
        total = 0.0
        for j in range(n):
            v = buf[j] - top
            if v > tau:
                buf[k] = buf[j]
                k += 1
                total += v
        n = k
        if k == previous:
            break
        previous = k
        tau = (total - 1.0) / k
    for i in range(x.shape[0]):
        d = (x[i] - top) - tau
        out[i] = d if d > tol else 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def entmax15_row(x, out, buf, tol):
    """1.5-entmax of one row ``x`` into ``out`` (``buf`` and ``tol`` as in sparsemax_row)."""
    top, n = _gather(x, buf, 0.5)
    if top == -math.inf:
        _uniform(out)
        return
    # Relative to the maximum of x = z/2: the threshold is top/2 + tau.
    tau = -1.0
    for _ in range(_MAX_NEWTON):
        k = 0
        s1 = 0.0
        s2 = 0.0
        lowest = math.inf
        for j in range(n):
            d = 0.5 * (buf[j] - top) - tau
            if d > 0.0:
                buf[k] = buf[j]
                k += 1
                s1 += d
                s2 += d * d
                if d < lowest:
                    lowest = d
        n = k
        disc = s1 * s1 - k * (s2 - 1.0)
        if disc >= 0.0:
            delta = (s1 - math.sqrt(disc)) / k
            if lowest >= delta:
                tau += delta
                break
        tau += (s2 - 1.0) / (2.0 * s1)
    for i in range(x.shape[0]):
        d = 0.5 * (x[i] - top) - tau
        out[i] = d * d if d > tol else 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sparsemax_serial(x, out, tol):
    buf = np.empty(x.shape[1], dtype=np.float64)
    for b in range(x.shape[0]):
        sparsemax_row(x[b], out[b], buf, tol)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def entmax15_serial(x, out, tol):
    buf = np.empty(x.shape[1], dtype=np.float64)
    for b in range(x.shape[0]):
        entmax15_row(x[b], out[b], buf, tol)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def sparsemax_parallel(x, out, tol, chunks):
    size = x.shape[0]
    for c in numba.prange(chunks):
        buf = np.empty(x.shape[1], dtype=np.float64)
        for b in range(c * size // chunks, (c + 1) * size // chunks):
            sparsemax_row(x[b], out[b], buf, tol)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def entmax15_parallel(x, out, tol, chunks):
    size = x.shape[0]
    for c in numba.prange(chunks):
        buf = np.empty(x.shape[1], dtype=np.float64)
        for b in range(c * size // chunks, (c + 1) * size // chunks):
            entmax15_row(x[b], out[b], buf, tol)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def weighted_projection_parallel(y, g, out, root, chunks):
    """Row-wise ``s ⊙ g − s (sᵀg)/Σs``: s = 1[y > 0] (``root`` False) or √y (``root`` True)."""
    size, width = y.shape
    for c in numba.prange(chunks):
        for b in range(c * size // chunks, (c + 1) * size // chunks):
            total = 0.0
            dot = 0.0
            for i in range(width):
                if y[b, i] > 0.0:
                    s = math.sqrt(y[b, i]) if root else 1.0
                    total += s
                    dot += s * g[b, i]
            ratio = dot / total
            for i in range(width):
                if y[b, i] > 0.0:
                    s = math.sqrt(y[b, i]) if root else 1.0
                    out[b, i] = s * (g[b, i] - ratio)
                else:
                    out[b, i] = 0.0
