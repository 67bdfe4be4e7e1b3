r"""Numba CUDA kernels: the Gaussian-Sparsemax log density per thread, and the fused entropy sums.

Imported only when a CUDA array arrives (it imports ``numba.cuda``), like
:mod:`mixedarray._native.cuda_kernels`, whose draws (``draw_candidates``: xoroshiro128+ seeded
by SplitMix64, Box–Muller pairs) and serial sparsemax threshold it reuses, so a draw here is
the draw the face-count kernel makes from the same seeds.  Kernels come from cached factories, one
per (dtype, size class, number of Gauss–Hermite nodes, block size); they run unchanged in
Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``): shared memory and ``syncthreads`` only.

The density is that of :func:`mixedarray.distributions.gaussian_sparsemax_density.log_prob`
(paper-notes §6), formula for formula.  For ``y`` on the simplex with face ``F``, ``k = |F|``,
``w_i = σ_i⁻²``, ``a_i = μ_i − y_i``, ``c = 1/Σ_F w``, ``m = c Σ_F w a``,
``Q = Σ_F w (a − m)²``:

.. math::

    \log p(y) = \log k - \tfrac12 (k-1)\log 2\pi - \sum_F \log\sigma_i + \tfrac12\log c
                - \tfrac12 Q + \log I,
    \qquad I = E_{\tau\sim N(m, c)} \prod_{j\notin F}
               \Phi\!\left(\frac{\tau-\mu_j}{\sigma_j}\right),

``log I = 0`` on the full face (k = K, K = 1 included), else by the Laplace-centred
Gauss–Hermite rule: 20 Newton steps from ``τ = m`` on ``g(τ) = log N(τ; m, c) + Σ log Φ(u_j)``
(steps clamped to ``[0, ∞)``, non-finite steps dropped; the loop stops early only once a step
leaves τ unchanged, after which every remaining step would too, so τ* is the reference's),
``s* = (−g''(τ*))^{-1/2}``, and
``log I = log s* + logsumexp_j[log(ω_j/√(2π)) + ½ log 2π + x_j²/2 + g(τ* + s* x_j)]`` over the
probabilists' nodes ``x_j`` (``numpy.polynomial.hermite_e.hermegauss``; baked into the kernel as
constant memory, so no table is copied at run time), the sum kept as a running logsumexp.  The
inverse Mills ratio uses the reference's float64 rule (``exp(log φ − log Φ)`` above u = −30,
its four-term asymptotic series below).  K = 2 uses the reference's one-bit form instead:
``μ = (μ₁ − μ₂ + 1)/2``, ``s = √(σ₁² + σ₂²)/2``, ``log p = log Φ(−μ/s)`` at ``y₁ = 0``,
``log Φ((μ − 1)/s)`` at ``y₁ = 1``, ``log N(y₁; μ, s²)`` between.

Precision.  Draws and the projection are in the parameters' dtype (as the face-count kernel
and the reference sampler); the point ``y`` is rounded to that dtype, and ``log p(y)`` is then
evaluated in float64 (for float32 parameters too: it is the float64 reference at the float32
point, more accurate than the float32 reference, whose ``a = μ − y`` rounds to float32).

``log Φ`` (:func:`log_ndtr`) is ``log1p(−erfc(x/√2)/2)`` for x > 0, ``log(erfc(−x/√2)/2)``
for −20 < x ≤ 0, and below −20 the asymptotic series
``−x²/2 − log(−x) − ½ log 2π + log Σ_{n≤9} (−1)ⁿ (2n−1)!! x^{−2n}`` (truncation < 1e-17 there):
relative error a few ulp everywhere, no underflow for any finite x.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda, float64, int8, int32

from mixedarray._native.cuda_kernels import (
    draw_candidates,
    keep,
    larger,
    seed_state,
    serial_sparsemax_tau,
)

NEWTON_STEPS = 20  # the reference's newton_steps default (gaussian_sparsemax_density.log_prob)
_LOG_2PI = math.log(2.0 * math.pi)
_HALF_LOG_2PI = 0.5 * _LOG_2PI
_SQRT1_2 = 0.7071067811865476
_ASYMPTOTIC = -20.0  # log_ndtr: the asymptotic series below this
_MILLS_FAR = -30.0  # the reference's float64 switch to the Mills-ratio series


# ---------------------------------------------------------------------------------------------
# Scalar special functions (float64)


@cuda.jit(device=True)
def log_ndtr(x):
    """``log Φ(x)`` in float64, accurate to a few ulp for every x (see the module docstring)."""
    if x > 0.0:
        return math.log1p(-0.5 * math.erfc(x * _SQRT1_2))
    if x > _ASYMPTOTIC:
        return math.log(0.5 * math.erfc(-x * _SQRT1_2))
    v = 1.0 / (x * x)
    series = 1.0 + v * (
        -1.0
        + v
        * (
            3.0
            + v
            * (
                -15.0
                + v
                * (
                    105.0
                    + v
                    * (-945.0 + v * (10395.0 + v * (-135135.0 + v * (2027025.0 + v * -34459425.0))))
                )
            )
        )
    )
    return -0.5 * x * x - math.log(-x) - _HALF_LOG_2PI + math.log(series)


@cuda.jit(device=True)
def mills(u):
    """``(r, r(u + r))`` with ``r = φ(u)/Φ(u)``: the reference's ``_mills`` (float64 branch)."""
    if u < _MILLS_FAR:
        v = 1.0 / (u * u)
        series = 1.0 + v * (-1.0 + v * (3.0 + v * (-15.0 + 105.0 * v)))
        r = -u / series
        curv = (1.0 + v * (-3.0 + v * (15.0 - 105.0 * v))) / (series * series)
    else:
        r = math.exp(-0.5 * u * u - _HALF_LOG_2PI - log_ndtr(u))
        curv = r * (u + r)
    if curv < 0.0:
        curv = 0.0
    elif curv > 1.0:
        curv = 1.0
    return r, curv


