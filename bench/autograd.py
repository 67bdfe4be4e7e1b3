"""Forward+backward of the two mixed distributions against the authors' formulas in plain torch.

    python bench/autograd.py                  # the full table (a few minutes on 2 cores)
    python bench/autograd.py --quick          # batch 256, 3 repetitions, 10 points (< 1 minute)
    python bench/autograd.py --dtype float64  # time in float64 instead of float32
    python bench/autograd.py --clock cpu --threads 1  # CPU time, one torch thread: the work
                                                      # done, robust to other processes on
                                                      # the cores (wall time is not)

Work timed (one process; torch on 2 threads; JAX under ``jax.jit(jax.value_and_grad(...))``,
compiled in the warm-up, ``block_until_ready``; median of ``--repeat`` runs after a warm-up):

* ``GaussianSparsemax.log_prob``: ``loss = Σ log p(y)`` and its gradient w.r.t. ``loc`` and
  ``scale``, at points ``y`` drawn from the distribution itself (so they land on faces of every
  size).  Ours: ``ma.GaussianSparsemax(loc, scale)`` (32-node Laplace-centred Gauss–Hermite).
  Peer: the authors' density (deep-spin/sparse-communication, ``mixedrvs/gaussiansp.py``,
  run with ``gsp_cdf_samples = 1000`` in ``cfg/iclr-gaussiansp.json``) re-written here in plain
  torch: the pivot form ``N(d; μ_d, diag σ_d² + σ_p² 11ᵀ)`` through
  ``torch.distributions.LowRankMultivariateNormal`` for the face, times the off-face integral
  on a fixed quantile grid ``τ_i = m + √c Φ⁻¹(u_i)``, ``u_i = i/(n+1)``, ``i = 1..n``, ``n = 1000``,
  trapezoid in log space (``logaddexp`` of neighbours − log 2 + log Δu, then ``logsumexp``),
  ``log Φ`` on every (row, vertex, node) then masked to the off-face vertices.  Two liberties,
  both in the peer's favour: ``m`` is computed in O(K) (the authors build a K×K pairwise table
  for it) and ``log Φ`` is ``torch.special.log_ndtr`` (the authors ship a Python-level
  ``log_ndtr`` autograd Function).
* ``MixedDirichlet.rsample`` + ``log_prob``: ``loss = Σ log p(y)`` with ``y = rsample()`` (fresh
  draws every call), gradient w.r.t. ``face_logits`` and ``concentration``.  Ours:
  ``ma.MixedDirichlet(face_logits, concentration)`` (first-one face sampler, log-space Gamma).
  Peer: the authors' ``MixedDirichlet`` (``mixedrvs/mixed.py``, ``bitvector.py``,
  ``dirichlet.py``) in plain torch: the face law ``∝ exp(Σ_k ±w_k)`` (Gibbs scores
  ``w = η/2``) normalised by a sequential value recursion over the K positions of a finite-state
  acceptor for non-empty bit vectors, faces sampled position by position with Gumbel-argmax
  against those values, then ``torch.distributions.Gamma(α, 1).rsample()`` on all K vertices,
  masked and renormalised, and the masked-Dirichlet log density.  Liberty in the peer's favour:
  the acceptor's two "some vertex already on" states (whose outgoing arcs are identical) are
  merged, and the reverse values (used only for their cross-entropy) are not computed.

Speed-up = peer / ours (> 1: ours is faster).  JAX rows are compared with the same torch peer.

Accuracy (float64 and float32, same parameters and points as the B = 256 runs, ``--points``
rows): Gaussian-Sparsemax against an independent reference per point, ``scipy.integrate.quad``
of ``k ∫ Π_F N(y_i + τ; μ_i, σ_i²) Π_{j∉F} Φ((τ − μ_j)/σ_j) dτ`` (the integrand before
completing the square, in log space around its mode); our 128-node rule is listed against the
same reference as a check of the reference.  Mixed Dirichlet against a float64 NumPy/SciPy
evaluation of ``η·f − log(Π(1 + e^η) − 1) + log Dir(y_f; α_f)`` at the same points.
Nothing here is asserted: the figures go into the issue notes.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import jax
import jax.numpy as jnp
import numpy as np
import scipy
import torch
import torch.distributions as td
from scipy import integrate, optimize, special

import mixedarray as ma

jax.config.update("jax_enable_x64", True)  # float64 accuracy rows; float32 arrays stay float32

BATCHES = (256, 1024, 4096)
KS = (10, 50)
QUADRATURE_POINTS = 1000  # the authors' gsp_cdf_samples in cfg/iclr-gaussiansp.json


# ---------------------------------------------------------------------------------------------
# The authors' formulas, plain torch.


def authors_gs_log_prob(
    loc: torch.Tensor, scale: torch.Tensor, y: torch.Tensor, n: int = QUADRATURE_POINTS
) -> torch.Tensor:
    """Gaussian-Sparsemax log density as the authors compute it: pivot MVN × quantile grid."""
    K = y.shape[-1]
    zero = y.new_zeros(())
    var = scale * scale
    face = y > 0
    # Pivot: the first vertex of the face; the other face vertices are measured against it.
    pivot = torch.nn.functional.one_hot(torch.argmax(face.to(y.dtype), -1), K).bool()
    others = face & ~pivot
    y_p = torch.where(pivot, y, zero).sum(-1, keepdim=True)
    loc_p = torch.where(pivot, loc, zero).sum(-1, keepdim=True)
    scale_p = torch.where(pivot, scale, zero).sum(-1, keepdim=True)
    diff = torch.where(others, y - y_p, zero)
    loc_diff = torch.where(others, loc - loc_p, zero)
    # N(d; μ_d, diag σ_d² + σ_p² 11ᵀ) embedded in K dimensions: unit variance off `others`,
    # whose N(0; 0, 1) factors are then divided out.
    cov_diag = torch.where(others, var, torch.ones_like(var))
    cov_factor = torch.where(others, scale_p, zero).unsqueeze(-1)
    log_face = td.LowRankMultivariateNormal(loc_diff, cov_factor, cov_diag).log_prob(diff)
    log_face = log_face + (~others).to(y.dtype).sum(-1) * (0.5 * math.log(2 * math.pi))
    # Off-face integral E_{τ ~ N(m, c)} Π_{j∉F} Φ((τ − μ_j)/σ_j) on the quantile grid.
    inv_var = torch.where(face, 1 / var, zero)
    c = 1 / inv_var.sum(-1)
    m = c * (inv_var * (loc - y)).sum(-1)
    u = np.linspace(0.0, 1.0, n + 2)[1:-1]
    nodes = torch.as_tensor(special.ndtri(u), dtype=y.dtype)
    tau = m.unsqueeze(-1) + c.sqrt().unsqueeze(-1) * nodes  # (B, n)
    t = (tau.unsqueeze(-2) - loc.unsqueeze(-1)) / scale.unsqueeze(-1)  # (B, K, n)
    log_cdf = torch.where(face.unsqueeze(-1), zero, torch.special.log_ndtr(t)).sum(-2)  # (B, n)
    log_trapezoids = torch.logaddexp(log_cdf[..., :-1], log_cdf[..., 1:]) + (
        math.log(u[1] - u[0]) - math.log(2.0)
    )
    log_integral = torch.logsumexp(log_trapezoids, -1)
    return log_face + log_integral + face.to(y.dtype).sum(-1).log()


def authors_face_values(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value recursion of the acceptor for non-empty bit vectors, ``p(f) ∝ exp Σ_k ±w_k``.

    Returns the values of the states "no vertex on yet" and "some vertex on" after each
    position, shape ``(K + 1, B)`` each; ``none[0]`` is the log normaliser.
    """
    K = scores.shape[-1]
    none = [torch.full_like(scores[..., 0], -math.inf)]
    some = [torch.zeros_like(scores[..., 0])]
    for k in range(K - 1, -1, -1):
        w = scores[..., k]
        none.append(torch.logsumexp(torch.stack([-w + none[-1], w + some[-1]]), 0))
        some.append(torch.logsumexp(torch.stack([-w + some[-1], w + some[-1]]), 0))
    return torch.stack(none[::-1]), torch.stack(some[::-1])


