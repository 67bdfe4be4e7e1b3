"""Tests of the face distribution (non-empty independent Bernoullis), on every backend.

References come from enumerating the 2^K - 1 non-empty faces in NumPy, from first principles:
P(f) ∝ Π_k p_k^{f_k} (1 - p_k)^{1 - f_k} with p = σ(η), renormalised over the non-empty faces.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import from_numpy, library_of, to_numpy
from scipy.special import logsumexp

from mixedarray import _special
from mixedarray._backend import array_namespace, device
from mixedarray.distributions import face_bernoulli as fb

RTOL = 1e-12
ATOL = 1e-12


# ---------------------------------------------------------------------------------------------
# Enumeration reference (NumPy, first principles).


def all_faces(K: int) -> np.ndarray:
    """(2^K - 1, K) bool: face with code c = Σ_k f_k 2^k in row c - 1."""
    codes = np.arange(1, 2**K)
    return ((codes[:, None] >> np.arange(K)) & 1).astype(bool)


def codes_of(masks: np.ndarray) -> np.ndarray:
    return (masks.astype(np.int64) << np.arange(masks.shape[-1])).sum(axis=-1)


def enum_log_prob(eta: np.ndarray) -> np.ndarray:
    """log P(f) for every non-empty face: shape eta.shape[:-1] + (2^K - 1,)."""
    faces = all_faces(eta.shape[-1]).astype(np.float64)
    log_p = -np.logaddexp(0.0, -eta)  # log σ(η)
    log_1mp = -np.logaddexp(0.0, eta)  # log(1 - σ(η))
    log_w = log_p @ faces.T + log_1mp @ (1.0 - faces).T
    return log_w - logsumexp(log_w, axis=-1, keepdims=True)


def enum_reference(eta: np.ndarray) -> dict[str, np.ndarray]:
    faces = all_faces(eta.shape[-1])
    lp = enum_log_prob(eta)
    prob = np.exp(lp)
    sizes = faces.sum(axis=-1)
    size_dist = np.stack(
        [prob[..., sizes == n].sum(axis=-1) for n in range(1, eta.shape[-1] + 1)], axis=-1
    )
    return {
        "faces": faces,
        "log_prob": lp,
        "prob": prob,
        # Σ_{f ≠ ∅} e^{η·f} = Π(1 + e^η) − 1.
        "A": logsumexp(eta @ faces.T.astype(np.float64), axis=-1),
        "marginals": prob @ faces.astype(np.float64),
        "entropy": -(prob * lp).sum(axis=-1),
        "size": size_dist,
    }


def enum_cross_entropy(eta_p: np.ndarray, eta_q: np.ndarray) -> np.ndarray:
    lp, lq = enum_log_prob(eta_p), enum_log_prob(eta_q)
    return -(np.exp(lp) * lq).sum(axis=-1)


def enum_kl(eta_p: np.ndarray, eta_q: np.ndarray) -> np.ndarray:
    lp, lq = enum_log_prob(eta_p), enum_log_prob(eta_q)
    return (np.exp(lp) * (lp - lq)).sum(axis=-1)


def cases() -> list[np.ndarray]:
    """Face-logit batches (n, K), random and extreme, for K = 1..8."""
    rng = np.random.default_rng(20220)
    extreme = {
        3: [[50.0, 50.0, 50.0], [-50.0, 50.0, -50.0]],
        4: [[50.0, -1.0, 0.3, -2.0], [-50.0, -1.0, 0.3, 50.0], [-50.0, -50.0, -50.0, -49.0]],
        5: [
            [-30.0] * 5,  # every face but the vertices has negligible mass
            [20.0, -20.0, 20.0, -20.0, 5.0],
            [-20.0, 20.0, -20.0, 20.0, -5.0],
        ],
        6: [[-30.0, -31.0, -29.5, -33.0, -30.2, -35.0]],
        8: [[0.0] * 8],
    }
    return [
        np.concatenate(
            [rng.normal(scale=2.0, size=(3, K)), np.reshape(extreme.get(K, []), (-1, K))]
        )
        for K in range(1, 9)
    ]


CASES = cases()
CASE_IDS = [f"K{c.shape[-1]}" for c in CASES]


def skip_slow_shapes(backend, K: int) -> None:
    # JAX compiles every primitive anew for each new shape in eager mode (~1 s per K here);
    # K = 2, 3, 7 are covered on the other backends.
    if library_of(backend) == "jax" and K in (2, 3, 7):
        pytest.skip("K covered on the other backends (JAX eager compiles per shape)")


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(to_numpy(actual), expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# Closed forms against enumeration.


def test_enumeration_is_normalised():
    for eta in CASES:
        np.testing.assert_allclose(np.exp(enum_log_prob(eta)).sum(axis=-1), 1.0, rtol=1e-13)


@pytest.mark.parametrize("eta", CASES, ids=CASE_IDS)
def test_closed_forms_match_enumeration(backend, eta):
    skip_slow_shapes(backend, eta.shape[-1])
    ref = enum_reference(eta)
    x = from_numpy(backend, eta)
    faces = from_numpy(backend, ref["faces"])
    lp = fb.log_prob(x[:, None, :], faces[None, :, :])
    assert tuple(lp.shape) == ref["log_prob"].shape
    close(lp, ref["log_prob"])
    np.testing.assert_allclose(np.exp(to_numpy(lp)).sum(axis=-1), 1.0, rtol=1e-13)
    close(fb.log_normalizer(x), ref["A"])
    close(fb.marginals(x), ref["marginals"])
    close(fb.entropy(x), ref["entropy"])
    size = fb.size_distribution(x)
    close(size, ref["size"])
    np.testing.assert_allclose(to_numpy(size).sum(axis=-1), 1.0, rtol=1e-13)


@pytest.mark.parametrize("eta", CASES, ids=CASE_IDS)
def test_cross_entropy_and_kl_match_enumeration(backend, eta):
    skip_slow_shapes(backend, eta.shape[-1])
    rng = np.random.default_rng(7)
    eta_q = np.concatenate([eta[::-1], eta + rng.normal(size=eta.shape)], axis=0)
    eta_q[-1] = -eta[0]
    eta_p = np.concatenate([eta, eta], axis=0)
    p, q = from_numpy(backend, eta_p), from_numpy(backend, eta_q)
    close(fb.cross_entropy(p, q), enum_cross_entropy(eta_p, eta_q))
    kl = fb.kl_divergence(p, q)
    close(kl, enum_kl(eta_p, eta_q), atol=1e-11)
    assert np.all(to_numpy(kl) >= 0)
    np.testing.assert_array_equal(to_numpy(fb.kl_divergence(p, p)), 0.0)
    close(fb.cross_entropy(p, p), enum_reference(eta_p)["entropy"])


def test_broadcasting_and_batch_shapes(backend):
    rng = np.random.default_rng(3)
    eta = rng.normal(size=(2, 3, 4))
    x = from_numpy(backend, eta)
    assert tuple(fb.log_normalizer(x).shape) == (2, 3)
    assert tuple(fb.entropy(x).shape) == (2, 3)
    assert tuple(fb.marginals(x).shape) == (2, 3, 4)
    assert tuple(fb.size_distribution(x).shape) == (2, 3, 4)
    assert tuple(fb.mode(x).shape) == (2, 3, 4)
    q = from_numpy(backend, rng.normal(size=(3, 4)))
    kl = fb.kl_divergence(x, q)
    assert tuple(kl.shape) == (2, 3)
    close(kl, enum_kl(eta, np.broadcast_to(to_numpy(q), eta.shape)))
    # 0-d results are arrays of the caller's library, not Python/NumPy scalars.
    a = fb.log_normalizer(x[0, 0, :])
    assert tuple(a.shape) == ()
    assert array_namespace(a) is array_namespace(x)
    assert device(a) == device(x)


def test_empty_mask_is_minus_inf(backend):
    eta = from_numpy(backend, np.array([[0.3, -2.0, 1.0], [-30.0, -30.0, -30.0]]))
    masks = from_numpy(backend, np.array([[False, False, False], [True, False, True]]))
    lp = to_numpy(fb.log_prob(eta, masks))
    assert lp[0] == -np.inf
    assert np.isfinite(lp[1])
    assert not np.any(np.isnan(lp))


def test_mode_is_enumerated_argmax(backend):
    rng = np.random.default_rng(11)
    checked = 0
    for K in (1, 4, 6):
        eta = rng.normal(scale=1.5, size=(60, K))
        eta[:10] -= 3.0  # rows without positive logits: the mode is a vertex
        ref = enum_reference(eta)
        order = np.sort(ref["prob"], axis=-1)
        unique = (order[:, -1] - order[:, -2] > 1e-9) if K > 1 else np.ones(60, bool)
        expected = ref["faces"][np.argmax(ref["prob"], axis=-1)]
        got = to_numpy(fb.mode(from_numpy(backend, eta)))
        assert got.dtype == np.bool_
        np.testing.assert_array_equal(got[unique], expected[unique])
        checked += unique.sum()
    assert checked > 120
    # All negative with a tie: the first maximiser.
    got = to_numpy(fb.mode(from_numpy(backend, np.array([[-3.0, -1.0, -1.0, -2.0]]))))
    np.testing.assert_array_equal(got, [[False, True, False, False]])


def test_log_normalizer_equals_log1mexp_form(backend):
    # A = S + log1mexp(S) (paper notes §7); the module computes log1mexp(S) by a log-sum.
    eta = np.random.default_rng(5).normal(scale=3.0, size=(6, 7))
    x = from_numpy(backend, eta)
    xp, _ = backend
    s = xp.sum(xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(x, xp.zeros_like(x)), axis=-1)
    close(fb.log_normalizer(x), to_numpy(s + _special.log1mexp(s)))


# ---------------------------------------------------------------------------------------------
# Dtypes, extremes, validation.


@pytest.mark.parametrize("scale", [1.0, 50.0])
def test_float32_finite_and_accurate(backend, scale):
    eta = np.array([[1.0, -1.0, 0.5, -0.2], [-1.0, -1.0, -1.0, -1.0], [1.0, -1.0, 1.0, 1.0]])
    eta = eta * scale
    x = from_numpy(backend, eta, "float32")
    ref = enum_reference(eta.astype(np.float32).astype(np.float64))
    for name, fn in [
        ("A", fb.log_normalizer),
        ("marginals", fb.marginals),
        ("entropy", fb.entropy),
        ("size", fb.size_distribution),
    ]:
        out = fn(x)
        assert out.dtype == x.dtype
        got = to_numpy(out)
        assert np.all(np.isfinite(got)), name
        np.testing.assert_allclose(got, ref[name], rtol=1e-5, atol=1e-6, err_msg=name)
    kl = to_numpy(fb.kl_divergence(x, backend[0].flip(x, axis=0)))
    assert np.all(np.isfinite(kl))
    assert np.all(kl >= 0)


def test_float32_far_negative_logits_stay_exact(backend):
    # S = Σ softplus(η) underflows to 0 in float32 here; A must still be logsumexp(η) + tiny.
    eta = np.array([[-110.0, -111.0, -109.0]])
    x = from_numpy(backend, eta, "float32")
    np.testing.assert_allclose(to_numpy(fb.log_normalizer(x)), logsumexp(eta, -1), rtol=1e-6)
    m = to_numpy(fb.marginals(x))
    np.testing.assert_allclose(m, np.exp(eta - logsumexp(eta, -1, keepdims=True)), rtol=1e-5)
    assert np.all(np.isfinite(to_numpy(fb.entropy(x))))
    assert np.all(to_numpy(fb.sample(x, 0, (50,))).sum(axis=-1) == 1)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_computed_in_float32(dtype):
    torch = pytest.importorskip("torch")
    eta = torch.tensor([[1.0, -2.0, 0.5], [-8.0, -9.0, -7.5]], dtype=getattr(torch, dtype))
    ref = enum_reference(eta.float().double().numpy())
    out = fb.entropy(eta)
    assert out.dtype == eta.dtype
    np.testing.assert_allclose(out.float().numpy(), ref["entropy"], rtol=1e-2, atol=1e-2)
    assert fb.marginals(eta).dtype == eta.dtype
    assert fb.sample(eta, 0, (4,)).dtype == torch.bool


def test_bad_input(backend):
    eta = from_numpy(backend, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="mask"):
        fb.log_prob(eta, from_numpy(backend, np.ones((2, 3))))
    with pytest.raises(ValueError, match="mask"):
        fb.log_prob(eta, from_numpy(backend, np.ones((2, 4), dtype=bool)))
    with pytest.raises(ValueError, match="eta"):
        fb.entropy(from_numpy(backend, np.zeros((2, 0))))
    with pytest.raises(ValueError, match="eta_p and eta_q"):
        fb.kl_divergence(eta, from_numpy(backend, np.zeros((2, 4))))


def test_mixed_libraries_rejected():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="numpy and torch"):
        fb.kl_divergence(np.zeros(3), torch.zeros(3, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# Sampler.


def _z_scores(samples: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Standardised face counts for faces with expected count >= 50."""
    n = samples.shape[0]
    prob = np.exp(enum_log_prob(eta))
    counts = np.bincount(codes_of(samples), minlength=2 ** eta.shape[-1])[1:]
    expected = n * prob
    keep = expected >= 50
    assert keep.sum() >= 3
    se = np.sqrt(n * prob * (1 - prob))
    return (counts[keep] - expected[keep]) / se[keep]