# ---------------------------------------------------------------------------------------------
# The log density at one point, given its face


@cuda.jit(device=True)
def log_density(width, mu, inv_sigma, inv_var, log_sigma, on, face, y, k, nodes, log_weights):
    """``log p(y)`` (K ≥ 3, or any K through the general formula) in float64.

    ``face[:k]`` are the indices of the face and ``y[:k]`` the point's values there; ``on`` flags
    the face (1) among the ``width`` vertices.  ``mu``, ``inv_sigma = 1/σ``, ``inv_var = 1/σ²``
    and ``log_sigma`` are float64 per vertex; ``nodes``/``log_weights`` the Gauss–Hermite rule.
    """
    total_w = 0.0
    weighted = 0.0
    log_scale_face = 0.0
    for t in range(k):
        i = face[t]
        w = inv_var[i]
        total_w += w
        weighted += w * (mu[i] - y[t])
        log_scale_face += log_sigma[i]
    c = 1.0 / total_w
    m = c * weighted
    q = 0.0
    for t in range(k):
        i = face[t]
        dev = (mu[i] - y[t]) - m
        q += inv_var[i] * dev * dev
    log_a = -0.5 * (k - 1.0) * _LOG_2PI - log_scale_face + 0.5 * math.log(c) - 0.5 * q
    head = math.log(float64(k)) + log_a
    if k == width:
        return head  # no off-face factor: log I = 0

    # Newton on g'(τ) = 0 from τ = m (monotone; clamped steps).
    tau = m
    for _step in range(NEWTON_STEPS):
        g1 = -(tau - m) / c
        g2 = -1.0 / c
        for j in range(width):
            if on[j] == 0:
                s = inv_sigma[j]
                r, curv = mills((tau - mu[j]) * s)
                g1 += r * s
                g2 -= curv * (s * s)
        step = g1 / (-g2)
        if not math.isfinite(step) or step < 0.0:
            step = 0.0
        moved = tau + step
        if moved == tau:
            break  # every remaining step would leave τ here too
        tau = moved
    neg_g2 = 1.0 / c
    for j in range(width):
        if on[j] == 0:
            s = inv_sigma[j]
            _r, curv = mills((tau - mu[j]) * s)
            neg_g2 += curv * (s * s)
    s_star = 1.0 / math.sqrt(neg_g2)

    # The rescaled rule τ = τ* + s* x_j, summed as a running logsumexp.
    half_log_c = 0.5 * math.log(c)
    top = -math.inf
    acc = 0.0
    for n in range(nodes.shape[0]):
        x = nodes[n]
        at = tau + s_star * x
        log_cdf = 0.0
        for j in range(width):
            if on[j] == 0:
                log_cdf += log_ndtr((at - mu[j]) * inv_sigma[j])
        dz = at - m
        g = -0.5 * dz * dz / c - half_log_c - _HALF_LOG_2PI + log_cdf
        term = log_weights[n] + _HALF_LOG_2PI + 0.5 * x * x + g
        if term > top:
            acc = acc * math.exp(top - term) + 1.0
            top = term
        elif term != -math.inf:
            acc += math.exp(term - top)
    log_i = math.log(s_star) + (top + math.log(acc))
    return head + log_i


@cuda.jit(device=True)
def log_density_bit(mu_bit, s_bit, y1):
    """K = 2: ``log p`` of ``Y₁ = clip(μ + s ε, 0, 1)`` at ``y₁`` (the reference's bit form)."""
    if y1 <= 0.0:
        return log_ndtr(-mu_bit / s_bit)
    if y1 >= 1.0:
        return log_ndtr((mu_bit - 1.0) / s_bit)
    z = (y1 - mu_bit) / s_bit
    return -0.5 * z * z - _HALF_LOG_2PI - math.log(s_bit)


