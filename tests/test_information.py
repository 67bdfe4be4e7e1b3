"""Direct-sum entropy, cross-entropy, KL and code length (mixedarray.information)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import mixedarray as ma
from mixedarray import _backend
from tests.helpers import from_numpy, library_of, to_numpy

# K = 2 Gaussian-Sparsemax whose bit form is μ = 0.3, s = 0.7 (paper-notes §4 and §6):
# μ = (loc₁ − loc₂ + 1)/2, s = √(σ₁² + σ₂²)/2.
BIT_LOC = np.array([-0.4, 0.0])
BIT_SCALE = np.full(2, 0.7 * math.sqrt(2))


def _bit(backend):
    return ma.GaussianSparsemax(from_numpy(backend, BIT_LOC), from_numpy(backend, BIT_SCALE))


def _quantised_entropy_bits(mu, s, bits):
    """Entropy (bits) of Y quantised to cells of width 2^-N, plus the two point masses."""
    edges = np.linspace(0, 1, 2**bits + 1)
    cells = np.diff(stats.norm.cdf(edges, mu, s))
    probs = np.concatenate([[stats.norm.cdf(0, mu, s), stats.norm.sf(1, mu, s)], cells])
    return -np.sum(probs * np.log2(probs))


@pytest.mark.parametrize(("bits", "tol"), [(4, 2e-4), (8, 1e-5)])
def test_code_length_equals_quantised_entropy(backend, bits, tol):
    """L_N = H⊕/ln 2 + N E[dim F] (paper-notes §4: 3.46907 vs 3.46901 bits at N = 4)."""
    value = float(to_numpy(ma.code_length(_bit(backend), bits)))
    np.testing.assert_allclose(value, _quantised_entropy_bits(0.3, 0.7, bits), atol=tol)
    if bits == 4:
        np.testing.assert_allclose(value, 3.46901, atol=1e-5)


def test_exact_and_monte_carlo_agree(backend):
    d = _bit(backend)
    n = 100_000 if library_of(backend) == "numpy" else 20_000
    for exact, mc in [
        (ma.entropy(d), ma.entropy(d, method="mc", rng=0, num_samples=n, return_stderr=True)),
        (ma.kl_divergence(d, ma.MaxEntMixed(2, like=d.loc)),
         ma.kl_divergence(d, ma.MaxEntMixed(2, like=d.loc), method="mc", rng=1,
                          num_samples=n, return_stderr=True)),
        (ma.code_length(d, 3),
         ma.code_length(d, 3, method="mc", rng=2, num_samples=n, return_stderr=True)),
    ]:
        assert _backend.library_name(exact) == library_of(backend)
        gap = abs(float(to_numpy(exact)) - float(to_numpy(mc.value)))
        stderr = float(to_numpy(mc.stderr))
        assert 0 < stderr < 0.1 * abs(float(to_numpy(exact)))
        assert gap <= 4.5 * stderr
        assert abs(float(to_numpy(exact)) + 10 * stderr - float(to_numpy(mc.value))) > 4.5 * stderr


def test_kl_to_the_uniform_bit_is_log3_minus_entropy(backend):
    """KL⊕(q ‖ MaxEntMixed(2)) = log 3 − H⊕(q) (the bit-vector VAE's prior, paper-notes §9b)."""
    d = _bit(backend)
    kl = float(to_numpy(ma.kl_divergence(d, ma.MaxEntMixed(2, like=d.loc))))
    np.testing.assert_allclose(kl, math.log(3) - float(to_numpy(ma.entropy(d))), rtol=1e-12)
    assert kl > 0
    uniform = ma.MaxEntMixed(2, like=d.loc)
    np.testing.assert_allclose(float(to_numpy(ma.kl_divergence(uniform, uniform))), 0, atol=1e-12)


def test_face_distribution_kl_properties(backend):
    eta = from_numpy(backend, np.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]]))
    p = ma.NonEmptyBernoulli(eta)
    q = ma.NonEmptyBernoulli(from_numpy(backend, np.zeros((2, 3))))
    kl, h, cross = (to_numpy(v) for v in (ma.kl_divergence(p, q), ma.entropy(p),
                                          ma.cross_entropy(p, q)))
    assert np.all(kl > 0)
    np.testing.assert_allclose(kl, cross - h, rtol=1e-10)
    np.testing.assert_allclose(to_numpy(ma.kl_divergence(p, p)), 0, atol=1e-12)


def test_exact_values_have_zero_stderr(backend):
    est = ma.entropy(_bit(backend), return_stderr=True)
    assert float(to_numpy(est.stderr)) == 0


