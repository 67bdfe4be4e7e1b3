r"""Numba CUDA kernels: sparsemax / 1.5-entmax rows, their VJP, and Gaussian-Sparsemax faces.

Imported only when a CUDA array arrives (it imports ``numba.cuda``).  The kernels are made by
factories, one per dtype and size class, because shared and local arrays need compile-time
dtypes and sizes; each factory is cached, so each variant compiles once per process.  They run
unchanged in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which is how CI checks them:
block reductions therefore use shared memory and ``syncthreads`` (the simulator has no warp
shuffles), and every ``cuda.shared.array`` call sits on its own line.

The mathematics is that of :mod:`mixedarray._native.threshold_kernels` (the CPU kernels), step
for step: with ``v = s·(x − max x)`` (s = 1 for sparsemax, 1/2 for 1.5-entmax; ``x − max x`` is
rounded in the input dtype, as the reference does), τ solves :math:`\sum_i [v_i - τ]_+^p = 1`
(p = 1, 2) by Newton's method from τ = −1, sums in float64; sparsemax stops when the support
stops changing, 1.5-entmax when the closed-form root on the current support is self-consistent.
Outputs ``[v − τ]_+^p`` with gaps ``≤ tol`` (4 eps of the dtype, as
``projections._positive_part``) set to exactly 0, so the support (the face) is the reference's.
Rows of all ``−inf`` give the uniform vector.

Memory traffic of the row kernels, per row of K entries:

* ``K ≤ capacity`` (the shared buffer): the row is read once from global memory into shared
  memory, Newton runs on shared memory, the output is written once (coalesced).
* ``K > capacity``: one streaming pass finds the maximum and keeps the candidates
  ``v > −1`` (bounded by a running maximum, refreshed through a shared atomic) with their
  indices in shared memory; the output row is zero-filled and the support scattered.  Still one
  read and one write of the row, when the candidates fit.  If they do not (more than
  ``capacity`` entries within 1 of the running maximum), Newton and the output pass re-read the
  row from global memory (L2 for moderate rows) — correct, slower.
* Rows with K ≤ 32 (``sparsemax_thread``, ``entmax15_thread``): one thread per row, reading
  its row from global memory (the passes after the first hit L1).
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda, float64, int32, uint32, uint64

MAX_NEWTON = 200
_REFRESH = 8  # a sparse-gather thread refreshes its bound on the row maximum every 8 entries
_GOLDEN = 0x9E3779B97F4A7C15


# ---------------------------------------------------------------------------------------------
# Helpers.  Python's max/min on floats do not compile for the CUDA target of Numba 0.68 ("2
# argument types given, but function takes 1"), hence these (NaN-unaware: inputs are checked
# upstream or documented as unchecked).


@cuda.jit(device=True)
def larger(a, b):
    return a if a > b else b


@cuda.jit(device=True)
def smaller(a, b):
    return a if a < b else b


# ---------------------------------------------------------------------------------------------
# Serial (one thread) thresholds, on the first n entries of a 1-D array `src`


@cuda.jit(device=True)
def serial_sparsemax_tau(src, n, top):
    """τ of sparsemax relative to ``top`` over ``src[:n]`` (Newton until the support is stable)."""
    tau = -1.0
    previous = -1.0
    for _step in range(MAX_NEWTON):
        k = 0.0
        total = 0.0
        for j in range(n):
            v = src[j] - top
            if v > tau:
                k += 1.0
                total += v
        if k == previous:
            break
        previous = k
        tau = (total - 1.0) / k
    return tau


@cuda.jit(device=True)
def serial_entmax15_tau(src, n, top):
    """τ of 1.5-entmax relative to ``top`` (v = (src − top)/2) over ``src[:n]``."""
    tau = -1.0
    for _step in range(MAX_NEWTON):
        k = 0.0
        s1 = 0.0
        s2 = 0.0
        lowest = math.inf
        for j in range(n):
            d = 0.5 * (src[j] - top) - tau
            if d > 0.0:
                k += 1.0
                s1 += d
                s2 += d * d
                lowest = smaller(lowest, d)
        disc = s1 * s1 - k * (s2 - 1.0)
        if disc >= 0.0:
            delta = (s1 - math.sqrt(disc)) / k
            if lowest >= delta:
                return tau + delta
        tau += (s2 - 1.0) / (2.0 * s1)
    return tau


# ---------------------------------------------------------------------------------------------
# One thread per row (small K)


def _thread_kernel(tau_of, scale, power):
    """One thread per row ``cuda.grid(1)``: ``out = [scale (x − top) − τ]₊^power``."""

    @cuda.jit
    def kernel(x, out, tol):
        r = cuda.grid(1)
        if r >= x.shape[0]:
            return
        width = x.shape[1]
        top = x[r, 0]
        for i in range(1, width):
            top = larger(top, x[r, i])
        if top == -math.inf:
            for i in range(width):
                out[r, i] = 1.0 / width
            return
        tau = tau_of(x[r], width, top)
        for i in range(width):
            d = scale * float64(x[r, i] - top) - tau
            out[r, i] = (d if power == 1 else d * d) if d > tol else 0.0

    return kernel


sparsemax_thread = _thread_kernel(serial_sparsemax_tau, 1.0, 1)
entmax15_thread = _thread_kernel(serial_entmax15_tau, 0.5, 2)


# ---------------------------------------------------------------------------------------------
# One block per row


@functools.cache
def _block_reduce(threads: int):
    """Device function: block-wide sums of a, b, c and minimum of d (shared ``red[4, T]``).

    Every thread of the block must call it; all get the same results.
    """

    @cuda.jit(device=True)
    def reduce4(red, tid, a, b, c, d):
        red[0, tid] = a
        red[1, tid] = b
        red[2, tid] = c
        red[3, tid] = d
        cuda.syncthreads()
        step = threads // 2
        while step > 0:
            if tid < step:
                red[0, tid] += red[0, tid + step]
                red[1, tid] += red[1, tid + step]
                red[2, tid] += red[2, tid + step]
                red[3, tid] = smaller(red[3, tid], red[3, tid + step])
            cuda.syncthreads()
            step //= 2
        a = red[0, 0]
        b = red[1, 0]
        c = red[2, 0]
        d = red[3, 0]
        cuda.syncthreads()
        return a, b, c, d

    return reduce4


@functools.cache
def block_kernels(dtype: str, capacity: int, threads: int) -> tuple:
    """``(sparsemax, entmax15)`` kernels ``(x, out, tol)``: block ``r`` solves row ``r``.

    ``threads`` (a power of two) is the block size the kernels must be launched with;
    ``capacity`` is the shared row / candidate buffer, in entries (``capacity × (itemsize + 4)``
    bytes of shared memory, plus ``32 × threads`` for the reductions).
    """
    value = numba.from_dtype(np.dtype(dtype))
    cap = capacity
    reduce4 = _block_reduce(threads)

    @cuda.jit(device=True)
    def gather(row, vals, where, count, top, tid, scale):
        """Row maximum into ``top[0]``; the row (dense) or its candidates (sparse) into ``vals``.

        Returns the number of entries to solve on: K (dense), the candidates (sparse), or
        ``-1`` when the candidates overflowed the buffer (solve on the row in global memory).
        """
        width = row.shape[0]
        m = row[0]
        if tid == 0:
            count[0] = 0
            top[0] = m
        cuda.syncthreads()
        if width <= cap:
            for i in range(tid, width, threads):
                v = row[i]
                vals[i] = v
                m = larger(m, v)
        else:
            bound = m
            since = 0
            for i in range(tid, width, threads):
                v = row[i]
                m = larger(m, v)
                bound = larger(bound, m)
                # bound ≤ max x and rounding is monotone, so dropped entries have v ≤ −1 ≤ τ.
                if scale * (v - bound) > -1.0:
                    slot = cuda.atomic.add(count, 0, 1)
                    if slot < cap:
                        vals[slot] = v
                        where[slot] = i
                since += 1
                if since == _REFRESH:
                    since = 0
                    bound = larger(bound, cuda.atomic.max(top, 0, m))
        cuda.atomic.max(top, 0, m)
        cuda.syncthreads()
        n = width if width <= cap else count[0]
        return n if n <= cap else -1

    @cuda.jit(device=True)
    def sparsemax_tau(src, n, top, tid, red):
        tau = -1.0
        previous = -1.0
        for _step in range(MAX_NEWTON):
            k = 0.0
            total = 0.0
            for j in range(tid, n, threads):
                v = src[j] - top
                if v > tau:
                    k += 1.0
                    total += v
            k, total, _c, _d = reduce4(red, tid, k, total, 0.0, 0.0)
            if k == previous:  # the same on every thread: the loop exits together
                break
            previous = k
            tau = (total - 1.0) / k
        return tau

    @cuda.jit(device=True)
    def entmax15_tau(src, n, top, tid, red):
        tau = -1.0
        for _step in range(MAX_NEWTON):
            k = 0.0
            s1 = 0.0
            s2 = 0.0
            lowest = math.inf
            for j in range(tid, n, threads):
                d = 0.5 * (src[j] - top) - tau
                if d > 0.0:
                    k += 1.0
                    s1 += d
                    s2 += d * d
                    lowest = smaller(lowest, d)
            k, s1, s2, lowest = reduce4(red, tid, k, s1, s2, lowest)
            disc = s1 * s1 - k * (s2 - 1.0)
            if disc >= 0.0:
                delta = (s1 - math.sqrt(disc)) / k
                if lowest >= delta:
                    return tau + delta
            tau += (s2 - 1.0) / (2.0 * s1)
        return tau

    @cuda.jit(device=True)
    def finish(x, out, r, tid, vals, where, n, top, tau, tol, power):
        """Write ``[s(x − top) − τ]_+^power`` (gaps ≤ tol are 0) into row ``r`` of ``out``."""
        width = x.shape[1]
        scale = 1.0 if power == 1 else 0.5
        if n == width and width <= cap:  # dense: from shared memory, coalesced
            for i in range(tid, width, threads):
                d = scale * (vals[i] - top) - tau
                out[r, i] = (d if power == 1 else d * d) if d > tol else 0.0
        elif n < 0:  # candidates overflowed: from global memory
            for i in range(tid, width, threads):
                d = scale * (x[r, i] - top) - tau
                out[r, i] = (d if power == 1 else d * d) if d > tol else 0.0
        else:  # sparse: zero-fill, then scatter the support
            for i in range(tid, width, threads):
                out[r, i] = 0.0
            cuda.syncthreads()
            for j in range(tid, n, threads):
                d = scale * (vals[j] - top) - tau
                if d > tol:
                    out[r, where[j]] = d if power == 1 else d * d

    def row_kernel(tau_of, scale, power):
        """One block per row: gather once, τ by ``tau_of``, write ``[scale (x − top) − τ]₊^p``."""

        @cuda.jit
        def kernel(x, out, tol):
            r = cuda.blockIdx.x
            tid = cuda.threadIdx.x
            vals = cuda.shared.array(cap, value)
            where = cuda.shared.array(cap, int32)
            red = cuda.shared.array((4, threads), float64)
            count = cuda.shared.array(1, int32)
            top_slot = cuda.shared.array(1, value)
            row = x[r]
            n = gather(row, vals, where, count, top_slot, tid, scale)
            top = top_slot[0]
            width = x.shape[1]
            if top == -math.inf:
                for i in range(tid, width, threads):
                    out[r, i] = 1.0 / width
                return
            # n < 0: the candidates overflowed the shared buffer; read the row again.
            tau = tau_of(row, width, top, tid, red) if n < 0 else tau_of(vals, n, top, tid, red)
            finish(x, out, r, tid, vals, where, n, top, tau, tol, power)

        return kernel

    sparsemax = row_kernel(sparsemax_tau, 1.0, 1)
    entmax15 = row_kernel(entmax15_tau, 0.5, 2)
    return sparsemax, entmax15


@functools.cache
def vjp_kernels(threads: int) -> tuple:
    """``(sparsemax, entmax15)`` VJP kernels ``(y, g, out)``, block ``r`` on row ``r``.

    Row-wise ``out = s ⊙ (g − (sᵀg)/Σs)`` with ``s = 1[y > 0]`` (sparsemax) or ``s = √y``
    (1.5-entmax): one pass for the two sums (float64), one for the output (its reads of y and
    g hit L1/L2).
    """
    reduce4 = _block_reduce(threads)

    @cuda.jit(device=True)
    def weight(v, power):
        if power == 1:
            return 1.0 if v > 0.0 else 0.0
        return math.sqrt(float64(v))

    @cuda.jit(device=True)
    def vjp(y, g, out, power):
        r = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        red = cuda.shared.array((4, threads), float64)
        width = y.shape[1]
        total = 0.0
        dot = 0.0
        for i in range(tid, width, threads):
            s = weight(y[r, i], power)
            total += s
            dot += s * g[r, i]
        total, dot, _c, _d = reduce4(red, tid, total, dot, 0.0, 0.0)
        ratio = dot / total
        for i in range(tid, width, threads):
            out[r, i] = weight(y[r, i], power) * (g[r, i] - ratio)

    @cuda.jit
    def sparsemax(y, g, out):
        vjp(y, g, out, 1)

    @cuda.jit
    def entmax15(y, g, out):
        vjp(y, g, out, 2)

    return sparsemax, entmax15


# ---------------------------------------------------------------------------------------------
# Random numbers: xoroshiro128+ (numba.cuda.random's generator) with its state in registers,
# each thread's state made by SplitMix64 from (seed, stream id).


@cuda.jit(device=True)
def _mix64(z):
    z = (z ^ (z >> uint32(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint32(27))) * uint64(0x94D049BB133111EB)
    return z ^ (z >> uint32(31))


@cuda.jit(device=True)
def seed_state(high, low, stream):
    """xoroshiro128+ state of ``stream`` for the 62-bit seed ``high·2³¹ + low``.

    SplitMix64 outputs at the distinct positions ``2·stream + 1`` and ``2·stream + 2`` of the
    seed's SplitMix64 sequence: distinct streams get distinct states.
    """
    seed = (uint64(high) << uint32(31)) | uint64(low)
    base = seed + uint64(2) * uint64(stream) * uint64(_GOLDEN)
    s0 = _mix64(base + uint64(_GOLDEN))
    s1 = _mix64(base + uint64(2) * uint64(_GOLDEN))
    return s0, s1


@cuda.jit(device=True)
def next64(s0, s1):
    """One xoroshiro128+ step: ``(s0, s1, output)``."""
    result = s0 + s1
    s1 = s1 ^ s0
    s0 = ((s0 << uint32(55)) | (s0 >> uint32(9))) ^ s1 ^ (s1 << uint32(14))
    s1 = (s1 << uint32(36)) | (s1 >> uint32(28))
    return s0, s1, result


@functools.cache
def _normal_pair(dtype: str):
    """Device function ``(s0, s1) -> (s0, s1, e1, e2)``: two N(0, 1) draws by Box–Muller.

    float32: one 64-bit draw gives u1 = (hi + 1)/2³² ∈ (0, 1] and u2 = lo/2³², so |e| ≤ 6.7
    (P(R > 6.66) = 2.3e-10 is all that is cut); math in float32.  float64: two draws, 53 bits
    each, math in float64.
    """
    if dtype == "float32":
        value = numba.float32
        two_pi = np.float32(2 * math.pi)
        minus_two = np.float32(-2.0)
        one = np.float32(1.0)
        unit = np.float32(2.0**-32)

        @cuda.jit(device=True)
        def pair(s0, s1):
            s0, s1, r = next64(s0, s1)
            u1 = (value(r >> uint32(32)) + one) * unit
            u2 = value(r & uint64(0xFFFFFFFF)) * unit
            radius = math.sqrt(minus_two * math.log(u1))
            angle = two_pi * u2
            return s0, s1, radius * math.cos(angle), radius * math.sin(angle)

        return pair

    @cuda.jit(device=True)
    def pair64(s0, s1):
        s0, s1, r1 = next64(s0, s1)
        s0, s1, r2 = next64(s0, s1)
        u1 = (float64(r1 >> uint32(11)) + 1.0) * 2.0**-53
        u2 = float64(r2 >> uint32(11)) * 2.0**-53
        radius = math.sqrt(-2.0 * math.log(u1))
        angle = 2.0 * math.pi * u2
        return s0, s1, radius * math.cos(angle), radius * math.sin(angle)

    return pair64


@cuda.jit(device=True)
def keep(z, index, high, cand, where, count):
    """Keep ``z`` (vertex ``index``) as a candidate of the support if ``z > running max − 1``.

    The running maximum ``high`` only grows, so nothing that can be in the support is dropped
    (``τ ≥ max − 1``); returns the new ``(high, count)``.
    """
    high = larger(high, z)
    if z - high > -1.0:
        cand[count] = z
        where[count] = index
        count += 1
    return high, count


@functools.cache
def draw_candidates(dtype: str):
    """Device function: draw ``Z = μ + σ·ε`` and keep only its support candidates.

    ``(mu, sigma, width, s0, s1, cand, where) -> (s0, s1, count)``: one Box–Muller pair per two
    vertices from the xoroshiro state ``(s0, s1)``; ``cand[:count]``, ``where[:count]`` are the
    entries within 1 of the running maximum and their vertices (:func:`keep`).  The face-count
    and entropy kernels draw through it, so the same seeds give the same draws in both.
    """
    pair = _normal_pair(dtype)

    @cuda.jit(device=True)
    def draw(mu, sigma, width, s0, s1, cand, where):
        count = 0
        high = -math.inf
        for i in range(0, width, 2):
            s0, s1, e1, e2 = pair(s0, s1)
            high, count = keep(mu[i] + sigma[i] * e1, i, high, cand, where, count)
            if i + 1 < width:
                high, count = keep(mu[i + 1] + sigma[i + 1] * e2, i + 1, high, cand, where, count)
        return s0, s1, count

    return draw


# ---------------------------------------------------------------------------------------------
# Gaussian-Sparsemax face statistics


@functools.cache
def faces_kernel(dtype: str, max_k: int, threads: int):
    """Kernel ``(loc, scale, seeds, chunk, n, tol, counts)`` counting the faces of n draws.

    ``loc``, ``scale``: (B, K) with K ≤ ``max_k``; ``seeds``: int32 (chunks, 2) on the device
    (see :func:`mixedarray.random.seeds`), of which row ``chunk`` seeds this launch;
    ``counts``: float64 (B, 2, K), to which the launch adds, for batch member ``blockIdx.y``,
    the number of draws with ``|F| = k + 1`` (row 0) and with ``k ∈ F`` (row 1).

    Each thread loops over draws: Z = loc + scale·ε into registers/local memory, keeping only
    the candidates ``Z_k > max − 1`` (running maximum) with their indices, the sparsemax
    threshold on the candidates (Newton, as :func:`serial_sparsemax_tau`), the support by the
    reference's rule (gap > tol), and shared-memory counters; one global atomic per counter and
    block at the end.  Nothing of size n × K exists anywhere.
    """
    value = numba.from_dtype(np.dtype(dtype))
    draw = draw_candidates(dtype)

    @cuda.jit
    def kernel(loc, scale, seeds, chunk, n, tol, counts):
        member = cuda.blockIdx.y
        tid = cuda.threadIdx.x
        width = loc.shape[1]
        sizes = cuda.shared.array(max_k, int32)
        marginals = cuda.shared.array(max_k, int32)
        mu = cuda.shared.array(max_k, value)
        sigma = cuda.shared.array(max_k, value)
        for i in range(tid, max_k, threads):
            sizes[i] = 0
            marginals[i] = 0
        for i in range(tid, width, threads):
            mu[i] = loc[member, i]
            sigma[i] = scale[member, i]
        cuda.syncthreads()
        first = cuda.blockIdx.x * threads + tid
        stride = cuda.gridDim.x * threads
        s0, s1 = seed_state(seeds[chunk, 0], seeds[chunk, 1], member * stride + first)
        cand = cuda.local.array(max_k, value)
        where = cuda.local.array(max_k, int32)
        for _draw in range(first, n, stride):
            s0, s1, n_cand = draw(mu, sigma, width, s0, s1, cand, where)
            top = cand[0]
            for j in range(1, n_cand):
                top = larger(top, cand[j])
            tau = serial_sparsemax_tau(cand, n_cand, top)
            size = 0
            for j in range(n_cand):
                if float64(cand[j] - top) - tau > tol:
                    size += 1
                    cuda.atomic.add(marginals, where[j], 1)
            cuda.atomic.add(sizes, size - 1, 1)
        cuda.syncthreads()
        for i in range(tid, width, threads):
            if sizes[i] > 0:
                cuda.atomic.add(counts, (member, 0, i), float64(sizes[i]))
            if marginals[i] > 0:
                cuda.atomic.add(counts, (member, 1, i), float64(marginals[i]))

    return kernel