def _n_samples(backend) -> int:
    return 200_000


@pytest.mark.parametrize(
    "eta",
    [np.array([-1.0, 0.5, -0.3, 1.2]), np.array([-2.0, -2.5, -1.5, -3.0])],
    ids=["mixed", "negative"],
)
def test_sample_frequencies(backend, eta):
    n = _n_samples(backend)
    samples = to_numpy(fb.sample(from_numpy(backend, eta), 1234, (n,)))
    assert samples.shape == (n, 4)
    assert samples.dtype == np.bool_
    assert np.all(samples.any(axis=-1)), "empty face sampled"
    z = _z_scores(samples, eta)
    assert np.max(np.abs(z)) < 4.5, z
    # Negative control: the same samples against a planted wrong distribution must fail.
    z_wrong = _z_scores(samples, eta + 0.05)
    assert np.max(np.abs(z_wrong)) > 4.5, z_wrong


def test_sample_far_negative_gives_vertices(backend):
    eta = np.array([-20.0, -21.0, -19.0, -22.0])
    n = _n_samples(backend)
    samples = to_numpy(fb.sample(from_numpy(backend, eta), 99, (n,)))
    assert np.all(samples.sum(axis=-1) == 1)
    counts = samples.sum(axis=0)
    prob = np.exp(eta - logsumexp(eta))
    z = (counts - n * prob) / np.sqrt(n * prob * (1 - prob))
    assert np.max(np.abs(z)) < 4.5, z
    planted = eta + np.array([0.05, 0.0, 0.0, 0.0])
    wrong = np.exp(planted - logsumexp(planted))
    assert np.max(np.abs((counts - n * wrong) / np.sqrt(n * wrong * (1 - wrong)))) > 4.5