# ---------------------------------------------------------------------------------------------
# Draw → candidates → face → log p


@functools.cache
def _point_log_prob(dtype: str):
    """Device function: the face and ``log p`` of ``sparsemax`` of the kept candidates."""
    value = numba.from_dtype(np.dtype(dtype))

    @cuda.jit(device=True)
    def point_log_prob(
        cand,
        where,
        count,
        tol,
        width,
        mu,
        inv_sigma,
        inv_var,
        log_sigma,
        mu_bit,
        s_bit,
        on,
        face,
        y,
        nodes,
        log_weights,
    ):
        """Returns ``(log p, k)``; leaves ``face[:k]``, ``y[:k]`` (the point) and clears ``on``.

        The support is the reference's: Newton on the candidates (float64 sums), gaps
        ``x − max − τ > tol`` (4 eps of the dtype); ``y`` is the gap rounded to the dtype.
        """
        top = cand[0]
        for j in range(1, count):
            top = larger(top, cand[j])
        tau = serial_sparsemax_tau(cand, count, top)
        k = 0
        for j in range(count):
            gap = float64(cand[j] - top) - tau
            if gap > tol:
                face[k] = where[j]
                y[k] = float64(value(gap))
                on[where[j]] = 1
                k += 1
        if width == 2:
            y1 = 0.0
            for t in range(k):
                if face[t] == 0:
                    y1 = y[t]
            result = log_density_bit(mu_bit, s_bit, y1)
        else:
            result = log_density(
                width, mu, inv_sigma, inv_var, log_sigma, on, face, y, k, nodes, log_weights
            )
        for t in range(k):
            on[face[t]] = 0
        return result, k

    return point_log_prob


@cuda.jit(device=True)
def load_parameters(loc, scale, width, first, step, mu_v, sigma_v, mu, inv_sigma, inv_var, log_s):
    """Entries ``first, first + step, …`` of one member's parameters into shared memory."""
    for i in range(first, width, step):
        m = loc[i]
        s = scale[i]
        mu_v[i] = m
        sigma_v[i] = s
        s64 = float64(s)
        mu[i] = float64(m)
        inv_sigma[i] = 1.0 / s64
        inv_var[i] = 1.0 / (s64 * s64)
        log_s[i] = math.log(s64)


@cuda.jit(device=True)
def bit_parameters(loc, scale):
    """K = 2: ``(μ, s) = ((μ₁ − μ₂ + 1)/2, √(σ₁² + σ₂²)/2)`` in float64."""
    s0 = float64(scale[0])
    s1 = float64(scale[1])
    return 0.5 * (float64(loc[0]) - float64(loc[1]) + 1.0), 0.5 * math.sqrt(s0 * s0 + s1 * s1)


