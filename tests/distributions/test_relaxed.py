"""GumbelSoftmax (Concrete, straight-through) and KDHardConcrete (paper-notes §8), every backend.

References are first principles written here: the Concrete density in Jang et al.'s product
form, ``scipy.integrate`` quadrature, ``scipy.special.softmax``, and the closed form of the
K = 2 K-D Hard Concrete sample.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.special import expit
from scipy.special import softmax as np_softmax

from mixedarray import _backend, random
from mixedarray.distributions.hard_concrete import HardConcrete
from mixedarray.distributions.relaxed import GumbelSoftmax, KDHardConcrete
from tests.helpers import from_numpy, library_of, to_numpy


def ref_concrete(y_free, logits, tau):
    """Concrete density in free coordinates: Γ(K) τ^{K−1} Π(π_k y_k^{−τ−1}) / (Σ π_k y_k^{−τ})^K.

    Plain Python floats (fast enough for scipy's adaptive 2-D rule).
    """
    y = [float(v) for v in y_free]
    y.append(1 - sum(y))
    if min(y) <= 0:
        return 0.0
    weights = [math.exp(float(v) - max(logits)) for v in logits]
    pi = [w / sum(weights) for w in weights]
    K = len(pi)
    num = math.exp(math.lgamma(K)) * tau ** (K - 1)
    for p_k, y_k in zip(pi, y, strict=True):
        num *= p_k * y_k ** (-tau - 1)
    den = sum(p_k * y_k ** (-tau) for p_k, y_k in zip(pi, y, strict=True))
    return num / den**K


LOGITS3 = np.array([0.4, -0.3, 0.1])


# -- GumbelSoftmax density ----------------------------------------------------------------------


def test_concrete_density_integrates_to_one_k3(cpu_backend):
    tau = 0.8
    d = GumbelSoftmax(from_numpy(cpu_backend, LOGITS3), tau)
    # The code's density, in the logistic chart y = softmax(z1, z2, 0): dy_free = Π_k y_k dz,
    # so the integrand p(y) Π_k y_k is smooth and decays exponentially; the trapezoidal rule on
    # a wide grid is then exact to rounding (the 2-D check of the reference itself is below).
    z = np.arange(-35.0, 35.0, 0.1)
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    y = np_softmax(np.stack([z1, z2, np.zeros_like(z1)], axis=-1), axis=-1)
    log_p = to_numpy(d.log_prob(from_numpy(cpu_backend, y)))
    total = np.sum(np.exp(log_p + np.sum(np.log(y), axis=-1))) * 0.1 * 0.1
    assert abs(total - 1) < 1e-9


def test_reference_concrete_density_integrates_to_one_k3():
    """The first-principles reference, with scipy's adaptive 2-D rule in free coordinates."""
    tau = 0.8
    ref_total, _ = integrate.dblquad(
        lambda y2, y1: ref_concrete((y1, y2), LOGITS3, tau),
        0,
        1,
        0,
        lambda y1: 1 - y1,
        epsabs=1e-9,
    )
    assert abs(ref_total - 1) < 1e-9


def test_concrete_density_integrates_to_one_k2(cpu_backend):
    logits, tau = np.array([0.7, -0.2]), 1.3
    d = GumbelSoftmax(from_numpy(cpu_backend, logits), tau)

    def density(y1):
        return math.exp(
            float(to_numpy(d.log_prob(from_numpy(cpu_backend, np.array([y1, 1 - y1])))))
        )

    total, _ = integrate.quad(density, 0, 1, epsabs=1e-12, limit=200)
    assert abs(total - 1) < 1e-9


def test_concrete_log_prob_matches_reference(backend):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4))
    tau = np.array([0.5, 1.0, 2.5])
    y = rng.dirichlet(np.ones(4), size=(5, 3))
    d = GumbelSoftmax(from_numpy(backend, logits), from_numpy(backend, tau))
    got = to_numpy(d.log_prob(from_numpy(backend, y)))
    want = np.array(
        [
            [math.log(ref_concrete(y[i, b, :-1], logits[b], tau[b])) for b in range(3)]
            for i in range(5)
        ]
    )
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # lower faces carry no mass
    edge = from_numpy(backend, np.array([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    np.testing.assert_array_equal(to_numpy(d.log_prob(edge[:, None, :])), -np.inf)


def test_face_log_prob_soft_and_hard(backend):
    logits = np.array([1.0, 0.0, -2.0])
    masks = np.array(
        [[True, True, True], [True, False, False], [False, False, True], [True, True, False]]
    )
    soft = GumbelSoftmax(from_numpy(backend, logits), 0.5)
    got = to_numpy(soft.face_log_prob(from_numpy(backend, masks)))
    np.testing.assert_array_equal(got, [0.0, -np.inf, -np.inf, -np.inf])
    hard = GumbelSoftmax(from_numpy(backend, logits), 0.5, hard=True)
    got = to_numpy(hard.face_log_prob(from_numpy(backend, masks)))
    p = np_softmax(logits)
    np.testing.assert_allclose(got, [-np.inf, math.log(p[0]), math.log(p[2]), -np.inf], rtol=1e-13)
    vertices = from_numpy(backend, np.eye(3))
    np.testing.assert_allclose(to_numpy(hard.log_prob(vertices)), np.log(p), rtol=1e-13)
    inside = from_numpy(backend, np.array([0.2, 0.3, 0.5]))
    assert to_numpy(hard.log_prob(inside)) == -np.inf


# -- GumbelSoftmax sampling ---------------------------------------------------------------------


def _match(freq, p, n):
    se = math.sqrt(p * (1 - p) / n)
    assert se < 0.1 * p
    return abs(freq - p) <= 4.5 * se


def test_concrete_sampler_box(backend):
    tau, n = 0.8, 100_000
    d = GumbelSoftmax(from_numpy(backend, LOGITS3), tau)
    y = to_numpy(d.sample(99, (n,)))
    inside = (y[:, 0] > 0.2) & (y[:, 0] < 0.5) & (y[:, 1] > 0.1) & (y[:, 1] < 0.4)

    def box(logits, t):
        value, _ = integrate.dblquad(
            lambda y2, y1: ref_concrete((y1, y2), logits, t), 0.2, 0.5, 0.1, 0.4
        )
        return value

    freq = float(np.mean(inside))
    assert _match(freq, box(LOGITS3, tau), n)
    assert not _match(freq, box(LOGITS3, 1.2), n)  # negative control: wrong temperature
    # negative control: wrong logits
    assert not _match(freq, box(np.array([0.4, -0.3, -0.4]), tau), n)


def test_hard_forward_is_one_hot_with_softmax_frequencies(backend):
    logits, n = np.array([1.0, 0.0, -0.5, 0.3]), 100_000
    d = GumbelSoftmax(from_numpy(backend, logits), 0.7, hard=True)
    y = to_numpy(d.sample(5, (n,)))
    assert set(np.unique(y)) <= {0.0, 1.0}
    np.testing.assert_array_equal(y.sum(-1), 1.0)
    freq = y.mean(0)
    p = np_softmax(logits)
    assert all(_match(f, q, n) for f, q in zip(freq, p, strict=True))
    wrong = np_softmax(logits / 0.7)  # negative control: tempered probabilities
    assert not all(_match(f, q, n) for f, q in zip(freq, wrong, strict=True))


def test_straight_through_gradient_is_soft_gradient(cpu_backend):
    lib = library_of(cpu_backend)
    if lib not in ("torch", "jax"):
        pytest.skip("pathwise gradients need torch or JAX")
    logits_np = np.array([[0.3, -0.2, 0.5], [1.0, 0.0, -1.0]])
    tau_np = np.array([0.6, 1.4])
    weights = np.array([1.0, -2.0, 0.5])

    if lib == "torch":
        import torch

        def grads(hard):
            logits = torch.tensor(logits_np, requires_grad=True)
            tau = torch.tensor(tau_np, requires_grad=True)
            y = GumbelSoftmax(logits, tau, hard=hard).rsample(3, (8,))
            (y * torch.tensor(weights)).sum().backward()
            return y.detach().numpy(), logits.grad.numpy(), tau.grad.numpy()
    else:
        import jax
        import jax.numpy as jnp

        def grads(hard):
            def f(logits, tau):
                y = GumbelSoftmax(logits, tau, hard=hard).rsample(3, (8,))
                return jnp.sum(y * jnp.asarray(weights)), y

            (g_l, g_t), y = jax.grad(f, argnums=(0, 1), has_aux=True)(
                jnp.asarray(logits_np), jnp.asarray(tau_np)
            )
            return np.asarray(y), np.asarray(g_l), np.asarray(g_t)

    y_hard, gl_hard, gt_hard = grads(True)
    y_soft, gl_soft, gt_soft = grads(False)
    np.testing.assert_array_equal(y_hard, np.eye(3)[np.argmax(y_soft, axis=-1)])
    np.testing.assert_allclose(gl_hard, gl_soft, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gt_hard, gt_soft, rtol=1e-12, atol=1e-14)
    assert np.any(np.abs(gl_soft) > 1e-3)


def test_shapes_library_device_dtype(backend):
    xp, device = backend
    logits = from_numpy(backend, np.zeros((2, 1, 3)), dtype="float32")
    tau = from_numpy(backend, np.full((4,), 0.5), dtype="float32")
    for cls, kw in ((GumbelSoftmax, {}), (GumbelSoftmax, {"hard": True}), (KDHardConcrete, {})):
        d = cls(logits, tau, **kw)
        assert d.batch_shape == (2, 4) and d.event_shape == (3,)
        y = d.sample(0, (5,))
        assert tuple(y.shape) == (5, 2, 4, 3)
        assert _backend.library_name(y) == _backend.library_name(logits)
        assert y.dtype == xp.float32
        assert str(_backend.device(y)) == str(device)
        y_np = to_numpy(y)
        assert np.all(y_np >= 0)
        np.testing.assert_allclose(y_np.sum(-1), 1, atol=1e-5)
        if cls is GumbelSoftmax:
            lp = d.log_prob(y)
            assert tuple(lp.shape) == (5, 2, 4) and lp.dtype == xp.float32


def test_bad_temperature_and_logits(cpu_backend):
    logits = from_numpy(cpu_backend, np.zeros(3))
    for cls in (GumbelSoftmax, KDHardConcrete):
        for bad in (0.0, -1.0):
            with pytest.raises(ValueError, match="temperature"):
                cls(logits, bad)
        with pytest.raises(ValueError, match="temperature"):
            cls(logits, from_numpy(cpu_backend, np.array(-0.5)), validate_args=True)
        with pytest.raises(ValueError, match="NaN"):
            cls(from_numpy(cpu_backend, np.array([0.0, np.nan])), 1.0, validate_args=True)
    with pytest.raises(TypeError, match="hard"):
        GumbelSoftmax(logits, 1.0, hard=1)


def test_torch_gradcheck_concrete_log_prob():
    torch = pytest.importorskip("torch")
    y = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [0.05, 0.9, 0.05]], dtype=torch.float64)
    logits = torch.tensor([[0.4, -0.3, 0.1]] * 3, dtype=torch.float64, requires_grad=True)
    tau = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, t: GumbelSoftmax(a, t).log_prob(y), (logits, tau))
    vertices = torch.eye(3, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a: GumbelSoftmax(a, 1.0, hard=True).log_prob(vertices), (logits,)
    )