def test_no_exact_form_names_the_estimator():
    d = ma.GaussianSparsemax(np.array([0.4, 0.1, -0.3]), 0.5)
    with pytest.raises(NotImplementedError, match="Monte Carlo"):
        ma.entropy(d, method="exact")
    with pytest.raises(ValueError, match="needs rng"):
        ma.entropy(d)
    with pytest.raises(ValueError, match="needs rng"):
        ma.entropy(_bit_numpy(), method="mc")
    with pytest.raises(ValueError, match="method must be one of"):
        ma.entropy(d, method="closed")


def _bit_numpy():
    return ma.GaussianSparsemax(BIT_LOC, BIT_SCALE)


def test_mismatched_pairs_are_rejected():
    with pytest.raises(ValueError, match="K = 2 vertices but q has K = 3"):
        ma.kl_divergence(_bit_numpy(), ma.MaxEntMixed(3))
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different array libraries"):
        ma.kl_divergence(_bit_numpy(), ma.MaxEntMixed(2, like=torch.zeros(1)))
    with pytest.raises(ValueError, match="bits must be a number"):
        ma.code_length(_bit_numpy(), -1)


def test_mixed_dirichlet_against_maxent_exact_equals_monte_carlo(backend):
    """KL⊕(MixedDirichlet ‖ MaxEntMixed) through E[dim F] equals its Monte Carlo estimate."""
    d = ma.MixedDirichlet(from_numpy(backend, np.array([0.5, -1.0, 2.0, 0.0])),
                          from_numpy(backend, np.array([0.7, 1.5, 2.0, 0.3])))
    prior = ma.MaxEntMixed(4, like=d.face_logits)
    n = 60_000 if library_of(backend) == "numpy" else 15_000
    exact = float(to_numpy(ma.kl_divergence(d, prior)))
    mc = ma.kl_divergence(d, prior, method="mc", rng=4, num_samples=n, return_stderr=True)
    stderr = float(to_numpy(mc.stderr))
    assert 0 < stderr < 0.1 * exact
    assert abs(exact - float(to_numpy(mc.value))) <= 4.5 * stderr
    assert abs(exact + 10 * stderr - float(to_numpy(mc.value))) > 4.5 * stderr


@pytest.mark.parametrize("make", [
    lambda: ma.HardConcrete(np.array([0.3, -1.0])),
    lambda: ma.KDHardConcrete(np.array([0.2, -0.3]), 0.7),
    lambda: ma.GaussianSparsemax(np.array([[0.1, -0.2], [1.0, 0.0]]), 0.6),
], ids=["HardConcrete", "KDHardConcrete", "GaussianSparsemax"])
def test_one_bit_entropies_and_kl_to_the_uniform_bit(make):
    """Each K = 2 distribution: exact H⊕ and KL⊕(· ‖ MaxEntMixed(2)) = log 3 − H⊕ vs MC."""
    d = make()
    prior = ma.MaxEntMixed(2, batch_shape=d.batch_shape)
    exact_h, exact_kl = np.asarray(ma.entropy(d)), np.asarray(ma.kl_divergence(d, prior))
    np.testing.assert_allclose(exact_kl, math.log(3) - exact_h, rtol=1e-12)
    mc = ma.kl_divergence(d, prior, method="mc", rng=9, num_samples=100_000, return_stderr=True)
    assert np.all(np.abs(exact_kl - mc.value) <= 4.5 * mc.stderr)
    assert not np.all(np.abs(exact_kl + 10 * mc.stderr - mc.value) <= 4.5 * mc.stderr)


def test_mixed_dirichlet_entropy_is_rao_blackwellised(backend):
    """MC entropy = exact H(F) + mean of closed-form h over faces: agrees with the exact
    value and has a smaller standard error than the plain −log p(Y) average."""
    d = ma.MixedDirichlet(from_numpy(backend, np.array([0.5, -1.0, 2.0, 0.0])),
                          from_numpy(backend, np.array([0.7, 1.5, 2.0, 0.3])))
    n = 40_000 if library_of(backend) == "numpy" else 10_000
    exact = float(to_numpy(ma.entropy(d)))
    rb = ma.entropy(d, method="mc", rng=3, num_samples=n, return_stderr=True)
    plain = ma.expectation(lambda y: -d.log_prob(y), d, 3, n)
    value, stderr = float(to_numpy(rb.value)), float(to_numpy(rb.stderr))
    assert abs(value - exact) <= 4.5 * stderr
    assert abs(value - (exact + 10 * stderr)) > 4.5 * stderr
    assert stderr < float(to_numpy(plain.stderr))


