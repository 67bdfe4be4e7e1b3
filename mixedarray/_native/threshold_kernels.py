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
    # One pass: the running max and the entries with scale*x > scale*(running max) - 1.
    top = x[0]
    n = 0
    for i in range(x.shape[0]):
        v = x[i]
        if scale * v > scale * top - 1.0:
            buf[n] = scale * v
            n += 1
            if v > top:
                top = v
    return scale * top, n


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sparsemax_row(x, out, buf):
    """Sparsemax of one row ``x`` into ``out`` (``buf``: float64 scratch of the row's size)."""
    top, n = _gather(x, buf, 1.0)
    if top == -math.inf:
        _uniform(out)
        return
    tau = top - 1.0
    previous = -1
    for _ in range(_MAX_NEWTON):
        k = 0
        total = 0.0
        for j in range(n):
            v = buf[j]
            if v > tau:
                buf[k] = v
                k += 1
                total += v
        n = k
        if k == previous:
            break
        previous = k
        tau = (total - 1.0) / k
    for i in range(x.shape[0]):
        d = x[i] - tau
        out[i] = d if d > 0.0 else 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def entmax15_row(x, out, buf):
    """1.5-entmax of one row ``x`` into ``out`` (``buf``: float64 scratch of the row's size)."""
    top, n = _gather(x, buf, 0.5)
    if top == -math.inf:
        _uniform(out)
        return
    tau = top - 1.0
    for _ in range(_MAX_NEWTON):
        k = 0
        s1 = 0.0
        s2 = 0.0
        lowest = math.inf
        for j in range(n):
            d = buf[j] - tau
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
        d = 0.5 * x[i] - tau
        out[i] = d * d if d > 0.0 else 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sparsemax_serial(x, out):
    buf = np.empty(x.shape[1], dtype=np.float64)
    for b in range(x.shape[0]):
        sparsemax_row(x[b], out[b], buf)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def entmax15_serial(x, out):
    buf = np.empty(x.shape[1], dtype=np.float64)
    for b in range(x.shape[0]):
        entmax15_row(x[b], out[b], buf)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def sparsemax_parallel(x, out, chunks):
    size = x.shape[0]
    for c in numba.prange(chunks):
        buf = np.empty(x.shape[1], dtype=np.float64)
        for b in range(c * size // chunks, (c + 1) * size // chunks):
            sparsemax_row(x[b], out[b], buf)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def entmax15_parallel(x, out, chunks):
    size = x.shape[0]
    for c in numba.prange(chunks):
        buf = np.empty(x.shape[1], dtype=np.float64)
        for b in range(c * size // chunks, (c + 1) * size // chunks):
            entmax15_row(x[b], out[b], buf)