def authors_face_sample(scores: torch.Tensor, none: torch.Tensor, some: torch.Tensor):
    """Faces position by position, Gumbel-argmax over {off, on} against the state values."""
    with torch.no_grad():
        K = scores.shape[-1]
        gumbel = td.Gumbel(torch.zeros_like(scores), torch.ones_like(scores)).sample((2,))
        started = torch.zeros_like(scores[..., 0], dtype=torch.bool)
        bits = []
        for k in range(K):
            w = scores[..., k]
            stay = torch.where(started, some[k + 1], none[k + 1])
            on = (w + some[k + 1] + gumbel[1, ..., k]) > (-w + stay + gumbel[0, ..., k])
            bits.append(on)
            started = started | on
        return torch.stack(bits, -1)


def authors_md_rsample_log_prob(
    scores: torch.Tensor, concentration: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One rsample per row and its log density (the authors' MixedDirichlet); also the face."""
    none, some = authors_face_values(scores)
    face = authors_face_sample(scores, none, some)
    # MaskedDirichlet.rsample: Gamma on every vertex, masked, renormalised.
    g = td.Gamma(concentration, torch.ones_like(concentration), validate_args=False).rsample()
    g = torch.where(face, g, torch.zeros_like(g))
    y = g / g.sum(-1, keepdim=True)
    # log_prob: faces from the support of y, as the authors do.
    mask = y > 0
    log_face = torch.where(mask, scores, -scores).sum(-1) - none[0]
    a_or_0 = torch.where(mask, concentration, torch.zeros_like(concentration))
    a_or_1 = torch.where(mask, concentration, torch.ones_like(concentration))
    log_beta = torch.where(mask, torch.lgamma(a_or_1), torch.zeros_like(a_or_1)).sum(-1)
    log_beta = log_beta - torch.lgamma(a_or_0.sum(-1))
    log_kernel = torch.where(mask, (a_or_1 - 1) * torch.log(y), torch.zeros_like(y)).sum(-1)
    return y, log_face + log_kernel - log_beta, face


# ---------------------------------------------------------------------------------------------
# Independent float64 references.


def reference_gs_log_prob(loc: np.ndarray, scale: np.ndarray, y: np.ndarray) -> float:
    """``log k + log ∫ exp h(τ) dτ`` by adaptive quadrature around the mode of the concave h."""
    on = y > 0
    k = int(on.sum())
    lo, so, yo = loc[on], scale[on], y[on]
    lz, sz = loc[~on], scale[~on]

    def h(tau: float) -> float:
        z = (yo + tau - lo) / so
        face = float(np.sum(-0.5 * z * z - np.log(so))) - 0.5 * k * math.log(2 * math.pi)
        return face + float(np.sum(special.log_ndtr((tau - lz) / sz)))

    w = 1 / so**2
    c = 1 / w.sum()
    m = c * float(np.sum(w * (lo - yo)))
    mode = optimize.minimize_scalar(lambda t: -h(t), bracket=(m - math.sqrt(c), m), tol=1e-12).x
    peak = h(mode)
    delta = 1e-4 * math.sqrt(c)
    curvature = -(h(mode + delta) - 2 * peak + h(mode - delta)) / delta**2
    width = 1 / math.sqrt(max(curvature, 1 / c))  # ≤ √c: h'' ≤ −1/c everywhere
    outer = 40 * math.sqrt(c)  # h ≤ peak − (τ − τ*)²/(2c): nothing left beyond
    inner = min(10 * width, outer)
    edges = [mode - outer, mode - inner, mode + inner, mode + outer]
    total = 0.0
    for a, b in itertools.pairwise(edges):
        if b > a:
            total += integrate.quad(
                lambda t: math.exp(h(t) - peak), a, b, epsabs=0, epsrel=1e-12, limit=500
            )[0]
    return math.log(k) + peak + math.log(total)


def reference_md_log_prob(eta: np.ndarray, alpha: np.ndarray, y: np.ndarray) -> float:
    on = y > 0
    s = float(np.sum(np.logaddexp(0.0, eta)))
    log_face = float(np.sum(eta[on])) - s - math.log(-math.expm1(-s))
    if on.sum() == 1:
        return log_face
    a = alpha[on]
    log_dir = special.gammaln(a.sum()) - special.gammaln(a).sum()
    return log_face + float(log_dir + np.sum((a - 1) * np.log(y[on])))


# ---------------------------------------------------------------------------------------------
# Timing.


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter  # set from --clock


def interleaved_ms(
    runs: list[tuple[Callable[[], object], Callable[[object], object]]], repeat: int
) -> list[tuple[float, float]]:
    """Median and minimum time (ms) of each ``(fn, sync)`` after a warm-up call of each.

    The repetitions are interleaved (ours, ours on JAX, the peer, ours, ...) so that a change
    of load on a shared machine falls on every entry alike.
    """
    for fn, sync in runs:
        sync(fn())  # warm-up (compilation, caches)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for spent, (fn, sync) in zip(times, runs, strict=True):
            start = clock()
            sync(fn())
            spent.append(clock() - start)
    return [(1e3 * statistics.median(spent), 1e3 * min(spent)) for spent in times]


def no_sync(x: object) -> object:
    return x


def gs_parameters(batch: int, K: int, dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """loc ~ N(0, 1), scale ~ U(0.5, 1.5); y ~ GaussianSparsemax(loc, scale) (its own sampler)."""
    rng = np.random.default_rng(1000 * K + batch)
    loc = rng.standard_normal((batch, K))
    scale = rng.uniform(0.5, 1.5, (batch, K))
    z = loc + scale * rng.standard_normal((batch, K))
    y = ma.sparsemax(z.astype(dtype))
    return loc.astype(dtype), scale.astype(dtype), np.asarray(y)


def md_parameters(batch: int, K: int, dtype: np.dtype, low: float = 0.5, high: float = 2.0):
    """face_logits η ~ N(0, 1.5²), concentration α ~ U(low, high)."""
    rng = np.random.default_rng(7 + 1000 * K + batch)
    eta = 1.5 * rng.standard_normal((batch, K))
    alpha = rng.uniform(low, high, (batch, K))
    return eta.astype(dtype), alpha.astype(dtype)


def time_gs(batch: int, K: int, dtype: np.dtype, repeat: int) -> tuple[object, ...]:
    loc, scale, y = gs_parameters(batch, K, dtype)
    tl, ts, ty = (torch.from_numpy(a) for a in (loc, scale, y))

    def torch_run(log_prob: Callable) -> Callable[[], object]:
        def run() -> object:
            l_, s_ = tl.clone().requires_grad_(), ts.clone().requires_grad_()
            log_prob(l_, s_, ty).sum().backward()
            return l_.grad, s_.grad

        return run

    ours = torch_run(lambda l_, s_, y_: ma.GaussianSparsemax(l_, s_).log_prob(y_))
    peer = torch_run(authors_gs_log_prob)
    grad = jax.jit(
        jax.value_and_grad(
            lambda l_, s_, y_: jnp.sum(ma.GaussianSparsemax(l_, s_).log_prob(y_)), argnums=(0, 1)
        )
    )
    jl, js, jy = (jnp.asarray(a) for a in (loc, scale, y))
    ours_ms, jax_ms, peer_ms = interleaved_ms(
        [(ours, no_sync), (lambda: grad(jl, js, jy), jax.block_until_ready), (peer, no_sync)],
        repeat,
    )
    mean_face = float((y > 0).sum(-1).mean())
    return ours_ms, jax_ms, peer_ms, mean_face


def time_md(batch: int, K: int, dtype: np.dtype, repeat: int) -> tuple[object, ...]:
    eta, alpha = md_parameters(batch, K, dtype)
    te, ta = torch.from_numpy(eta), torch.from_numpy(alpha)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    def ours() -> object:
        e_, a_ = te.clone().requires_grad_(), ta.clone().requires_grad_()
        d = ma.MixedDirichlet(e_, a_)
        d.log_prob(d.rsample(generator)).sum().backward()
        return e_.grad, a_.grad

    faces = []

    def peer() -> object:
        w_, a_ = (te / 2).requires_grad_(), ta.clone().requires_grad_()
        _, log_p, face = authors_md_rsample_log_prob(w_, a_)
        log_p.sum().backward()
        faces.append(face)
        return w_.grad, a_.grad

    def jax_loss(e_: jax.Array, a_: jax.Array, key: jax.Array) -> jax.Array:
        d = ma.MixedDirichlet(e_, a_)
        return jnp.sum(d.log_prob(d.rsample(key)))

    grad = jax.jit(jax.value_and_grad(jax_loss, argnums=(0, 1)))
    je, ja = jnp.asarray(eta), jnp.asarray(alpha)
    keys = iter(jax.random.split(jax.random.key(0), repeat + 1))
    ours_ms, jax_ms, peer_ms = interleaved_ms(
        [
            (ours, no_sync),
            (lambda: grad(je, ja, next(keys)), jax.block_until_ready),
            (peer, no_sync),
        ],
        repeat,
    )
    mean_face = float(torch.stack(faces).sum(-1).float().mean())
    return ours_ms, jax_ms, peer_ms, mean_face


# ---------------------------------------------------------------------------------------------
# Accuracy.


def errors(values: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    err = np.abs(values.astype(np.float64) - reference)
    return float(err.max()), float(np.median(err))


def gs_accuracy(K: int, points: int) -> list[str]:
    loc, scale, y = gs_parameters(256, K, np.float64)
    loc, scale, y = loc[:points], scale[:points], y[:points]
    reference = np.array([reference_gs_log_prob(*row) for row in zip(loc, scale, y, strict=True)])
    sizes = (y > 0).sum(-1)
    lines = []
    for dtype in (np.float64, np.float32):
        tl, ts, ty = (torch.from_numpy(a.astype(dtype)) for a in (loc, scale, y))
        # The float32 runs evaluate at the float32-rounded point; so does the reference.
        ref = reference
        if dtype == np.float32:
            ref = np.array(
                [
                    reference_gs_log_prob(*(a.astype(np.float64) for a in row))
                    for row in zip(tl.numpy(), ts.numpy(), ty.numpy(), strict=True)
                ]
            )
        with torch.no_grad():
            ours = ma.GaussianSparsemax(tl, ts).log_prob(ty).numpy()
            peer = authors_gs_log_prob(tl, ts, ty).numpy()
            check = ma.GaussianSparsemax(tl, ts, num_nodes=128).log_prob(ty).numpy()
        # JAX eagerly (no jit: compiling per dtype and K costs more than these few points).
        jl, js, jy = (jnp.asarray(t.numpy()) for t in (tl, ts, ty))
        jax_ours = np.asarray(ma.GaussianSparsemax(jl, js).log_prob(jy))
        o, j, p, c = (errors(v, ref) for v in (ours, jax_ours, peer, check))
        lines.append(
            f"| GaussianSparsemax | {K} | {np.dtype(dtype).name} | {points} "
            f"(|F| {sizes.min()}–{sizes.max()}) | {o[0]:.1e} / {o[1]:.1e} | "
            f"{j[0]:.1e} / {j[1]:.1e} | {p[0]:.1e} / {p[1]:.1e} | {c[0]:.1e} |"
        )
    return lines


def md_accuracy(K: int, points: int) -> list[str]:
    eta, alpha = md_parameters(256, K, np.float64)
    eta, alpha = eta[:points], alpha[:points]
    torch.manual_seed(1)
    with torch.no_grad():
        y, _, _ = authors_md_rsample_log_prob(torch.from_numpy(eta / 2), torch.from_numpy(alpha))
    y = y.numpy()
    lines = []
    for dtype in (np.float64, np.float32):
        te, ta, ty = (torch.from_numpy(a.astype(dtype)) for a in (eta, alpha, y))
        ref = np.array(
            [
                reference_md_log_prob(*(a.astype(np.float64) for a in row))
                for row in zip(te.numpy(), ta.numpy(), ty.numpy(), strict=True)
            ]
        )
        with torch.no_grad():
            ours = ma.MixedDirichlet(te, ta).log_prob(ty).numpy()
            peer_values = authors_face_values(te / 2)[0][0]
            mask = ty > 0
            peer = (torch.where(mask, te / 2, -te / 2).sum(-1) - peer_values).numpy()
            a1 = torch.where(mask, ta, torch.ones_like(ta))
            log_beta = torch.where(mask, torch.lgamma(a1), torch.zeros_like(a1)).sum(-1)
            log_beta = log_beta - torch.lgamma(torch.where(mask, ta, torch.zeros_like(ta)).sum(-1))
            kernel = torch.where(mask, (a1 - 1) * torch.log(ty), torch.zeros_like(ty)).sum(-1)
            peer = peer + (kernel - log_beta).numpy()
        je, ja, jy = (jnp.asarray(t.numpy()) for t in (te, ta, ty))
        jax_ours = np.asarray(ma.MixedDirichlet(je, ja).log_prob(jy))
        o, j, p = (errors(v, ref) for v in (ours, jax_ours, peer))
        sizes = (y > 0).sum(-1)
        lines.append(
            f"| MixedDirichlet | {K} | {np.dtype(dtype).name} | {points} "
            f"(|F| {sizes.min()}–{sizes.max()}) | {o[0]:.1e} / {o[1]:.1e} | "
            f"{j[0]:.1e} / {j[1]:.1e} | {p[0]:.1e} / {p[1]:.1e} | – |"
        )
    return lines


def load_average() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def library_version() -> str:
    try:
        here = os.path.dirname(os.path.abspath(ma.__file__))
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=False,
        )
        commit = out.stdout.strip() or "not a git checkout"
        return commit + (" + uncommitted changes" if dirty.stdout.strip() else "")
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 256 only, 3 repetitions")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per entry (median)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--points", type=int, default=50, help="points per accuracy row")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: CPU time of the process, all threads (time.process_time), "
        "less sensitive to other processes competing for the cores",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch intra-op threads (JAX keeps its own pool)"
    )
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    repeat = 3 if args.quick else args.repeat
    batches = BATCHES[:1] if args.quick else BATCHES
    points = min(args.points, 10) if args.quick else args.points
    dtype = np.dtype(args.dtype)

    torch.set_num_threads(args.threads)
    print(
        f"# mixedarray autograd benchmark: ours vs the authors' formulas in plain torch\n\n"
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__} ({args.threads} threads), jax {jax.__version__}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}; "
        f"mixedarray from {ma.__file__} ({library_version()}).\n"
        f"Times ({args.clock} clock): forward+backward, {dtype.name}, median (minimum) of "
        f"{repeat} interleaved runs after a warm-up; speed-up = authors' / ours, of the medians "
        f"(of the minima).  Gaussian-Sparsemax: loc ~ N(0, 1), scale ~ U(0.5, 1.5), y drawn "
        f"from the distribution; ours 32 Gauss–Hermite nodes, authors {QUADRATURE_POINTS}-point "
        f"quantile trapezoid.  Mixed Dirichlet: η ~ N(0, 1.5²), α ~ U(0.5, 2), one rsample per "
        f"row and its log_prob.  Load average at start: {load_average()}.\n"
    )
    print(
        "| work | B×K | mean \\|F\\| | ours torch (ms) | ours JAX jit (ms) | authors torch (ms) "
        "| speed-up torch | speed-up JAX |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, timer in (
        ("GaussianSparsemax.log_prob fwd+bwd", time_gs),
        ("MixedDirichlet rsample+log_prob fwd+bwd", time_md),
    ):
        for K in KS:
            for batch in batches:
                ours, on_jax, peer, mean_face = timer(batch, K, dtype, repeat)
                cells = " | ".join(f"{med:.2f} ({low:.2f})" for med, low in (ours, on_jax, peer))
                print(
                    f"| {label} | {batch}×{K} | {mean_face:.1f} | {cells} | "
                    f"{peer[0] / ours[0]:.1f}× ({peer[1] / ours[1]:.1f}×) | "
                    f"{peer[0] / on_jax[0]:.1f}× ({peer[1] / on_jax[1]:.1f}×) |",
                    flush=True,
                )

    print(
        "\nAccuracy of log p: max / median absolute error (nats) against an independent "
        "float64 reference at the same points (Gaussian-Sparsemax: scipy.integrate.quad per "
        "point; Mixed Dirichlet: closed form in NumPy/SciPy float64).  Inputs rounded to the "
        "row's dtype; the reference is evaluated at the rounded inputs.\n"
    )
    print(
        "| distribution | K | dtype | points (face sizes) | ours torch max / median "
        "| ours JAX max / median | authors max / median | ours, 128 nodes, max |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for K in KS:
        for line in gs_accuracy(K, points):
            print(line, flush=True)
    for K in KS:
        for line in md_accuracy(K, points):
            print(line, flush=True)
    print(f"\nLoad average at the end: {load_average()} (other processes share the cores).")


if __name__ == "__main__":
    main()