# -- KDHardConcrete -----------------------------------------------------------------------------


def test_kd_hard_concrete_k2_matches_hard_concrete_samplewise(backend):
    logits_np, tau, lam, n = np.array([0.8, -0.1]), 0.6, 1.2, 4096
    logits = from_numpy(backend, logits_np)
    y = to_numpy(KDHardConcrete(logits, tau, lam).sample(11, (n,)))
    g = to_numpy(random.gumbel(11, (n, 2), like=logits))  # the same noise, by seed
    s = np_softmax((logits_np + g) / tau, axis=-1)[:, 0]
    closed_form = np.clip(lam * s - (lam - 1) / 2, 0, 1)
    low, high = -(lam - 1) / 2, (lam + 1) / 2
    hard_concrete = np.clip(
        low + (high - low) * expit((g[:, 0] - g[:, 1] + logits_np[0] - logits_np[1]) / tau), 0, 1
    )
    assert np.max(np.abs(y[:, 0] - closed_form)) <= 1e-12
    assert np.max(np.abs(y[:, 0] - hard_concrete)) <= 1e-12
    np.testing.assert_allclose(y[:, 1], 1 - y[:, 0], atol=1e-15)
    assert np.any(y[:, 0] == 0) and np.any(y[:, 0] == 1)


def test_kd_hard_concrete_k2_log_prob_equals_hard_concrete(backend):
    logits_np, tau = np.array([[0.8, -0.1], [-1.0, 0.5]]), np.array([0.6, 1.1])
    gates = np.array([0.0, 0.2, 0.7, 1.0])
    y = from_numpy(backend, np.stack([gates, 1 - gates], -1)[:, None, :])
    kd = KDHardConcrete(from_numpy(backend, logits_np), from_numpy(backend, tau), 1.2)
    hc = HardConcrete(
        from_numpy(backend, logits_np[:, 0] - logits_np[:, 1]), from_numpy(backend, tau)
    )
    np.testing.assert_allclose(to_numpy(kd.log_prob(y)), to_numpy(hc.log_prob(y)), rtol=1e-13)
    masks = from_numpy(backend, np.array([[True, False], [False, True], [True, True]])[:, None])
    np.testing.assert_allclose(
        to_numpy(kd.face_log_prob(masks)), to_numpy(hc.face_log_prob(masks)), rtol=1e-13
    )
    np.testing.assert_allclose(
        to_numpy(kd.entropy_exact()), to_numpy(hc.entropy_exact()), rtol=1e-13
    )