def test_mixed_dirichlet_kl_is_rao_blackwellised(backend):
    """MC KL = exact face KL + mean of the closed-form Dirichlet KL over faces of p."""
    p = ma.MixedDirichlet(from_numpy(backend, np.array([0.5, -1.0, 2.0, 0.0])),
                          from_numpy(backend, np.array([0.7, 1.5, 2.0, 0.3])))
    q = ma.MixedDirichlet(from_numpy(backend, np.array([0.1, 0.2, -0.3, 0.4])),
                          from_numpy(backend, np.array([1.0, 0.5, 1.2, 2.0])))
    n = 40_000 if library_of(backend) == "numpy" else 10_000
    exact = float(to_numpy(ma.kl_divergence(p, q)))
    rb = ma.kl_divergence(p, q, method="mc", rng=5, num_samples=n, return_stderr=True)
    plain = ma.expectation(lambda y: p.log_prob(y) - q.log_prob(y), p, 5, n)
    value, stderr = float(to_numpy(rb.value)), float(to_numpy(rb.stderr))
    assert abs(value - exact) <= 4.5 * stderr
    assert abs(value - (exact + 10 * stderr)) > 4.5 * stderr
    assert stderr < float(to_numpy(plain.stderr))


def test_kl_without_an_exact_entropy_falls_back_to_monte_carlo():
    """p with closed-form face sizes but no exact entropy: 'exact' says so, 'auto' estimates."""

    class SizesOnly(ma.MaxEntMixed):
        entropy_exact = None  # as if the entropy had no closed form

    p, q = SizesOnly(3), ma.MaxEntMixed(3, 1)
    with pytest.raises(NotImplementedError, match="Monte Carlo"):
        ma.kl_divergence(p, q, method="exact")
    est = ma.kl_divergence(p, q, rng=0, num_samples=20_000, return_stderr=True)
    exact = float(ma.kl_divergence(ma.MaxEntMixed(3), q))
    assert abs(float(est.value) - exact) <= 4.5 * float(est.stderr)


def test_monte_carlo_chunks_bound_memory_and_show_progress(backend, capsys):
    """``chunk_size`` and ``progress`` reach every estimator (plain and Rao–Blackwellised)."""
    gsp = ma.GaussianSparsemax(
        from_numpy(backend, np.array([0.2, -0.3, 0.5])), from_numpy(backend, np.full(3, 0.6))
    )
    md = ma.MixedDirichlet(
        from_numpy(backend, np.array([0.5, -1.0, 2.0])), from_numpy(backend, np.full(3, 1.5))
    )
    prior = ma.MaxEntMixed(3, 2.0, like=gsp.loc)
    n = 4_000
    calls = {
        "entropy": lambda d, **kw: ma.entropy(d, **kw),
        "cross_entropy": lambda d, **kw: ma.cross_entropy(d, prior, **kw),
        "kl_divergence": lambda d, **kw: ma.kl_divergence(d, prior, **kw),
        "code_length": lambda d, **kw: ma.code_length(d, 2.0, **kw),
    }
    for name, call in calls.items():
        for d in (gsp, md):
            whole = call(d, method="mc", rng=1, num_samples=n, return_stderr=True)
            capsys.readouterr()
            chunked = call(
                d, method="mc", rng=2, num_samples=n, return_stderr=True, chunk_size=900,
                progress=True,
            )  # fmt: skip
            bar = capsys.readouterr().err
            assert "5/5" in bar, (name, bar)  # 4 chunks of 900 and one of 400
            combined = np.hypot(to_numpy(whole.stderr), to_numpy(chunked.stderr))
            z = np.abs(to_numpy(whole.value) - to_numpy(chunked.value)) / combined
            assert z < 4.5, (name, type(d).__name__, z)
            with pytest.raises(ValueError, match="chunk_size must be a positive int"):
                call(d, method="mc", rng=1, num_samples=n, chunk_size=0)


def test_monte_carlo_memory_is_bounded_by_the_chunk():
    """Peak memory does not grow with num_samples (NumPy; tracemalloc sees its allocations)."""
    import tracemalloc

    d = ma.GaussianSparsemax(np.array([0.2, -0.3, 0.5, 0.1]), np.full(4, 0.6))
    prior = ma.MaxEntMixed(4, 1.0)
    calls = {
        "entropy": lambda n: ma.entropy(d, method="mc", rng=0, num_samples=n, chunk_size=2_000),
        "kl": lambda n: ma.kl_divergence(
            d, prior, method="mc", rng=0, num_samples=n, chunk_size=2_000
        ),
    }
    for name, call in calls.items():
        call(4_000)  # first-use allocations (caches, tables) are not the estimator's
        peaks = {}
        for n in (20_000, 200_000):
            tracemalloc.start()
            try:
                call(n)
                peaks[n] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        # 200 000 draws of K = 4 in float64 alone would take 6.4 MB more than 20 000 do.
        assert peaks[200_000] < peaks[20_000] + 1_000_000, (name, peaks)