def test_sample_batch_matches_each_row(backend):
    # Rows of a batch are sampled from their own logits (one check per row, K = 3).
    eta = np.array([[2.0, -1.0, 0.0], [-1.0, -1.0, 3.0]])
    n = 50_000
    samples = to_numpy(fb.sample(from_numpy(backend, eta), 5, (n,)))
    assert samples.shape == (n, 2, 3)
    for row in range(2):
        z = _z_scores(samples[:, row, :], eta[row])
        assert np.max(np.abs(z)) < 4.5


def _generator(backend, seed):
    lib = library_of(backend)
    if lib in ("numpy", "array_api_strict"):
        return np.random.default_rng(seed)
    if lib == "torch":
        import torch

        return torch.Generator(device=backend[1]).manual_seed(seed)
    if lib == "jax":
        import jax

        return jax.random.key(seed)
    return seed


def test_sample_shape_dtype_device_and_seed(backend):
    eta = from_numpy(backend, np.random.default_rng(0).normal(size=(2, 3, 5)))
    s = fb.sample(eta, _generator(backend, 3), (4, 6))
    assert tuple(s.shape) == (4, 6, 2, 3, 5)
    assert s.dtype == backend[0].bool
    assert array_namespace(s) is array_namespace(eta)
    assert device(s) == device(eta)
    again = fb.sample(eta, _generator(backend, 3), (4, 6))
    np.testing.assert_array_equal(to_numpy(s), to_numpy(again))
    np.testing.assert_array_equal(
        to_numpy(fb.sample(eta, 8, (4, 6))), to_numpy(fb.sample(eta, 8, (4, 6)))
    )
    assert tuple(fb.sample(eta[0, ...], 8).shape) == (3, 5)
    other = fb.sample(eta, _generator(backend, 4), (4, 6))
    assert not np.array_equal(to_numpy(s), to_numpy(other))