def gauss_hermite_table(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' nodes ``x_j`` and ``log(ω_j/√(2π))`` (float64), as the reference's table."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
    return np.ascontiguousarray(nodes), np.ascontiguousarray(np.log(weights) - _HALF_LOG_2PI)


# ---------------------------------------------------------------------------------------------
# Kernels


@functools.cache
def entropy_kernel(dtype: str, max_k: int, num_nodes: int, threads: int):
    """Kernel ``(loc, scale, seeds, chunk, n, tol, sums)``: Σ −log p and Σ (log p)² of n draws.

    ``loc``, ``scale``: (B, K) with K ≤ ``max_k``; ``seeds``: int32 (chunks, 2) on the device
    (:func:`mixedarray.random.seeds`), of which row ``chunk`` seeds this launch; ``sums``:
    float64 (B, 2), to which the launch adds, for batch member ``blockIdx.y``, the sum of
    ``−log p(Y)`` (column 0) and of ``log p(Y)²`` (column 1) over its n draws.

    Each thread loops over draws: Z = loc + scale·ε (the face-count kernel's draws: candidates
    only, in local memory), τ and the face, ``log p`` of the point (float64), and two float64
    running sums; then a shared-memory tree reduction and one float64 atomic per sum and block.
    Nothing of size n × K exists anywhere.
    """
    value = numba.from_dtype(np.dtype(dtype))
    draw = draw_candidates(dtype)
    point_log_prob = _point_log_prob(dtype)
    gh_nodes, gh_log_weights = gauss_hermite_table(num_nodes)

    @cuda.jit
    def kernel(loc, scale, seeds, chunk, n, tol, sums):
        member = cuda.blockIdx.y
        tid = cuda.threadIdx.x
        width = loc.shape[1]
        mu_v = cuda.shared.array(max_k, value)
        sigma_v = cuda.shared.array(max_k, value)
        mu = cuda.shared.array(max_k, float64)
        inv_sigma = cuda.shared.array(max_k, float64)
        inv_var = cuda.shared.array(max_k, float64)
        log_sigma = cuda.shared.array(max_k, float64)
        red = cuda.shared.array((2, threads), float64)
        nodes = cuda.const.array_like(gh_nodes)
        log_weights = cuda.const.array_like(gh_log_weights)
        load_parameters(
            loc[member],
            scale[member],
            width,
            tid,
            threads,
            mu_v,
            sigma_v,
            mu,
            inv_sigma,
            inv_var,
            log_sigma,
        )
        cuda.syncthreads()
        mu_bit = 0.0
        s_bit = 1.0
        if width == 2:
            mu_bit, s_bit = bit_parameters(loc[member], scale[member])
        first = cuda.blockIdx.x * threads + tid
        stride = cuda.gridDim.x * threads
        s0, s1 = seed_state(seeds[chunk, 0], seeds[chunk, 1], member * stride + first)
        cand = cuda.local.array(max_k, value)
        where = cuda.local.array(max_k, int32)
        on = cuda.local.array(max_k, int8)
        face = cuda.local.array(max_k, int32)
        y = cuda.local.array(max_k, float64)
        for i in range(width):
            on[i] = 0
        total = 0.0
        squares = 0.0
        for _draw in range(first, n, stride):
            s0, s1, count = draw(mu_v, sigma_v, width, s0, s1, cand, where)
            log_p, _k = point_log_prob(
                cand,
                where,
                count,
                tol,
                width,
                mu,
                inv_sigma,
                inv_var,
                log_sigma,
                mu_bit,
                s_bit,
                on,
                face,
                y,
                nodes,
                log_weights,
            )
            total -= log_p
            squares += log_p * log_p
        red[0, tid] = total
        red[1, tid] = squares
        cuda.syncthreads()
        half = threads // 2
        while half > 0:
            if tid < half:
                red[0, tid] += red[0, tid + half]
                red[1, tid] += red[1, tid + half]
            cuda.syncthreads()
            half //= 2
        if tid == 0:
            cuda.atomic.add(sums, (member, 0), red[0, 0])
            cuda.atomic.add(sums, (member, 1), red[1, 0])

    return kernel


@functools.cache
def points_kernel(dtype: str, max_k: int, num_nodes: int, threads: int):
    """Kernel ``(loc, scale, z, tol, y, log_p)``: the entropy kernel's per-draw work on given Z.

    ``loc``, ``scale``: (K,) of one distribution; ``z``: (n, K) scores in the dtype; writes
    ``y = sparsemax(z)`` rows (the points the entropy kernel would score, in the dtype) and
    ``log_p`` (float64, (n,)), one thread per row.  For tests and debugging: the same device
    functions, in the same order, as :func:`entropy_kernel`, minus the random numbers.
    """
    value = numba.from_dtype(np.dtype(dtype))
    point_log_prob = _point_log_prob(dtype)
    gh_nodes, gh_log_weights = gauss_hermite_table(num_nodes)

    @cuda.jit
    def kernel(loc, scale, z, tol, y_out, log_p_out):
        tid = cuda.threadIdx.x
        width = loc.shape[0]
        mu_v = cuda.shared.array(max_k, value)
        sigma_v = cuda.shared.array(max_k, value)
        mu = cuda.shared.array(max_k, float64)
        inv_sigma = cuda.shared.array(max_k, float64)
        inv_var = cuda.shared.array(max_k, float64)
        log_sigma = cuda.shared.array(max_k, float64)
        nodes = cuda.const.array_like(gh_nodes)
        log_weights = cuda.const.array_like(gh_log_weights)
        load_parameters(
            loc, scale, width, tid, threads, mu_v, sigma_v, mu, inv_sigma, inv_var, log_sigma
        )
        cuda.syncthreads()
        mu_bit = 0.0
        s_bit = 1.0
        if width == 2:
            mu_bit, s_bit = bit_parameters(loc, scale)
        cand = cuda.local.array(max_k, value)
        where = cuda.local.array(max_k, int32)
        on = cuda.local.array(max_k, int8)
        face = cuda.local.array(max_k, int32)
        y = cuda.local.array(max_k, float64)
        for i in range(width):
            on[i] = 0
        for r in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
            count = 0
            high = -math.inf
            for i in range(width):
                high, count = keep(z[r, i], i, high, cand, where, count)
            log_p, k = point_log_prob(
                cand,
                where,
                count,
                tol,
                width,
                mu,
                inv_sigma,
                inv_var,
                log_sigma,
                mu_bit,
                s_bit,
                on,
                face,
                y,
                nodes,
                log_weights,
            )
            for i in range(width):
                y_out[r, i] = 0.0
            for t in range(k):
                y_out[r, face[t]] = y[t]
            log_p_out[r] = log_p

    return kernel
