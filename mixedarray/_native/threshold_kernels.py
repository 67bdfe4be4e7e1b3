"""Numba kernels of :mod:`mixedarray._native.cpu_threshold` (imported only when Numba is).

Defined at module level so that Numba caches their machine code between processes.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_MAX_NEWTON = 200
_DENSE_WIDTH = 64  # rows up to this width are solved in place, wider ones on their candidates
# Reassociation lets LLVM vectorise the branch-free sums; no flag assumes finite values.
_FAST = {"reassoc", "nsz", "contract", "arcp"}


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_FAST, inline="always")
def _uniform(out, b):
    for i in range(out.shape[1]):
        out[b, i] = 1.0 / out.shape[1]


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_FAST, inline="always")
def _candidates(x, b, buf, scale):
    """Row maximum, and into ``buf`` the values ``scale·(x − max)`` that may be in the support.

    Only entries with ``scale·(x − max) > −1`` can be (the threshold is at least max − 1);
    narrow rows copy every entry (a branch-free copy beats a branchy filter there).  Returns
    ``(max, count)``.
    """
    width = x.shape[1]
    top = x[b, 0]
    for i in range(width):
        top = max(top, x[b, i])
    n = 0
    if width <= _DENSE_WIDTH:
        for i in range(width):
            buf[i] = scale * (x[b, i] - top)
        n = width
    else:
        for i in range(width):
            v = scale * (x[b, i] - top)
            if v > -1.0:
                buf[n] = v
                n += 1
    return top, n


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_FAST, inline="always")
def sparsemax_row(x, out, b, buf, tol):
    """Sparsemax of row ``b`` of ``x`` into ``out`` (``buf``: float64 scratch of a row's size).

    Relative to the row maximum, Newton's method on ``Σ[v − τ]_+ − 1`` from ``τ = −1`` until the
    support stops changing.  Gaps ``x − τ ≤ tol`` (ties with the threshold) give exactly 0.
    """
    top, n = _candidates(x, b, buf, 1.0)
    if top == -math.inf:
        _uniform(out, b)
        return
    tau = -1.0
    previous = -1
    for _ in range(_MAX_NEWTON):
        k = 0
        total = 0.0
        for j in range(n):
            inside = buf[j] > tau
            k += inside
            total += buf[j] if inside else 0.0
        if k == previous:
            break
        previous = k
        tau = (total - 1.0) / k
    for i in range(x.shape[1]):
        d = (x[b, i] - top) - tau
        out[b, i] = d if d > tol else 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_FAST, inline="always")
def entmax15_row(x, out, b, buf, tol):
    """1.5-entmax of row ``b`` of ``x`` into ``out`` (``buf``, ``tol`` as in sparsemax_row).

    With ``v = (x − max)/2``: Newton's method on ``Σ[v − τ]_+² − 1`` from ``τ = −1``; on each
    candidate set S the quadratic ``Σ_S (v − τ)² = 1`` is solved in closed form and accepted
    once every member of S stays above its root.
    """
    top, n = _candidates(x, b, buf, 0.5)
    if top == -math.inf:
        _uniform(out, b)
        return
    tau = -1.0
    for _ in range(_MAX_NEWTON):
        k = 0
        s1 = 0.0
        s2 = 0.0
        lowest = math.inf
        for j in range(n):
            d = buf[j] - tau
            inside = d > 0.0
            k += inside
            s1 += d if inside else 0.0
            s2 += d * d if inside else 0.0
            lowest = min(lowest, d if inside else math.inf)
        disc = s1 * s1 - k * (s2 - 1.0)
        if disc >= 0.0:
            delta = (s1 - math.sqrt(disc)) / k
            if lowest >= delta:
                tau += delta
                break
        tau += (s2 - 1.0) / (2.0 * s1)
    for i in range(x.shape[1]):
        d = 0.5 * (x[b, i] - top) - tau
        out[b, i] = d * d if d > tol else 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sparsemax_serial(x, out, tol):
    buf = np.empty(x.shape[1], dtype=np.float64)
    for b in range(x.shape[0]):
        sparsemax_row(x, out, b, buf, tol)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def entmax15_serial(x, out, tol):
    buf = np.empty(x.shape[1], dtype=np.float64)
    for b in range(x.shape[0]):
        entmax15_row(x, out, b, buf, tol)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def sparsemax_parallel(x, out, tol, chunks):
    size = x.shape[0]
    for c in numba.prange(chunks):
        buf = np.empty(x.shape[1], dtype=np.float64)
        for b in range(c * size // chunks, (c + 1) * size // chunks):
            sparsemax_row(x, out, b, buf, tol)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def entmax15_parallel(x, out, tol, chunks):
    size = x.shape[0]
    for c in numba.prange(chunks):
        buf = np.empty(x.shape[1], dtype=np.float64)
        for b in range(c * size // chunks, (c + 1) * size // chunks):
            entmax15_row(x, out, b, buf, tol)


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_FAST, parallel=True)
def sparsemax_vjp_parallel(y, g, out, chunks):
    """Row-wise ``s ⊙ g − s (sᵀg)/Σs`` with ``s = 1[y > 0]``."""
    size, width = y.shape
    for c in numba.prange(chunks):
        for b in range(c * size // chunks, (c + 1) * size // chunks):
            total = 0.0
            dot = 0.0
            for i in range(width):
                s = 1.0 if y[b, i] > 0.0 else 0.0
                total += s
                dot += s * g[b, i]
            ratio = dot / total
            for i in range(width):
                s = 1.0 if y[b, i] > 0.0 else 0.0
                out[b, i] = s * (g[b, i] - ratio)


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_FAST, parallel=True)
def entmax15_vjp_parallel(y, g, out, chunks):
    """Row-wise ``s ⊙ g − s (sᵀg)/Σs`` with ``s = √y`` (``y ≥ 0``, so ``s = 0`` off the support)."""
    size, width = y.shape
    for c in numba.prange(chunks):
        for b in range(c * size // chunks, (c + 1) * size // chunks):
            total = 0.0
            dot = 0.0
            for i in range(width):
                s = math.sqrt(y[b, i])
                total += s
                dot += s * g[b, i]
            ratio = dot / total
            for i in range(width):
                out[b, i] = math.sqrt(y[b, i]) * (g[b, i] - ratio)
