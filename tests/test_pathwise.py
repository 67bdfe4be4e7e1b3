r"""Pathwise (reparameterised) gradients of ``rsample``, verified (paper-notes §6–§8).

For every distribution with a pathwise sampler and every continuous parameter θ, the estimate
``mean_s ∇_θ g(y_s)``, ``y_s = d.rsample(...)``, of :math:`\nabla_\theta E[g(Y)]` (g smooth:
``Σ c_k y_k² + Σ d_k y_k``) is checked on torch (float64) and JAX (x64) against

* central finite differences of the same Monte Carlo average with common random numbers (the
  same seed at θ ± h).  The sample-and-project maps are a.e. differentiable in θ, so these agree
  with the autograd gradient sample by sample, which is checked too: this verifies the
  derivative rules along the sampling path;
* an *independent* reference, where one exists: the exact expectation by numerical integration
  (K = 2: Gaussian-Sparsemax is a clipped Gaussian, Hard Concrete, K-D Hard Concrete and
  Gumbel-Softmax are functions of one logistic variable) differentiated by central differences
  in SciPy; for Gaussian-Sparsemax with K = 3 the Gaussian score identity
  :math:`\nabla_\mu E[h(Z)] = E[h(Z)(Z - \mu)/\sigma^2]` in NumPy; for the Mixed Dirichlet the
  closed form ``Σ_f P_F(f) E_{Dir(α_f)}[g]`` over the 7 faces (no finite differences of the
  sampler there: the Gamma samplers are rejection samplers, whose path derivative at fixed noise
  is not the implicit reparameterisation gradient and is biased, by about 1 % here on torch).

Statistical checks: seeded, within 4.5 standard errors (of the gradient estimate, from the
per-replicate gradients), each standard error under 3 % of the reference so that the planted
wrong estimate — the right one scaled by 1.2 — must fail on every coordinate.

Also: MixedDirichlet's ``face_logits`` get no pathwise gradient and its docstring points to the
score-function helper (:mod:`mixedarray.gradients`); the pathwise gradient of a Monte Carlo
entropy of Gaussian-Sparsemax is biased (paper-notes §6: 0.1742 instead of the exact 0.2135,
K = 2, μ = 0.3, s = 0.7), the exact-formula gradient is not, and the documentation says so; and
the Monte Carlo gradient of an ELBO-like objective ``E_q[g] − KL(q‖p)`` (pathwise for the
concentration, score function for the face logits, exact KL) matches the exact gradient.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import integrate, special, stats

import mixedarray as ma
from mixedarray import _backend
from mixedarray._backend import array_namespace

LIBRARIES = ["torch", "jax"]
Z_MAX = 4.5  # agreement: |estimate − reference| < Z_MAX standard errors
WRONG = 1.2  # the planted wrong estimate: the right one scaled by this factor
MAX_RELATIVE_STDERR = 0.03  # < 10 %, and small enough for WRONG to be rejected
FD_STEP = 1e-6  # common-random-number finite differences of the sampler (float64)
REF_STEP = 1e-5  # central differences of the references (quadrature to ~1e-13)


# ---------------------------------------------------------------------------------------------
# Backends: torch float64 and JAX x64.


def _torch() -> Any:
    torch = pytest.importorskip("torch")
    return torch


def _jax() -> Any:
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _rng(library: str, seed: int) -> Any:
    """The library's own generator: an int seed on torch (a fresh generator), a key on JAX."""
    return seed if library == "torch" else _jax().random.key(seed)


def _array(library: str, a: Any) -> Any:
    a = np.asarray(a, dtype=np.float64)
    if library == "torch":
        return _torch().tensor(a, dtype=_torch().float64)
    return _jax().numpy.asarray(a, dtype=np.float64)