def test_kd_hard_concrete_k3(cpu_backend):
    d = KDHardConcrete(from_numpy(cpu_backend, LOGITS3), 0.5, 1.5)
    y = to_numpy(d.sample(0, (2000,)))
    assert np.all(y >= 0)
    np.testing.assert_allclose(y.sum(-1), 1, atol=1e-12)
    assert np.any(y == 0)  # the stretch reaches lower faces
    point = from_numpy(cpu_backend, np.array([0.2, 0.3, 0.5]))
    with pytest.raises(NotImplementedError, match="Monte Carlo"):
        d.log_prob(point)
    with pytest.raises(NotImplementedError, match="Monte Carlo"):
        d.face_log_prob(from_numpy(cpu_backend, np.array([True, True, False])))
    with pytest.raises(NotImplementedError):
        d.entropy_exact()


def test_kd_hard_concrete_rejects_scale_at_most_one(cpu_backend):
    logits = from_numpy(cpu_backend, np.zeros(3))
    for bad in (1.0, 0.5):
        with pytest.raises(ValueError, match="scale"):
            KDHardConcrete(logits, 1.0, bad)
    with pytest.raises(ValueError, match="scale"):
        KDHardConcrete(logits, 1.0, from_numpy(cpu_backend, np.array(1.0)), validate_args=True)
