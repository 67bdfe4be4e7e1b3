"""MixedDirichlet: density, sampler and exact information against SciPy and first principles.

References are computed here with NumPy/SciPy (face enumeration with itertools,
``scipy.stats.dirichlet``, ``scipy.integrate``), never with the code under test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.integrate as integrate
import scipy.special as sps
import scipy.stats as stats

from mixedarray import _backend
from mixedarray.distributions.mixed_dirichlet import MixedDirichlet
from mixedarray.distributions.nonempty_bernoulli import NonEmptyBernoulli
from tests.helpers import from_numpy, library_of, to_numpy

ETA3 = np.array([[0.4, -0.7, 1.1], [-1.5, 0.3, 0.2]])
ALPHA3 = np.array([[1.5, 2.0, 2.5], [0.6, 3.0, 1.2]])


# ---------------------------------------------------------------------------------------------
# Independent references.


def _faces(K):
    return [np.array(f, dtype=bool) for f in itertools.product([False, True], repeat=K) if any(f)]


def _face_probs(eta):
    """P_F(f) for every face of ``_faces(K)``, by enumeration of the Bernoulli product."""
    p = 1 / (1 + np.exp(-eta))
    weights = np.array([np.prod(np.where(f, p, 1 - p)) for f in _faces(len(eta))])
    return weights / weights.sum()


def _dirichlet_entropy(a):
    """Closed form in free coordinates (paper-notes §7), written out here for the scipy check."""
    a0, k = a.sum(), len(a)
    return (
        sps.gammaln(a).sum()
        - sps.gammaln(a0)
        + (a0 - k) * sps.digamma(a0)
        - ((a - 1) * sps.digamma(a)).sum()
    )


def _dirichlet_kl(a, b):
    a0, b0 = a.sum(), b.sum()
    return (
        sps.gammaln(a0)
        - sps.gammaln(a).sum()
        - sps.gammaln(b0)
        + sps.gammaln(b).sum()
        + ((a - b) * (sps.digamma(a) - sps.digamma(a0))).sum()
    )


def _reference_entropy(eta, alpha):
    probs = _face_probs(eta)
    value = -(probs * np.log(probs)).sum()
    for prob, f in zip(probs, _faces(len(eta)), strict=True):
        if f.sum() > 1:
            value += prob * stats.dirichlet.entropy(alpha[f])
    return value


def _reference_kl(eta_p, alpha, eta_q, beta):
    p, q = _face_probs(eta_p), _face_probs(eta_q)
    value = (p * np.log(p / q)).sum()
    for prob, f in zip(p, _faces(len(eta_p)), strict=True):
        if f.sum() > 1:
            value += prob * _dirichlet_kl(alpha[f], beta[f])
    return value


def _z(values, expected, stderr):
    return np.max(np.abs(np.asarray(values) - np.asarray(expected)) / np.asarray(stderr))


def test_scipy_dirichlet_entropy_is_in_free_coordinates():
    a = np.array([0.7, 2.0, 3.5])
    assert stats.dirichlet.entropy(a) == pytest.approx(_dirichlet_entropy(a), rel=1e-12)
    # Dir(1) on a k-face: uniform on a face of volume 1/(k-1)!.
    assert stats.dirichlet.entropy(np.ones(4)) == pytest.approx(-math.log(6), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Density.


def test_density_integrates_to_one_over_the_direct_sum_measure():
    eta, alpha = ETA3[0], ALPHA3[0]
    import array_api_compat.numpy as npx

    d = MixedDirichlet(npx.asarray(eta), npx.asarray(alpha))

    def p(*y):
        return float(np.exp(d.log_prob(npx.asarray(np.array(y, dtype=float)))))

    expected = dict(zip(map(tuple, _faces(3)), _face_probs(eta), strict=True))
    total = 0.0
    for i in range(3):  # vertices: counting measure
        vertex = [0.0] * 3
        vertex[i] = 1.0
        mass = p(*vertex)
        assert mass == pytest.approx(expected[tuple(np.array(vertex) > 0)], rel=1e-12)
        total += mass
    for i, j in itertools.combinations(range(3), 2):  # edges: one free coordinate

        def on_edge(t, i=i, j=j):
            y = [0.0] * 3
            y[i], y[j] = t, 1 - t
            return p(*y)

        mass = integrate.quad(on_edge, 0, 1, epsabs=1e-12, epsrel=1e-10)[0]
        f = np.zeros(3, dtype=bool)
        f[[i, j]] = True
        assert mass == pytest.approx(expected[tuple(f)], rel=1e-8)
        total += mass
    interior = integrate.dblquad(
        lambda y2, y1: p(y1, y2, 1 - y1 - y2), 0, 1, 0, lambda y1: 1 - y1, epsabs=1e-9, epsrel=1e-7
    )[0]
    assert interior == pytest.approx(expected[(True, True, True)], rel=1e-6)
    total += interior
    assert total == pytest.approx(1.0, abs=1e-7)


def _points_on_every_face(K, rng):
    points = []
    for f in _faces(K):
        y = np.zeros(K)
        y[f] = rng.dirichlet(np.full(f.sum(), 2.0)) if f.sum() > 1 else 1.0
        points.append(y)
    return np.array(points)


def test_log_prob_matches_scipy(backend):
    rng = np.random.default_rng(1)
    points = _points_on_every_face(3, rng)  # (7, 3)
    d = MixedDirichlet(from_numpy(backend, ETA3), from_numpy(backend, ALPHA3))
    got = to_numpy(d.log_prob(from_numpy(backend, points[:, None, :])))
    assert got.shape == (7, 2)
    for b in range(2):
        probs = _face_probs(ETA3[b])
        for n, (y, f) in enumerate(zip(points, _faces(3), strict=True)):
            want = np.log(probs[n])
            if f.sum() > 1:
                want += stats.dirichlet.logpdf(y[f], ALPHA3[b][f])
            assert got[n, b] == pytest.approx(want, rel=1e-10, abs=1e-12)
    masks = np.array(_faces(3))
    face = to_numpy(d.face_log_prob(from_numpy(backend, masks[:, None, :])))
    np.testing.assert_allclose(
        face, np.log(np.stack([_face_probs(e) for e in ETA3], -1)), rtol=1e-12
    )


# ---------------------------------------------------------------------------------------------
# Sampler.


def test_face_frequencies_match_the_face_distribution(backend):
    n = 20000
    eta, alpha = ETA3[1], ALPHA3[1]
    d = MixedDirichlet(from_numpy(backend, eta), from_numpy(backend, alpha))
    y = to_numpy(d.sample(7, (n,)))
    assert y.shape == (n, 3)
    support = y > 0
    assert np.all(support.any(axis=-1))
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=0, atol=1e-12)
    codes = {tuple(f): i for i, f in enumerate(_faces(3))}
    counts = np.bincount([codes[tuple(s)] for s in support], minlength=7)
    probs = _face_probs(eta)
    stderr = np.sqrt(probs * (1 - probs) / n)
    assert np.all(stderr < 0.1 * probs)
    assert _z(counts / n, probs, stderr) < 4.5
    planted = probs.copy()
    planted[0], planted[-1] = planted[0] + 0.03, planted[-1] - 0.03
    assert _z(counts / n, planted, stderr) > 4.5  # negative control: a wrong law must fail


def test_support_equals_the_drawn_face():
    # White-box: with a NumPy Generator the face is the first draw of the same generator.
    import array_api_compat.numpy as npx

    from mixedarray.distributions import face_bernoulli

    eta = npx.asarray(ETA3)
    d = MixedDirichlet(eta, npx.asarray(ALPHA3 * 1e-3))
    y = d.sample(np.random.default_rng(3), (500,))
    faces = face_bernoulli.sample(eta, np.random.default_rng(3), (500,))
    np.testing.assert_array_equal(np.asarray(y) > 0, np.asarray(faces))


def test_on_face_means(backend):
    n = 20000
    alpha = np.array([0.5, 1.5, 3.0, 0.2])
    d = MixedDirichlet(from_numpy(backend, np.full(4, 40.0)), from_numpy(backend, alpha))
    y = to_numpy(d.sample(11, (n,)))
    assert np.all(y > 0)
    mean, stderr = y.mean(0), y.std(0) / np.sqrt(n)
    want = alpha / alpha.sum()
    assert np.all(stderr < 0.1 * want)
    assert _z(mean, want, stderr) < 4.5
    planted = (alpha + 0.1) / (alpha + 0.1).sum()
    assert _z(mean, planted, stderr) > 4.5


def test_small_concentration_float32_keeps_the_face(backend):
    n = 4000
    K = 5
    alpha = from_numpy(backend, np.full(K, 1e-3), "float32")
    full = MixedDirichlet(from_numpy(backend, np.full(K, 30.0), "float32"), alpha)
    y = full.sample(0, (n,))
    assert y.dtype == backend[0].float32
    y = to_numpy(y)
    assert np.all(y > 0) and np.all(np.isfinite(y))  # F is the full face a.s.
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
    # A plain Gamma(1e-3) float32 draw underflows to 0 most of the time: the trap is real.
    plain = np.random.default_rng(0).standard_gamma(1e-3, size=1000).astype(np.float32)
    assert np.mean(plain == 0) > 0.5
    # Random faces: the number of positive entries follows the face-size distribution.
    eta = np.array([0.3, -0.5, 1.0, -1.2, 0.0])
    d = MixedDirichlet(from_numpy(backend, eta, "float32"), alpha)
    sizes = (to_numpy(d.sample(1, (n,))) > 0).sum(-1)
    probs = _face_probs(eta)
    want = np.array([probs[[f.sum() == k for f in _faces(K)]].sum() for k in range(1, K + 1)])
    freq = np.bincount(sizes, minlength=K + 1)[1:] / n
    assert _z(freq, want, np.sqrt(want * (1 - want) / n)) < 4.5
    assert np.all(sizes >= 1)


# ---------------------------------------------------------------------------------------------
# Exact information.

ETA4 = np.array([[0.3, -0.8, 1.2, 0.1], [-1.0, 0.5, 0.0, 2.0]])
ALPHA4 = np.array([[0.5, 1.7, 3.0, 0.9], [2.2, 0.4, 1.1, 5.0]])


def test_entropy_matches_enumeration_with_scipy(backend):
    d = MixedDirichlet(from_numpy(backend, ETA4), from_numpy(backend, ALPHA4))
    got = to_numpy(d.entropy_exact())
    want = [_reference_entropy(ETA4[b], ALPHA4[b]) for b in range(2)]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_entropy_matches_monte_carlo():
    import array_api_compat.numpy as npx

    n = 100000
    d = MixedDirichlet(npx.asarray(ETA4), npx.asarray(ALPHA4))
    log_p = np.asarray(d.log_prob(d.sample(np.random.default_rng(2), (n,))))
    estimate, stderr = -log_p.mean(0), log_p.std(0) / np.sqrt(n)
    exact = np.asarray(d.entropy_exact())
    assert np.all(stderr < 0.1 * np.abs(exact))
    assert _z(estimate, exact, stderr) < 4.5
    assert _z(estimate, exact + 0.05, stderr) > 4.5  # negative control


def test_symmetric_route_equals_enumeration(cpu_backend):
    rng = np.random.default_rng(4)
    eta_p, eta_q = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    a = np.array([[0.3], [1.0], [2.5]]) * np.ones(6)
    b = np.array([[1.7], [0.6], [1.0]]) * np.ones(6)
    p = MixedDirichlet(from_numpy(cpu_backend, eta_p), from_numpy(cpu_backend, a))
    q = MixedDirichlet(from_numpy(cpu_backend, eta_q), from_numpy(cpu_backend, b))
    for method in ("entropy_exact",):
        sym = to_numpy(getattr(p, method)(symmetric=True))
        enum = to_numpy(getattr(p, method)(symmetric=False))
        np.testing.assert_allclose(sym, enum, rtol=0, atol=1e-10)
        np.testing.assert_allclose(to_numpy(getattr(p, method)()), enum, rtol=0, atol=1e-10)
    for method in ("kl_divergence_exact", "cross_entropy_exact"):
        sym = to_numpy(getattr(p, method)(q, symmetric=True))
        enum = to_numpy(getattr(p, method)(q, symmetric=False))
        np.testing.assert_allclose(sym, enum, rtol=0, atol=1e-10)
    want = [_reference_kl(eta_p[i], a[i], eta_q[i], b[i]) for i in range(3)]
    np.testing.assert_allclose(to_numpy(p.kl_divergence_exact(q)), want, rtol=1e-10)


def test_kl_and_cross_entropy(backend):
    p = MixedDirichlet(from_numpy(backend, ETA4), from_numpy(backend, ALPHA4))
    q = MixedDirichlet(
        from_numpy(backend, ETA4[::-1].copy()), from_numpy(backend, ALPHA4[::-1].copy())
    )
    kl = to_numpy(p.kl_divergence_exact(q))
    want = [_reference_kl(ETA4[b], ALPHA4[b], ETA4[1 - b], ALPHA4[1 - b]) for b in range(2)]
    np.testing.assert_allclose(kl, want, rtol=1e-10)
    assert np.all(kl > 0)
    np.testing.assert_allclose(to_numpy(p.kl_divergence_exact(p)), 0.0, atol=1e-12)
    np.testing.assert_allclose(
        to_numpy(p.cross_entropy_exact(q)) - to_numpy(p.entropy_exact()), kl, rtol=1e-10
    )
    # broadcasting of batch shapes: q with batch () against p with batch (2,)
    q0 = MixedDirichlet(from_numpy(backend, ETA4[1]), from_numpy(backend, ALPHA4[1]))
    np.testing.assert_allclose(to_numpy(p.kl_divergence_exact(q0)), [want[0], 0.0], atol=1e-12)


@pytest.mark.parametrize("K", [1, 2, 3, 5, 25])
def test_uniform_dirichlet_on_a_face_has_entropy_minus_log_volume(K):
    import array_api_compat.numpy as npx

    # F is the full face with probability 1 - O(K e^-40): H(F) ~ 0, h(Dir(1)) = -log (K-1)!.
    d = MixedDirichlet(npx.full((K,), 40.0), npx.ones((K,)))
    assert float(d.entropy_exact()) == pytest.approx(-math.lgamma(K), abs=1e-12)


def test_large_asymmetric_k_raises():
    import array_api_compat.numpy as npx

    d = MixedDirichlet(npx.zeros((21,)), npx.linspace(0.5, 2.0, 21))
    with pytest.raises(NotImplementedError, match="Monte Carlo"):
        d.entropy_exact()
    with pytest.raises(NotImplementedError, match="Monte Carlo"):
        d.kl_divergence_exact(d)


# ---------------------------------------------------------------------------------------------
# Gradients.


def test_log_prob_gradcheck_torch():
    torch = pytest.importorskip("torch")
    eta = torch.tensor(ETA4[0], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(ALPHA4[0], dtype=torch.float64, requires_grad=True)
    points = [
        [0.0, 0.0, 1.0, 0.0],  # vertex
        [0.0, 0.3, 0.0, 0.7],  # edge
        [0.1, 0.2, 0.3, 0.4],  # interior
    ]
    for point in points:
        y = torch.tensor(point, dtype=torch.float64)

        def f(e, a, y=y):
            return MixedDirichlet(e, a, validate_args=False).log_prob(y)

        assert torch.autograd.gradcheck(f, (eta, alpha))


def test_entropy_and_kl_gradcheck_torch():
    torch = pytest.importorskip("torch")
    eta = torch.tensor(ETA4[0], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(ALPHA4[0], dtype=torch.float64, requires_grad=True)
    beta = torch.tensor(ALPHA4[1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e, a: MixedDirichlet(e, a).entropy_exact(), (eta, alpha))
    assert torch.autograd.gradcheck(
        lambda e, a, b: MixedDirichlet(e, a).kl_divergence_exact(MixedDirichlet(-e, b)),
        (eta, alpha, beta),
    )
    # At a symmetric point the automatic choice enumerates when α requires a gradient, so
    # gradients in asymmetric directions are exact too.
    ones = torch.ones(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e, a: MixedDirichlet(e, a).entropy_exact(), (eta, ones))


def test_rsample_pathwise_gradient_torch():
    torch = pytest.importorskip("torch")
    n = 20000
    alpha = torch.tensor(np.tile([0.7, 1.5, 2.5], (n, 1)), requires_grad=True)
    d = MixedDirichlet(torch.full((n, 3), 40.0, dtype=torch.float64), alpha)
    y = d.rsample(torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(y[:, 0].sum(), alpha)
    grad = grad.numpy()
    assert np.all(np.isfinite(grad))
    # d E[y_0] / d alpha = (a0 - a_0, -a_0, -a_0) / a0^2 on the full face.
    a = np.array([0.7, 1.5, 2.5])
    want = np.array([a.sum() - a[0], -a[0], -a[0]]) / a.sum() ** 2
    stderr = grad.std(0) / np.sqrt(n)
    assert _z(grad.mean(0), want, stderr) < 4.5
    assert _z(grad.mean(0), want * 1.1, stderr) > 4.5


def test_rsample_gradient_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    eta = jnp.asarray(ETA4[0])

    def loss(alpha):
        y = MixedDirichlet(eta, alpha).rsample(jax.random.key(0), (64,))
        return jnp.sum(y * jnp.arange(4.0))

    grad = jax.grad(loss)(jnp.asarray(ALPHA4[0]))
    assert np.all(np.isfinite(np.asarray(grad))) and np.any(np.asarray(grad) != 0)
    small = jax.grad(loss)(jnp.full(4, 1e-3))
    assert np.all(np.isfinite(np.asarray(small)))
    # Under jit the entropy takes the enumeration route (no host reads).
    entropy = jax.jit(lambda e, a: MixedDirichlet(e, a).entropy_exact())(
        eta, jnp.asarray(ALPHA4[0])
    )
    assert float(entropy) == pytest.approx(_reference_entropy(ETA4[0], ALPHA4[0]), rel=1e-10)


# ---------------------------------------------------------------------------------------------
# Library, device, dtype; errors.


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_callers_library_device_and_dtype(backend, dtype):
    xp, device = backend
    d = MixedDirichlet(from_numpy(backend, ETA4, dtype), from_numpy(backend, ALPHA4, dtype))
    assert d.batch_shape == (2,) and d.event_shape == (4,)
    face = d.face_distribution
    assert isinstance(face, NonEmptyBernoulli) and face.batch_shape == (2,)
    y = d.sample(0, (3,))
    outputs = [
        y,
        d.rsample(1),
        d.log_prob(y),
        d.entropy_exact(),
        d.kl_divergence_exact(d),
        d.cross_entropy_exact(d),
    ]
    for out in outputs:
        assert _backend.library_name(out) == library_of(backend)
        assert out.dtype == getattr(xp, dtype)
        assert str(_backend.device(out)) == str(device)
    assert tuple(y.shape) == (3, 2, 4) and tuple(d.log_prob(y).shape) == (3, 2)
    assert np.all(np.isfinite(to_numpy(d.log_prob(y))))


def test_broadcasting_parameters(cpu_backend):
    d = MixedDirichlet(from_numpy(cpu_backend, ETA4), from_numpy(cpu_backend, ALPHA4[0]))
    assert d.batch_shape == (2,)
    assert tuple(d.concentration.shape) == (2, 4)


def test_bad_input(cpu_backend):
    good_eta, good_alpha = from_numpy(cpu_backend, ETA3), from_numpy(cpu_backend, ALPHA3)
    for bad in (0.0, -1.0, np.inf, np.nan):
        alpha = ALPHA3.copy()
        alpha[0, 1] = bad
        with pytest.raises(ValueError, match="concentration must be positive and finite"):
            MixedDirichlet(good_eta, from_numpy(cpu_backend, alpha))
    eta = ETA3.copy()
    eta[1, 2] = np.nan
    with pytest.raises(ValueError, match="face_logits contains NaN"):
        MixedDirichlet(from_numpy(cpu_backend, eta), good_alpha)
    with pytest.raises(ValueError, match="does not broadcast"):
        MixedDirichlet(good_eta, from_numpy(cpu_backend, np.ones((2, 4))))
    with pytest.raises(ValueError, match="at least one axis"):
        MixedDirichlet(from_numpy(cpu_backend, np.float64(0.0)), good_alpha)
    d = MixedDirichlet(good_eta, good_alpha)
    with pytest.raises(ValueError, match="must lie on the simplex"):
        d.log_prob(from_numpy(cpu_backend, np.array([0.5, 0.6, 0.1])))
    with pytest.raises(ValueError, match="negative entry"):
        d.log_prob(from_numpy(cpu_backend, np.array([-0.1, 0.6, 0.5])))
    with pytest.raises(ValueError, match="3 entries on its last axis"):
        d.log_prob(from_numpy(cpu_backend, np.array([0.5, 0.5])))
    with pytest.raises(TypeError, match="MixedDirichlet"):
        d.kl_divergence_exact(NonEmptyBernoulli(good_eta))
    with pytest.raises(ValueError, match="K = 4"):
        d.kl_divergence_exact(
            MixedDirichlet(from_numpy(cpu_backend, ETA4), from_numpy(cpu_backend, ALPHA4))
        )