def _host(x: Any) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _gradients(
    library: str,
    objective: Callable[[dict[str, Any]], Any],
    params: dict[str, np.ndarray],
    wrt: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """Gradients of the scalar ``objective(arrays)`` w.r.t. the parameters named in ``wrt``."""
    if library == "torch":
        torch = _torch()
        arrays = {k: _array(library, v).requires_grad_(k in wrt) for k, v in params.items()}
        grads = torch.autograd.grad(objective(arrays), [arrays[k] for k in wrt], allow_unused=True)
        return {
            k: np.zeros(params[k].shape) if g is None else _host(g)
            for k, g in zip(wrt, grads, strict=True)
        }
    jax = _jax()
    fixed = {k: _array(library, v) for k, v in params.items() if k not in wrt}
    free = {k: _array(library, params[k]) for k in wrt}
    grads = jax.jit(jax.grad(lambda p: objective({**fixed, **p})))(free)
    return {k: _host(g) for k, g in grads.items()}


# ---------------------------------------------------------------------------------------------
# The test function g and the cases.


def quadratic(c: np.ndarray, d: np.ndarray) -> Callable[[Any], Any]:
    """``g(y) = Σ_k c_k y_k² + Σ_k d_k y_k`` on any backend (and on NumPy points)."""

    def g(y: Any) -> Any:
        xp = array_namespace(y)
        device = _backend.device(y)
        cc = xp.asarray(c.tolist(), dtype=y.dtype, device=device)
        dd = xp.asarray(d.tolist(), dtype=y.dtype, device=device)
        return xp.sum(cc * y * y + dd * y, axis=-1)

    return g


def _g_numpy(c: np.ndarray, d: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sum(c * y * y + d * y, axis=-1)


class Case:
    """A distribution, its parameters (unbatched NumPy arrays), g, and sample sizes."""

    def __init__(
        self,
        build: Callable[..., Any],
        params: dict[str, Any],
        c: Any,
        d: Any,
        *,
        replicates: int = 40_000,
        draws: int = 1,
        continuous: tuple[str, ...] | None = None,
    ) -> None:
        self.build = build
        self.params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        self.c, self.d = np.asarray(c, dtype=np.float64), np.asarray(d, dtype=np.float64)
        self.g = quadratic(self.c, self.d)
        self.replicates, self.draws = replicates, draws
        self.continuous = tuple(self.params) if continuous is None else continuous

    def batched(self) -> dict[str, np.ndarray]:
        """Every parameter repeated over a leading axis of replicates: per-replicate gradients."""
        r = self.replicates
        return {k: np.broadcast_to(v, (r, *v.shape)).copy() for k, v in self.params.items()}

    def objective(self, library: str, seed: int) -> Callable[[dict[str, Any]], Any]:
        """``Σ_r mean_s g(y_rs)``: its gradient w.r.t. the batched parameters is per replicate."""
        rng = _rng(library, seed)

        def objective(arrays: dict[str, Any]) -> Any:
            y = self.build(**arrays).rsample(rng, (self.draws,))
            xp = array_namespace(y)
            return xp.sum(xp.mean(self.g(y), axis=0))

        return objective


CASES = {
    # Gaussian-Sparsemax, K = 3: the point of paper-notes §6 (every face has positive mass).
    "gaussian_sparsemax": Case(
        ma.GaussianSparsemax,
        {"loc": [0.4, 0.1, -0.3], "scale": [0.5, 0.8, 0.3]},
        [1.0, -2.0, 3.0],
        [-0.5, 0.8, 0.2],
    ),
    "gaussian_sparsemax_k2": Case(
        ma.GaussianSparsemax,
        {"loc": [0.1, 0.0], "scale": [0.5, 0.5]},
        [2.0, 1.0],
        [0.3, -0.4],
    ),
    "hard_concrete": Case(
        ma.HardConcrete,
        {"logits": 0.3, "temperature": 0.5, "low": -0.2, "high": 1.15},
        [1.5, -0.7],
        [0.3, -0.4],
    ),
    "kd_hard_concrete": Case(
        ma.KDHardConcrete,
        {"logits": [0.5, -0.2, 0.1], "temperature": 0.6, "scale": 1.3},
        [1.0, -2.0, 3.0],
        [-0.5, 0.8, 0.2],
    ),
    "kd_hard_concrete_k2": Case(
        ma.KDHardConcrete,
        {"logits": [0.3, -0.4], "temperature": 0.5, "scale": 1.2},
        [1.5, -0.7],
        [0.3, -0.4],
    ),
    "gumbel_softmax": Case(
        ma.GumbelSoftmax,
        {"logits": [0.5, -0.2, 0.1], "temperature": 0.7},
        [1.0, -2.0, 3.0],
        [-0.5, 0.8, 0.2],
    ),
    "gumbel_softmax_k2": Case(
        ma.GumbelSoftmax,
        {"logits": [0.3, -0.4], "temperature": 0.5},
        [1.5, -0.7],
        [0.3, -0.4],
    ),
    # Mixed Dirichlet: pathwise in the concentration only (face logits: score function, below).
    # 4 draws × 5000 replicates, one draw shared by the pathwise, face-logit and ELBO tests
    # (mixed_dirichlet_gradients), so that JAX compiles its Gamma sampler and derivative once.
    "mixed_dirichlet": Case(
        ma.MixedDirichlet,
        {"face_logits": [0.3, -0.5, 1.1], "concentration": [0.7, 1.5, 2.0]},
        [1.0, -2.0, 3.0],
        [-0.5, 0.8, 0.2],
        replicates=5_000,
        draws=4,
        continuous=("concentration",),
    ),
}

SEED = 20240607


@functools.cache
def pathwise_samples(library: str, name: str) -> dict[str, np.ndarray]:
    """Per-replicate pathwise gradients ``∇_θ mean_s g(y_s)``, shape ``(R, *θ.shape)``.

    For the Mixed Dirichlet the face logits are included (their gradient must be 0).
    """
    if name == "mixed_dirichlet":
        return mixed_dirichlet_gradients(library)["pathwise"]
    case = CASES[name]
    return _gradients(library, case.objective(library, SEED), case.batched(), tuple(case.params))


@functools.cache
def crn_differences(library: str, name: str) -> dict[str, np.ndarray]:
    """Per-replicate central differences of ``mean_s g(y_s)`` with common random numbers."""
    case = CASES[name]
    base = case.batched()
    objective_values = _values(library, case)
    out = {}
    for key in case.continuous:
        shape = case.params[key].shape
        diffs = np.empty((case.replicates, *shape))
        for index in np.ndindex(shape):
            step = np.zeros(shape)
            step[index] = FD_STEP
            plus = objective_values({**base, key: base[key] + step})
            minus = objective_values({**base, key: base[key] - step})
            diffs[(slice(None), *index)] = (plus - minus) / (2 * FD_STEP)
        out[key] = diffs
    return out


def _values(library: str, case: Case) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """Per-replicate ``mean_s g(y_s)`` at the given batched parameters, always the same seed."""

    def values(params: dict[str, np.ndarray]) -> np.ndarray:
        arrays = {k: _array(library, v) for k, v in params.items()}
        y = case.build(**arrays).rsample(_rng(library, SEED), (case.draws,))
        xp = array_namespace(y)
        return _host(xp.mean(case.g(y), axis=0))

    return values


def z_scores(samples: np.ndarray, reference: np.ndarray, extra_stderr: Any = 0.0) -> np.ndarray:
    """``|mean − reference| / stderr`` per coordinate of per-replicate estimates.

    Asserts first that every standard error is under ``MAX_RELATIVE_STDERR`` of the reference,
    so that the check has the power to reject a wrong estimate.
    """
    mean = samples.mean(axis=0)
    stderr = np.sqrt(samples.var(axis=0, ddof=1) / len(samples) + np.square(extra_stderr))
    assert np.all(stderr < MAX_RELATIVE_STDERR * np.abs(reference)), (stderr, reference)
    return np.abs(mean - reference) / stderr


def check(samples: np.ndarray, reference: np.ndarray, extra_stderr: Any = 0.0) -> None:
    """Right within Z_MAX standard errors on every coordinate; WRONG× rejected on every one."""
    right = z_scores(samples, reference, extra_stderr)
    wrong = z_scores(WRONG * samples, reference, extra_stderr)
    assert np.all(right < Z_MAX), (right, samples.mean(axis=0), reference)
    assert np.all(wrong > Z_MAX), (wrong, samples.mean(axis=0), reference)


# ---------------------------------------------------------------------------------------------
# 1a. Pathwise gradient = finite differences of the sampler with common random numbers.

CRN_CASES = ["gaussian_sparsemax", "hard_concrete", "kd_hard_concrete", "gumbel_softmax"]


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("name", CRN_CASES)
def test_pathwise_gradient_matches_common_random_number_differences(library, name):
    grads, diffs = pathwise_samples(library, name), crn_differences(library, name)
    for key in CASES[name].continuous:
        path, fd = grads[key], diffs[key]
        # Sample by sample: the maps are a.e. differentiable; only draws within FD_STEP of a
        # kink (a face boundary of the projection, the clip of the gate) may differ.
        error = np.abs(path - fd).reshape(len(path), -1).max(axis=1)
        assert np.mean(error > 1e-7 * (1 + np.abs(path).reshape(len(path), -1).max(axis=1))) < 1e-3
        # The averages, statistically (the CRN difference as the reference).
        check(path.reshape(len(path), -1), fd.mean(axis=0).reshape(-1))


# ---------------------------------------------------------------------------------------------
# 1b. Independent references: numerical integration (K = 2), the Gaussian score identity
# (Gaussian-Sparsemax K = 3), closed forms (Mixed Dirichlet).

_QUAD = {"epsabs": 1e-13, "epsrel": 1e-12, "limit": 200}


def central_differences(
    fun: Callable[..., float], params: dict[str, np.ndarray], h: float = REF_STEP
) -> dict[str, np.ndarray]:
    """``∂fun/∂θ`` for every entry of every parameter, by central differences."""
    out = {}
    for key, value in params.items():
        grad = np.empty(value.shape)
        for index in np.ndindex(value.shape):
            step = np.zeros(value.shape)
            step[index] = h
            plus = fun(**{**params, key: value + step})
            minus = fun(**{**params, key: value - step})
            grad[index] = (plus - minus) / (2 * h)
        out[key] = grad
    return out


def _on_edge(case: Case) -> Callable[[float], float]:
    """g at the K = 2 point (y, 1 − y)."""
    return lambda y: float(_g_numpy(case.c, case.d, np.array([y, 1.0 - y])))


def clipped_gaussian_expectation(case: Case, loc: np.ndarray, scale: np.ndarray) -> float:
    """K = 2 Gaussian-Sparsemax: ``sparsemax(z)₁ = clip((z₁ − z₂ + 1)/2, 0, 1)``, and
    ``(z₁ − z₂ + 1)/2 ~ N(μ, s²)`` with ``μ = (loc₁ − loc₂ + 1)/2``, ``s = √(σ₁² + σ₂²)/2``."""
    g = _on_edge(case)
    mu, s = (loc[0] - loc[1] + 1) / 2, math.hypot(scale[0], scale[1]) / 2
    inner, _ = integrate.quad(lambda y: g(y) * stats.norm.pdf(y, mu, s), 0.0, 1.0, **_QUAD)
    return stats.norm.cdf(-mu / s) * g(0.0) + stats.norm.sf((1 - mu) / s) * g(1.0) + inner


def logistic_gate_expectation(
    case: Case, log_alpha: float, beta: float, low: float, high: float, clip: bool = True
) -> float:
    """``E[g]`` for the gate ``clip(low + (high − low)·σ((L + log α)/β), 0, 1)``, L logistic.

    Integrated over L (density σ(t)σ(−t)); with ``clip`` the gate is 0 below
    ``t₀ = β log(−low/high) − log α`` and 1 above ``t₁ = β log((1 − low)/(high − 1)) − log α``.
    """
    g = _on_edge(case)

    def integrand(t: float) -> float:
        return g(low + (high - low) * special.expit((t + log_alpha) / beta)) * stats.logistic.pdf(t)

    if not clip:
        inner, _ = integrate.quad(integrand, -np.inf, np.inf, **_QUAD)
        return inner
    t0 = beta * math.log(-low / high) - log_alpha
    t1 = beta * math.log((1 - low) / (high - 1)) - log_alpha
    inner, _ = integrate.quad(integrand, t0, t1, **_QUAD)
    return special.expit(t0) * g(0.0) + special.expit(-t1) * g(1.0) + inner


def _hard_concrete_reference(case: Case) -> dict[str, np.ndarray]:
    def fun(logits, temperature, low, high):
        return logistic_gate_expectation(case, float(logits), temperature, low, high)

    return central_differences(fun, case.params)


def _kd_hard_concrete_reference(case: Case) -> dict[str, np.ndarray]:
    """K = 2: ``sparsemax(λ[s, 1 − s])₁ = clip(λ s − (λ − 1)/2, 0, 1)``,
    ``s = σ((ℓ₁ − ℓ₂ + G₁ − G₂)/τ)`` and ``G₁ − G₂`` is logistic."""

    def fun(logits, temperature, scale):
        low, high = -(scale - 1) / 2, (scale + 1) / 2
        return logistic_gate_expectation(case, logits[0] - logits[1], temperature, low, high)

    return central_differences(fun, case.params)


def _gumbel_softmax_reference(case: Case) -> dict[str, np.ndarray]:
    """K = 2: ``softmax((ℓ + G)/τ)₁ = σ((ℓ₁ − ℓ₂ + G₁ − G₂)/τ)``, no clip."""

    def fun(logits, temperature):
        return logistic_gate_expectation(
            case, logits[0] - logits[1], temperature, 0.0, 1.0, clip=False
        )

    return central_differences(fun, case.params)


def _sparsemax_numpy(z: np.ndarray) -> np.ndarray:
    """Sparsemax on the last axis by sorting (paper-notes §5), NumPy float64."""
    k = np.arange(1, z.shape[-1] + 1)
    ordered = -np.sort(-z, axis=-1)
    cumulative = np.cumsum(ordered, axis=-1)
    size = np.sum(1 + k * ordered > cumulative, axis=-1, keepdims=True)
    tau = (np.take_along_axis(cumulative, size - 1, axis=-1) - 1) / size
    return np.maximum(z - tau, 0.0)


def _gaussian_score_reference(case: Case) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``∂E[h(Z)]/∂μ = E[(h − b)(Z − μ)/σ²]``, ``∂/∂σ = E[(h − b)((Z − μ)²/σ³ − 1/σ)]`` for
    ``h = g∘sparsemax``, ``Z ~ N(μ, diag σ²)``: NumPy Monte Carlo, with its standard errors.

    No derivative of the projection enters; ``b`` (the mean of h over independent pilot draws)
    only lowers the variance.
    """
    mu, sigma = case.params["loc"], case.params["scale"]
    rng = np.random.default_rng(7)
    num, chunks = 500_000, 4

    def h(eps: np.ndarray) -> np.ndarray:
        return _g_numpy(case.c, case.d, _sparsemax_numpy(mu + sigma * eps))

    b = h(rng.standard_normal((num // 4, mu.size))).mean()
    scores = {"loc": [], "scale": []}
    for _ in range(chunks):
        eps = rng.standard_normal((num, mu.size))
        centred = (h(eps) - b)[:, None]
        scores["loc"].append(centred * eps / sigma)
        scores["scale"].append(centred * (eps * eps - 1) / sigma)
    means, stderrs = {}, {}
    for key, parts in scores.items():
        values = np.concatenate(parts)
        means[key] = values.mean(axis=0)
        stderrs[key] = values.std(axis=0, ddof=1) / math.sqrt(len(values))
    return means, stderrs


_FACES3 = [np.array(f, bool) for f in itertools.product([False, True], repeat=3) if any(f)]


def _face_probabilities(eta: np.ndarray) -> np.ndarray:
    """``P_F(f) ∝ exp(η·f)`` over the non-empty faces (independent Bernoulli(σ(η)) | f ≠ ∅)."""
    energies = np.array([eta[f].sum() for f in _FACES3])
    probs = np.exp(energies - energies.max())
    return probs / probs.sum()


def mixed_dirichlet_expectation(case: Case, face_logits, concentration) -> float:
    """``E[g] = Σ_f P_F(f) Σ_{i∈f} (c_i E[y_i²] + d_i E[y_i])`` with the Dirichlet moments
    ``E[y_i] = α_i/α_0``, ``E[y_i²] = α_i(α_i + 1)/(α_0(α_0 + 1))`` (1 at a vertex)."""
    total = 0.0
    for p, f in zip(_face_probabilities(face_logits), _FACES3, strict=True):
        a = concentration[f]
        a0 = a.sum()
        total += p * np.sum(case.c[f] * a * (a + 1) / (a0 * (a0 + 1)) + case.d[f] * a / a0)
    return total


def _mixed_dirichlet_reference(case: Case) -> dict[str, np.ndarray]:
    return central_differences(functools.partial(mixed_dirichlet_expectation, case), case.params)


@functools.cache
def independent_reference(name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(gradient, its standard error)`` per parameter, computed without the library."""
    case = CASES[name]
    if name == "gaussian_sparsemax":
        return _gaussian_score_reference(case)
    if name == "gaussian_sparsemax_k2":

        def fun(loc, scale):
            return clipped_gaussian_expectation(case, loc, scale)

        reference = central_differences(fun, case.params)
    else:
        reference = {
            "hard_concrete": _hard_concrete_reference,
            "kd_hard_concrete_k2": _kd_hard_concrete_reference,
            "gumbel_softmax_k2": _gumbel_softmax_reference,
            "mixed_dirichlet": _mixed_dirichlet_reference,
        }[name](case)
    return reference, {key: 0.0 for key in reference}


INDEPENDENT_CASES = [
    "gaussian_sparsemax",
    "gaussian_sparsemax_k2",
    "hard_concrete",
    "kd_hard_concrete_k2",
    "gumbel_softmax_k2",
    "mixed_dirichlet",
]


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("name", INDEPENDENT_CASES)
def test_pathwise_gradient_matches_an_independent_reference(library, name):
    reference, stderr = independent_reference(name)
    grads = pathwise_samples(library, name)
    for key in CASES[name].continuous:
        samples = grads[key].reshape(len(grads[key]), -1)
        check(samples, reference[key].reshape(-1), np.reshape(stderr[key], -1))


def test_references_agree_where_they_overlap():
    """Sanity of the references themselves, against plain NumPy sampling: the K = 2 K-D Hard
    Concrete is the logistic gate with the stretch ∓(λ ∓ 1)/2 (paper-notes §8), and the Mixed
    Dirichlet closed form is the mean over sampled faces and Dirichlet draws."""
    case = CASES["kd_hard_concrete_k2"]
    logits, tau, lam = case.params["logits"], case.params["temperature"], case.params["scale"]
    difference = float(logits[0] - logits[1])
    kd = logistic_gate_expectation(case, difference, tau, -(lam - 1) / 2, (lam + 1) / 2)
    rng = np.random.default_rng(3)
    gumbel = rng.gumbel(size=(400_000, 2))
    y = _sparsemax_numpy(lam * special.softmax((logits + gumbel) / tau, axis=-1))
    values = _g_numpy(case.c, case.d, y)
    assert abs(values.mean() - kd) < Z_MAX * values.std() / math.sqrt(len(values))

    case = CASES["mixed_dirichlet"]
    eta, alpha = case.params["face_logits"], case.params["concentration"]
    probs = _face_probabilities(eta)
    picks = rng.choice(len(_FACES3), size=200_000, p=probs)
    masks = np.array(_FACES3)[picks]
    gammas = np.where(masks, rng.standard_gamma(np.broadcast_to(alpha, masks.shape)), 0.0)
    values = _g_numpy(case.c, case.d, gammas / gammas.sum(axis=-1, keepdims=True))
    exact = mixed_dirichlet_expectation(case, eta, alpha)
    assert abs(values.mean() - exact) < Z_MAX * values.std() / math.sqrt(len(values))


# ---------------------------------------------------------------------------------------------
# 2. MixedDirichlet: no pathwise gradient for the face logits, and the docstring says so.


@pytest.mark.parametrize("library", LIBRARIES)
def test_face_logits_get_no_pathwise_gradient(library):
    grads = pathwise_samples(library, "mixed_dirichlet")
    np.testing.assert_array_equal(grads["face_logits"], 0.0)
    assert np.all(np.any(grads["concentration"] != 0, axis=0))  # the concentration does


def test_mixed_dirichlet_docstring_points_to_the_score_function_helper():
    doc = " ".join(ma.MixedDirichlet.__doc__.split())
    assert "face_logits" in doc
    assert "no pathwise gradient" in doc
    assert "score function" in doc
    assert "mixedarray.gradients" in doc or "expectation_surrogate" in doc, doc


# ---------------------------------------------------------------------------------------------
# 3. The pathwise gradient of a Monte Carlo entropy of Gaussian-Sparsemax is biased.

# K = 2 bit form μ = 0.3, s = 0.7 (paper-notes §6): μ = (loc₁ − loc₂ + 1)/2, s = √(σ₁² + σ₂²)/2.
BIT_MU, BIT_S = 0.3, 0.7
BIT_LOC = np.array([-0.2, 0.2])
BIT_SCALE = np.full(2, BIT_S * math.sqrt(2))


def bit_entropy(mu: float, s: float) -> float:
    """``H⊕ = −P₀ log P₀ − P₁ log P₁ − ∫₀¹ φ_s(y − μ) log φ_s(y − μ) dy`` by quadrature."""
    p0, p1 = stats.norm.cdf(-mu / s), stats.norm.sf((1 - mu) / s)
    inner, _ = integrate.quad(
        lambda y: -stats.norm.pdf(y, mu, s) * stats.norm.logpdf(y, mu, s), 0.0, 1.0, **_QUAD
    )
    return -p0 * math.log(p0) - p1 * math.log(p1) + inner


EXACT_DH_DMU = (bit_entropy(BIT_MU + REF_STEP, BIT_S) - bit_entropy(BIT_MU - REF_STEP, BIT_S)) / (
    2 * REF_STEP
)
EXACT_DH_DS = (bit_entropy(BIT_MU, BIT_S + REF_STEP) - bit_entropy(BIT_MU, BIT_S - REF_STEP)) / (
    2 * REF_STEP
)
# The expected reparameterised gradient of −log p(Y): 0 inside (y − μ = sε is fixed), and
# ∂/∂μ of −log Φ(−μ/s), −log Φ((μ − 1)/s) at the vertices, weighted by their masses.
REPARAMETERISED_DH_DMU = (
    stats.norm.pdf(BIT_MU / BIT_S) - stats.norm.pdf((1 - BIT_MU) / BIT_S)
) / BIT_S


def test_bias_reference_values():
    assert round(EXACT_DH_DMU, 4) == 0.2135
    assert round(REPARAMETERISED_DH_DMU, 4) == 0.1742


def _bit_distribution(arrays: dict[str, Any]) -> Any:
    return ma.GaussianSparsemax(arrays["loc"], arrays["scale"])


@pytest.mark.parametrize("library", LIBRARIES)
def test_exact_entropy_gradient(library):
    """``ma.entropy`` takes the K = 2 closed form (stderr 0), and its gradient is exact."""
    params = {"loc": BIT_LOC, "scale": BIT_SCALE}
    d = _bit_distribution({k: _array(library, v) for k, v in params.items()})
    estimate = ma.entropy(d, return_stderr=True)
    assert _host(estimate.stderr) == 0.0
    np.testing.assert_allclose(_host(estimate.value), bit_entropy(BIT_MU, BIT_S), rtol=1e-10)
    grads = _gradients(
        library, lambda a: ma.entropy(_bit_distribution(a)), params, ("loc", "scale")
    )
    # ∂μ/∂loc = (½, −½); ∂s/∂σ_k = σ_k/(4s).
    np.testing.assert_allclose(grads["loc"], [EXACT_DH_DMU / 2, -EXACT_DH_DMU / 2], rtol=1e-6)
    np.testing.assert_allclose(grads["scale"], EXACT_DH_DS * BIT_SCALE / (4 * BIT_S), rtol=1e-6)


def hard_concrete_entropy(logits, temperature, low, high) -> float:
    """Hard Concrete H⊕ from the Binary Concrete density (paper-notes §8), by quadrature in y:
    ``q(s) = β α s^{−β−1}(1−s)^{−β−1}/(α s^{−β} + (1−s)^{−β})²``, ``p(y) = q(s)/(ζ − γ)``."""
    alpha, beta, width = math.exp(logits), temperature, high - low

    def log_density(y: float) -> float:
        s = (y - low) / width
        log_q = (
            math.log(beta * alpha)
            - (beta + 1) * (math.log(s) + math.log1p(-s))
            - 2 * math.log(alpha * s**-beta + (1 - s) ** -beta)
        )
        return log_q - math.log(width)

    inner, _ = integrate.quad(lambda y: -math.exp(log_density(y)) * log_density(y), 0, 1, **_QUAD)
    p0 = special.expit(beta * math.log(-low / high) - logits)
    p1 = special.expit(logits - beta * math.log((1 - low) / (high - 1)))
    return -p0 * math.log(p0) - p1 * math.log(p1) + inner


@pytest.mark.parametrize("library", LIBRARIES)
def test_exact_hard_concrete_entropy_gradient(library):
    """``ma.entropy`` of Hard Concrete is its closed form (stderr 0) with the exact gradient."""
    params = CASES["hard_concrete"].params
    d = ma.HardConcrete(**{k: _array(library, v) for k, v in params.items()})
    estimate = ma.entropy(d, return_stderr=True)
    assert _host(estimate.stderr) == 0.0
    np.testing.assert_allclose(_host(estimate.value), hard_concrete_entropy(**params), rtol=1e-10)
    grads = _gradients(library, lambda a: ma.entropy(ma.HardConcrete(**a)), params, tuple(params))
    reference = central_differences(hard_concrete_entropy, params)
    for key in params:
        np.testing.assert_allclose(grads[key], reference[key], rtol=1e-6)


@pytest.mark.parametrize("library", LIBRARIES)
def test_pathwise_monte_carlo_entropy_gradient_is_biased(library):
    """``mean(−log p(rsample))``: its value is unbiased, its pathwise gradient is not."""
    num = 100_000
    rng = _rng(library, SEED)
    batched = {"loc": np.tile(BIT_LOC, (num, 1)), "scale": np.tile(BIT_SCALE, (num, 1))}

    def objective(arrays: dict[str, Any]) -> Any:
        d = _bit_distribution(arrays)
        xp = array_namespace(arrays["loc"])
        return xp.sum(-d.log_prob(d.rsample(rng)))

    grads = _gradients(library, objective, batched, ("loc",))
    per_sample = 2 * grads["loc"][:, 0]  # ∂/∂μ = 2 ∂/∂loc₁
    np.testing.assert_array_equal(grads["loc"][:, 0], -grads["loc"][:, 1])
    mean = per_sample.mean()
    stderr = per_sample.std(ddof=1) / math.sqrt(num)
    assert stderr < MAX_RELATIVE_STDERR * REPARAMETERISED_DH_DMU
    assert abs(mean - REPARAMETERISED_DH_DMU) < Z_MAX * stderr, (mean, stderr)
    assert abs(mean - EXACT_DH_DMU) > Z_MAX * stderr, (mean, stderr)  # the bias is detected
    # The value itself is an unbiased estimate of the entropy.
    d = _bit_distribution({k: _array(library, v) for k, v in batched.items()})
    values = _host(-d.log_prob(d.rsample(rng)))
    value_stderr = values.std(ddof=1) / math.sqrt(num)
    assert abs(values.mean() - bit_entropy(BIT_MU, BIT_S)) < Z_MAX * value_stderr


def _normalised(text: str | None) -> str:
    return " ".join((text or "").split()).lower()


def test_documentation_warns_of_the_bias():
    """The entropy documentation and the gradients module say that the pathwise gradient of a
    Monte Carlo entropy/KL estimate of a sample-and-project distribution is biased, and point
    to the exact forms."""
    information = importlib.import_module("mixedarray.information")
    gradients = importlib.import_module("mixedarray.gradients")
    for doc in (
        _normalised(information.__doc__) + " " + _normalised(ma.entropy.__doc__),
        _normalised(gradients.__doc__),
    ):
        assert "biased" in doc, doc
        assert "pathwise" in doc or "reparameteri" in doc, doc
        assert "exact" in doc, doc


# ---------------------------------------------------------------------------------------------
# 4. An ELBO-like objective: E_q[g] − KL(q‖p), Monte Carlo gradient vs the exact gradient.

PRIOR = {"face_logits": np.array([-0.8, -1.1, 0.8]), "concentration": np.array([1.3, 1.1, 2.5])}


def _dirichlet_kl(a: np.ndarray, b: np.ndarray) -> float:
    """``KL(Dir(a) ‖ Dir(b))`` (0 on a vertex)."""
    if a.size == 1:
        return 0.0
    a0, b0 = a.sum(), b.sum()
    return float(
        special.gammaln(a0)
        - special.gammaln(a).sum()
        - special.gammaln(b0)
        + special.gammaln(b).sum()
        + np.sum((a - b) * (special.digamma(a) - special.digamma(a0)))
    )


def _dirichlet_entropy(a: np.ndarray) -> float:
    """Differential entropy of ``Dir(a)`` in free coordinates (0 on a vertex)."""
    if a.size == 1:
        return 0.0
    a0, k = a.sum(), a.size
    return float(
        special.gammaln(a).sum()
        - special.gammaln(a0)
        + (a0 - k) * special.digamma(a0)
        - np.sum((a - 1) * special.digamma(a))
    )


def mixed_dirichlet_kl(face_logits, concentration, prior) -> float:
    """``KL⊕(q‖p)``: for a Mixed Dirichlet p, ``KL(P_F‖Q_F) + Σ_f P_F(f) KL(Dir α_f ‖ Dir β_f)``;
    for ``MaxEntMixed(3)`` (constant density 1/6.5 w.r.t. μ⊕), ``log 6.5 − H⊕(q)``."""
    probs = _face_probabilities(face_logits)
    if prior == "maxent":
        entropy = -np.sum(probs * np.log(probs))
        for p, f in zip(probs, _FACES3, strict=True):
            entropy += p * _dirichlet_entropy(concentration[f])
        return math.log(6.5) - entropy
    prior_probs = _face_probabilities(PRIOR["face_logits"])
    total = float(np.sum(probs * np.log(probs / prior_probs)))
    for p, f in zip(probs, _FACES3, strict=True):
        total += p * _dirichlet_kl(concentration[f], PRIOR["concentration"][f])
    return total


def _prior(prior: str, like: Any, batch: tuple[int, ...]) -> Any:
    if prior == "maxent":
        return ma.MaxEntMixed(3, like=like, batch_shape=batch)
    library = "torch" if type(like).__module__.startswith("torch") else "jax"
    xp = array_namespace(like)
    arrays = {k: xp.broadcast_to(_array(library, v), (*batch, 3)) for k, v in PRIOR.items()}
    return ma.MixedDirichlet(arrays["face_logits"], arrays["concentration"])


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("prior", ["mixed_dirichlet", "maxent"])
def test_exact_kl_and_its_gradient(library, prior):
    """``ma.kl_divergence(q, p)`` takes the exact route (stderr 0), with the exact gradient."""
    case = CASES["mixed_dirichlet"]
    arrays = {k: _array(library, v) for k, v in case.params.items()}
    q = ma.MixedDirichlet(**arrays)
    estimate = ma.kl_divergence(q, _prior(prior, arrays["face_logits"], ()), return_stderr=True)
    assert _host(estimate.stderr) == 0.0
    exact = mixed_dirichlet_kl(*case.params.values(), prior)
    np.testing.assert_allclose(_host(estimate.value), exact, rtol=1e-10)

    def objective(a: dict[str, Any]) -> Any:
        return ma.kl_divergence(ma.MixedDirichlet(**a), _prior(prior, a["face_logits"], ()))

    grads = _gradients(library, objective, case.params, tuple(case.params))
    reference = central_differences(lambda **p: mixed_dirichlet_kl(**p, prior=prior), case.params)
    for key in case.params:
        np.testing.assert_allclose(grads[key], reference[key], rtol=1e-6, atol=1e-9)


def elbo(case: Case, face_logits, concentration) -> float:
    return mixed_dirichlet_expectation(case, face_logits, concentration) - mixed_dirichlet_kl(
        face_logits, concentration, "mixed_dirichlet"
    )


def _mixed_dirichlet_objectives(arrays: dict[str, Any], rng: Any) -> dict[str, Any]:
    """Two estimates of ``E_q[g]`` on ONE draw ``y = q.rsample(rng, (S,))`` of the batched
    Mixed Dirichlet q (one draw: JAX compiles its Gamma sampler and derivative once), summed
    over replicates:

    * ``"pathwise"``: ``mean_s g(y_s)``, differentiated through ``rsample`` alone (no gradient
      reaches the face logits: the planted wrong estimator of the ELBO test);
    * ``"surrogate"``: the unbiased estimator, pathwise for ``Y | F`` plus the score function of
      the face, ``log P_F(supp y)``, with the leave-one-out baseline
      (:func:`mixedarray.score_function_surrogate`, exactly what
      :func:`mixedarray.expectation_surrogate` builds: checked below).
    """
    case = CASES["mixed_dirichlet"]
    q = ma.MixedDirichlet(**arrays)
    xp = array_namespace(arrays["face_logits"])
    y = q.rsample(rng, (case.draws,))
    values = case.g(y)
    surrogate = ma.score_function_surrogate(q.face_log_prob(ma.faces.support(y)), values)
    return {"pathwise": xp.sum(xp.mean(values, axis=0)), "surrogate": xp.sum(surrogate)}


@functools.cache
def mixed_dirichlet_gradients(library: str) -> dict[str, dict[str, np.ndarray]]:
    """Per-replicate gradients (w.r.t. the batched ``face_logits`` and ``concentration``) of the
    three objectives of :func:`_mixed_dirichlet_objectives`."""
    case = CASES["mixed_dirichlet"]
    rng = _rng(library, SEED)
    keys = tuple(case.params)
    names = ("pathwise", "surrogate")
    batched = case.batched()
    if library == "torch":
        torch = _torch()
        arrays = {k: _array(library, v).requires_grad_() for k, v in batched.items()}
        objectives = _mixed_dirichlet_objectives(arrays, rng)
        out = {}
        for name in names:
            grads = torch.autograd.grad(
                objectives[name], [arrays[k] for k in keys], retain_graph=True, allow_unused=True
            )
            out[name] = {
                k: np.zeros(batched[k].shape) if g is None else _host(g)
                for k, g in zip(keys, grads, strict=True)
            }
        return out
    jax = _jax()

    def gradients(arrays: dict[str, Any]) -> dict[str, Any]:
        _, pullback = jax.vjp(lambda a: _mixed_dirichlet_objectives(a, rng), arrays)
        zeros = {name: np.float64(0.0) for name in names}
        return {name: pullback({**zeros, name: np.float64(1.0)})[0] for name in names}

    grads = jax.jit(gradients)({k: _array(library, v) for k, v in batched.items()})
    return {name: {k: _host(g[k]) for k in keys} for name, g in grads.items()}


def test_the_hand_built_estimator_is_expectation_surrogate():
    """``expectation_surrogate(g, q, rng, S)`` (score ``"auto"`` → the face, leave-one-out) is
    the estimator built by hand above: same value and gradient for the same seed (torch)."""
    torch = _torch()
    case = CASES["mixed_dirichlet"]
    batched = {k: np.broadcast_to(v, (64, *v.shape)) for k, v in case.params.items()}
    results = []
    for build in ("helper", "by hand"):
        arrays = {k: _array("torch", v).requires_grad_() for k, v in batched.items()}
        q = ma.MixedDirichlet(**arrays)
        if build == "helper":
            value = ma.expectation_surrogate(case.g, q, SEED, case.draws)
        else:
            y = q.rsample(SEED, (case.draws,))
            value = ma.score_function_surrogate(q.face_log_prob(ma.faces.support(y)), case.g(y))
        grads = torch.autograd.grad(value.sum(), list(arrays.values()))
        results.append([_host(value), *(_host(g) for g in grads)])
    for helper, by_hand in zip(*results, strict=True):
        np.testing.assert_allclose(helper, by_hand, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("library", LIBRARIES)
def test_elbo_monte_carlo_gradient_matches_the_exact_gradient(library):
    """``∇(E_q[g] − KL(q‖p))``: the Monte Carlo gradient of the first term plus the gradient of
    the exact ``ma.kl_divergence(q, p)`` (deterministic, so added once to every replicate)."""
    case = CASES["mixed_dirichlet"]
    keys = tuple(case.params)
    reference = central_differences(functools.partial(elbo, case), case.params)
    exact = np.concatenate([reference[k] for k in keys])

    def kl(arrays: dict[str, Any]) -> Any:
        q = ma.MixedDirichlet(**arrays)
        return ma.kl_divergence(q, _prior("mixed_dirichlet", arrays["face_logits"], ()))

    kl_grad = _gradients(library, kl, case.params, keys)
    kl_grad = np.concatenate([kl_grad[k] for k in keys])
    grads = mixed_dirichlet_gradients(library)
    right, wrong = (
        np.concatenate([grads[name][k] for k in keys], axis=-1) - kl_grad
        for name in ("surrogate", "pathwise")
    )
    assert np.all(z_scores(right, exact) < Z_MAX), (right.mean(axis=0), exact)
    # Planted wrong: without the score term the face logits miss ∂E_q[g]/∂η.
    stderr = right.std(axis=0, ddof=1) / math.sqrt(len(right))
    assert np.max(np.abs(wrong.mean(axis=0) - exact) / stderr) > Z_MAX
    # The concentration's part is the same pathwise term in both.
    np.testing.assert_allclose(wrong[:, 3:], right[:, 3:], rtol=1e-12, atol=1e-12)
