"""HardConcrete on the 1-simplex (paper-notes §8), on every backend.

References are written here from first principles: the Binary Concrete density in its raw
algebraic form, its CDF for the point masses, and ``scipy.integrate.quad`` for integrals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.special import expit

from mixedarray import _backend, random
from mixedarray.distributions.hard_concrete import HardConcrete
from tests.helpers import from_numpy, library_of, to_numpy

PARAMS = [(0.5, 2 / 3, -0.1, 1.1), (-2.0, 0.5, -0.2, 1.05), (3.0, 1.5, -0.1, 1.1)]


# -- first-principles references ----------------------------------------------------------------


def ref_masses(a, beta, low=-0.1, high=1.1):
    """(P(y=0), P(y=1)) from the Binary Concrete CDF Q(x) = σ(β logit x − log α)."""
    cdf = lambda x: expit(beta * np.log(x / (1 - x)) - a)  # noqa: E731
    p0 = cdf(-low / (high - low))
    p1 = 1 - cdf((1 - low) / (high - low))
    return float(p0), float(p1)


def ref_density(y, a, beta, low=-0.1, high=1.1):
    """Interior density q((y − γ)/(ζ − γ))/(ζ − γ), q the raw Binary Concrete density."""
    s = (y - low) / (high - low)
    alpha = math.exp(a)
    q = (
        beta
        * alpha
        * s ** (-beta - 1)
        * (1 - s) ** (-beta - 1)
        / (alpha * s ** (-beta) + (1 - s) ** (-beta)) ** 2
    )
    return q / (high - low)


def ref_entropy(a, beta, low=-0.1, high=1.1):
    p0, p1 = ref_masses(a, beta, low, high)

    def integrand(y):
        p = ref_density(y, a, beta, low, high)
        return -p * math.log(p) if p > 0 else 0.0

    interior, _ = integrate.quad(integrand, 0, 1, epsabs=1e-13, epsrel=1e-13, limit=400)
    return -p0 * math.log(p0) - p1 * math.log(p1) + interior


def _dist(backend, a, beta=2 / 3, low=-0.1, high=1.1, **kw):
    return HardConcrete(from_numpy(backend, np.asarray(a, dtype=np.float64)), beta, low, high, **kw)


# -- masses and densities -----------------------------------------------------------------------


@pytest.mark.parametrize("a, beta, low, high", PARAMS)
def test_masses_sum_to_one(backend, a, beta, low, high):
    d = _dist(backend, a, beta, low, high)
    masks = from_numpy(backend, np.array([[False, True], [True, False]]))
    p0, p1 = np.exp(to_numpy(d.face_log_prob(masks)))

    def density(y):
        point = from_numpy(backend, np.array([y, 1 - y]))
        return math.exp(float(to_numpy(d.log_prob(point))))

    interior, _ = integrate.quad(density, 0, 1, epsabs=1e-13, epsrel=1e-13, limit=200)
    assert abs(p0 + p1 + interior - 1) < 1e-10
    r0, r1 = ref_masses(a, beta, low, high)
    np.testing.assert_allclose([p0, p1], [r0, r1], rtol=1e-12)


@pytest.mark.parametrize("a, beta, low, high", PARAMS)
def test_log_prob_matches_reference(backend, a, beta, low, high):
    d = _dist(backend, a, beta, low, high)
    gates = np.array([0.0, 1e-9, 0.03, 0.3, 0.5, 0.77, 0.999, 1 - 1e-9, 1.0])
    y = np.stack([gates, 1 - gates], axis=-1)
    got = to_numpy(d.log_prob(from_numpy(backend, y)))
    r0, r1 = ref_masses(a, beta, low, high)
    want = [math.log(r0)]
    want += [math.log(ref_density(g, a, beta, low, high)) for g in gates[1:-1]]
    want += [math.log(r1)]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_face_log_prob(backend):
    a, beta = 0.5, 2 / 3
    d = _dist(backend, [a, a])
    masks = np.array([[True, False], [False, True], [True, True], [False, False]])
    got = to_numpy(d.face_log_prob(from_numpy(backend, masks[:, None, :])))
    assert got.shape == (4, 2)
    r0, r1 = ref_masses(a, beta)
    want = [math.log(r1), math.log(r0), math.log(1 - r0 - r1), -math.inf]
    np.testing.assert_allclose(got, np.array([want, want]).T, rtol=1e-12)


def test_infinite_logits_are_vertices(cpu_backend):
    d = _dist(cpu_backend, [-math.inf, math.inf])
    masks = from_numpy(cpu_backend, np.array([[False, True], [True, False], [True, True]]))
    got = to_numpy(d.face_log_prob(masks[:, None, :]))
    np.testing.assert_array_equal(got, [[0.0, -math.inf], [-math.inf, 0.0], [-math.inf, -math.inf]])
    np.testing.assert_allclose(to_numpy(d.entropy_exact()), [0.0, 0.0], atol=1e-300)


# -- entropy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("a, beta, low, high", [*PARAMS, (-8.0, 2 / 3, -0.1, 1.1)])
def test_entropy_exact_vs_quad(backend, a, beta, low, high):
    d = _dist(backend, [a, a + 1.0], beta, low, high)
    got = to_numpy(d.entropy_exact())
    want = [ref_entropy(a, beta, low, high), ref_entropy(a + 1.0, beta, low, high)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8)


def test_entropy_large_temperature_needs_more_panels(cpu_backend):
    d = _dist(cpu_backend, 1.0, 10.0)
    want = ref_entropy(1.0, 10.0)
    assert abs(float(to_numpy(d.entropy_exact(num_panels=32))) - want) < 1e-12
    with pytest.raises(ValueError, match="num_panels"):
        d.entropy_exact(num_panels=0)


def test_kl_to_uniform_bit_nonnegative(cpu_backend):
    a = np.linspace(-10, 10, 41)
    for beta in (0.1, 2 / 3, 1.0, 3.0):
        d = _dist(cpu_backend, a, beta)
        kl = to_numpy(d.kl_divergence_to_uniform_bit())
        assert np.all(kl >= 0)
        np.testing.assert_allclose(kl, math.log(3) - to_numpy(d.entropy_exact()), atol=1e-15)
    # The uniform bit itself is not a Hard Concrete; the closest is still strictly positive.
    assert float(to_numpy(_dist(cpu_backend, 0.0, 3.0).kl_divergence_to_uniform_bit())) > 0


# -- sampling -----------------------------------------------------------------------------------


def _frequencies_match(freq, p, n):
    se = math.sqrt(p * (1 - p) / n)
    assert se < 0.1 * p
    return abs(freq - p) <= 4.5 * se


def test_sampler_frequencies(backend):
    a, beta, n = 0.5, 2 / 3, 100_000
    d = _dist(backend, a, beta)
    gate = to_numpy(d.sample(1234, (n,)))[..., 0]
    r0, r1 = ref_masses(a, beta)
    box, _ = integrate.quad(lambda y: ref_density(y, a, beta), 0.2, 0.5, epsabs=1e-13)
    observed = [np.mean(gate == 0), np.mean(gate == 1), np.mean((gate > 0.2) & (gate < 0.5))]
    for freq, p in zip(observed, [r0, r1, box], strict=True):
        assert _frequencies_match(freq, p, n), (freq, p)
    # Negative controls: planted wrong values must be rejected by the same test.
    assert not _frequencies_match(observed[0], 1.1 * r0, n)
    assert not _frequencies_match(observed[0], r1, n)  # closed and open gate swapped
    wrong_box, _ = integrate.quad(lambda y: ref_density(y, a, 1.0), 0.2, 0.5)
    assert not _frequencies_match(observed[2], wrong_box, n)


def test_sample_shapes_library_device_dtype(backend):
    xp, device = backend
    logits = from_numpy(backend, np.zeros((3, 1)), dtype="float32")
    d = HardConcrete(logits, from_numpy(backend, np.full(4, 0.5), dtype="float32"))
    assert d.batch_shape == (3, 4) and d.event_shape == (2,)
    y = d.sample(0, (5,))
    assert tuple(y.shape) == (5, 3, 4, 2)
    assert _backend.library_name(y) == _backend.library_name(logits)
    assert y.dtype == xp.float32
    assert str(_backend.device(y)) == str(device)
    y_np = to_numpy(y)
    assert np.all((y_np >= 0) & (y_np <= 1))
    np.testing.assert_allclose(y_np.sum(-1), 1, atol=1e-6)
    lp = d.log_prob(y)
    assert tuple(lp.shape) == (5, 3, 4) and lp.dtype == xp.float32
    assert tuple(d.entropy_exact().shape) == (3, 4)


def test_validation(cpu_backend):
    logits = from_numpy(cpu_backend, np.zeros(2))
    with pytest.raises(ValueError, match="temperature"):
        HardConcrete(logits, 0.0)
    with pytest.raises(ValueError, match="low"):
        HardConcrete(logits, 0.5, 0.0)
    with pytest.raises(ValueError, match="high"):
        HardConcrete(logits, 0.5, -0.1, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        HardConcrete(logits, from_numpy(cpu_backend, np.array([1.0, -1.0])), validate_args=True)
    with pytest.raises(ValueError, match="NaN"):
        HardConcrete(from_numpy(cpu_backend, np.array([0.0, np.nan])), validate_args=True)
    d = HardConcrete(logits, validate_args=True)
    with pytest.raises(ValueError, match="simplex"):
        d.log_prob(from_numpy(cpu_backend, np.array([0.3, 0.3])))
    with pytest.raises(ValueError, match="2 entries"):
        d.log_prob(from_numpy(cpu_backend, np.array([0.3, 0.3, 0.4])))


# -- gradients ----------------------------------------------------------------------------------


def test_torch_gradcheck_log_prob():
    torch = pytest.importorskip("torch")
    y = torch.tensor([[0.0, 1.0], [0.3, 0.7], [0.8, 0.2], [1.0, 0.0]], dtype=torch.float64)
    logits = torch.tensor([0.4, -1.2, 2.0, 0.1], dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([0.6, 0.9, 1.3, 0.5], dtype=torch.float64, requires_grad=True)

    def log_prob(a, b):
        return HardConcrete(a, b).log_prob(y)

    assert torch.autograd.gradcheck(log_prob, (logits, beta))

    def face(a, b):
        masks = torch.tensor([[True, False], [False, True], [True, True], [True, True]])
        return HardConcrete(a, b).face_log_prob(masks)

    assert torch.autograd.gradcheck(face, (logits, beta))


def test_rsample_pathwise_gradient(cpu_backend):
    """dy/dlog α = (ζ − γ) s(1 − s)/β inside the edge, 0 where clipped (same noise by seed)."""
    lib = library_of(cpu_backend)
    if lib not in ("torch", "jax"):
        pytest.skip("pathwise gradients need torch or JAX")
    a, beta, n = 0.3, 2 / 3, 64
    logits_np = np.full(n, a)
    u = to_numpy(random.uniform(7, (n,), like=from_numpy(cpu_backend, logits_np)))
    s = expit((np.log(u) - np.log1p(-u) + a) / beta)
    gate = -0.1 + 1.2 * s
    inside = (gate > 0) & (gate < 1)
    want = np.where(inside, 1.2 * s * (1 - s) / beta, 0.0)
    if lib == "torch":
        import torch

        logits = torch.tensor(logits_np, requires_grad=True)
        HardConcrete(logits, beta).rsample(7)[..., 0].sum().backward()
        got = logits.grad.numpy()
    else:
        import jax

        def total(x):
            return HardConcrete(x, beta).rsample(7)[..., 0].sum()

        got = np.asarray(jax.grad(total)(jax.numpy.asarray(logits_np)))
    assert inside.any() and (~inside).any()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