# ---------------------------------------------------------------------------------------------
# Gradients (torch, JAX) and jit.


def test_torch_gradcheck():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    eta = torch.randn(2, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    eta_q = torch.randn(2, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    far = (torch.randn(1, 4, generator=gen, dtype=torch.float64) - 25).requires_grad_()
    for fn in (fb.log_normalizer, fb.entropy, fb.marginals, fb.size_distribution):
        assert torch.autograd.gradcheck(fn, (eta,))
        assert torch.autograd.gradcheck(fn, (far,))
    assert torch.autograd.gradcheck(fb.kl_divergence, (eta, eta_q))
    assert torch.autograd.gradcheck(fb.cross_entropy, (eta, eta_q))


def test_torch_score_identity():
    torch = pytest.importorskip("torch")
    eta = torch.tensor([[0.3, -1.2, 2.0, -0.5], [-30.0, -31.0, 1.0, -29.0]], dtype=torch.float64)
    faces = torch.from_numpy(all_faces(4))
    x = eta[:, None, :].expand(2, 15, 4).clone().requires_grad_()
    (grad,) = torch.autograd.grad(fb.log_prob(x, faces[None]).sum(), x)
    expected = faces[None].double() - fb.marginals(eta)[:, None, :]
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    # ∇A = m.
    y = eta.clone().requires_grad_()
    (grad_a,) = torch.autograd.grad(fb.log_normalizer(y).sum(), y)
    torch.testing.assert_close(grad_a, fb.marginals(eta), rtol=1e-12, atol=1e-12)


@pytest.fixture
def jax64():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _finite_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        grad[i] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
    return grad


def test_jax_grad_matches_finite_differences(jax64):
    jnp = jax64.numpy
    rng = np.random.default_rng(1)
    eta = rng.normal(size=(2, 4))
    eta_q = rng.normal(size=(2, 4))
    funcs = {
        "A": lambda e: jnp.sum(fb.log_normalizer(e)),
        "H": lambda e: jnp.sum(fb.entropy(e)),
        "KL_p": lambda e: jnp.sum(fb.kl_divergence(e, jnp.asarray(eta_q))),
        "KL_q": lambda e: jnp.sum(fb.kl_divergence(jnp.asarray(eta), e)),
    }
    for name, f in funcs.items():
        f = jax64.jit(f)
        auto = np.asarray(jax64.grad(f)(jnp.asarray(eta)))
        fd = _finite_difference(lambda v, f=f: f(jnp.asarray(v)), eta)
        np.testing.assert_allclose(auto, fd, rtol=1e-6, atol=1e-8, err_msg=name)
    # Score identity: ∇ log P(f) = f − m.
    faces = all_faces(4)
    score = jax64.vmap(lambda f: jax64.grad(lambda e: fb.log_prob(e, f))(jnp.asarray(eta[0])))(
        jnp.asarray(faces)
    )
    m = to_numpy(fb.marginals(jnp.asarray(eta[0])))
    np.testing.assert_allclose(np.asarray(score), faces - m, rtol=1e-12, atol=1e-12)


def test_jax_jit_equals_eager(jax64):
    jnp = jax64.numpy
    eta = jnp.asarray(np.random.default_rng(2).normal(size=(3, 6)) - 1.0)
    np.testing.assert_allclose(
        np.asarray(jax64.jit(fb.entropy)(eta)), np.asarray(fb.entropy(eta)), rtol=1e-14
    )
    key = jax64.random.key(17)
    jitted = jax64.jit(fb.sample, static_argnums=2)(eta, key, (500,))
    eager = fb.sample(eta, key, (500,))
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(eager))
    assert jitted.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(jax64.jit(fb.mode)(eta)), np.asarray(fb.mode(eta)))


def test_mode_has_highest_log_prob_among_faces(cpu_backend):
    # Property, cheap: mode's log_prob equals the max over all faces (ties allowed).
    eta = np.random.default_rng(9).normal(scale=2.0, size=(25, 6))
    x = from_numpy(cpu_backend, eta)
    faces = from_numpy(cpu_backend, all_faces(6))
    best = np.max(to_numpy(fb.log_prob(x[:, None, :], faces[None, ...])), axis=-1)
    at_mode = to_numpy(fb.log_prob(x, fb.mode(x)))
    np.testing.assert_allclose(at_mode, best, rtol=1e-13, atol=1e-13)
    assert math.isfinite(float(at_mode.sum()))
