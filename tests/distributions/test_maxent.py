"""MaxEntMixed: the maximum-entropy mixed distribution (paper-notes §4), on every backend."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import comb, gammaln, logsumexp

from mixedarray import _backend
from mixedarray.distributions import MaxEntMixed
from tests.helpers import from_numpy, library_of, to_numpy


def _like(backend):
    return from_numpy(backend, np.zeros(1))


def _size_law(num_vertices, bits, with_binomial=True):
    """P(|F| = k) ∝ [C(K, k)] 2^{N(k−1)}/(k−1)!, from first principles."""
    k = np.arange(1, num_vertices + 1)
    log_w = bits * (k - 1) * np.log(2) - gammaln(k)
    if with_binomial:
        log_w = log_w + np.log(comb(num_vertices, k))
    return np.exp(log_w - logsumexp(log_w))


def _entropy_by_enumeration(num_vertices, bits):
    """H⊕ = −Σ_f ∫_f p log p dλ_f with p uniform on each face: Σ_f P(f)(log vol f − log P(f))."""
    total, log_z_terms = 0.0, []
    faces = [f for f in itertools.product([0, 1], repeat=num_vertices) if any(f)]
    for f in faces:
        k = sum(f)
        log_z_terms.append(bits * (k - 1) * math.log(2) - math.lgamma(k))
    log_z = logsumexp(log_z_terms)
    for f, term in zip(faces, log_z_terms, strict=True):
        p_face, log_vol = math.exp(term - log_z), -math.lgamma(sum(f))
        total += p_face * (log_vol - (term - log_z))
    return total


@pytest.mark.parametrize(("num_vertices", "bits", "value"), [(2, 0, math.log(3)), (10, 0, 5.0902)])
def test_entropy_matches_paper_values(backend, num_vertices, bits, value):
    d = MaxEntMixed(num_vertices, bits, like=_like(backend))
    entropy = d.entropy_exact()
    assert _backend.library_name(entropy) == library_of(backend)
    np.testing.assert_allclose(float(to_numpy(entropy)), value, atol=5e-5)


@pytest.mark.parametrize(("num_vertices", "bits"), [(3, 0), (5, 1), (6, 2.5), (10, 1)])
def test_entropy_and_code_length_by_enumeration(backend, num_vertices, bits):
    d = MaxEntMixed(num_vertices, bits, like=_like(backend))
    np.testing.assert_allclose(float(to_numpy(d.entropy_exact())),
                               _entropy_by_enumeration(num_vertices, bits), rtol=1e-12)
    # max J_N = H⊕ + N ln2 E[dim F] = log Σ_k C(K,k) 2^{N(k−1)}/(k−1)!  (paper-notes §4)
    k = np.arange(1, num_vertices + 1)
    log_sum = logsumexp(np.log(comb(num_vertices, k)) + bits * (k - 1) * np.log(2) - gammaln(k))
    j = to_numpy(d.entropy_exact()) + bits * math.log(2) * to_numpy(d.mean_dim())
    np.testing.assert_allclose(float(j), log_sum, rtol=1e-12)
    if (num_vertices, bits) == (10, 1):
        np.testing.assert_allclose(float(j), 6.7521, atol=5e-5)


def test_keeps_the_binomial_factor_the_authors_dropped():
    """K = 10, N = 0: P(|F| = 1..5) = .062 .277 .369 .215 .065, not .368 .368 .184 .061 .015."""
    probs = MaxEntMixed(10).size_probs()
    np.testing.assert_allclose(probs[:5], [0.062, 0.277, 0.369, 0.215, 0.065], atol=5e-4)
    authors = _size_law(10, 0, with_binomial=False)
    np.testing.assert_allclose(authors[:5], [0.368, 0.368, 0.184, 0.061, 0.015], atol=5e-4)
    # Their prior, uniform within faces of each size, has lower entropy (4.56 < 5.09).
    k = np.arange(1, 11)
    per_face = authors / comb(10, k)
    authors_entropy = np.sum(authors * (-gammaln(k) - np.log(per_face)))
    np.testing.assert_allclose(authors_entropy, 4.56, atol=5e-3)
    assert authors_entropy < float(MaxEntMixed(10).entropy_exact())


@pytest.mark.parametrize("bits", [0, 1.5])
def test_density_integrates_to_one_over_the_direct_sum_measure(backend, bits):
    """Σ_f ∫_f p dλ_f = Σ_f vol(f) p(f) = 1 (p is constant on each face), K = 4."""
    num_vertices = 4
    d = MaxEntMixed(num_vertices, bits, like=_like(backend))
    masks = np.array([f for f in itertools.product([False, True], repeat=4) if any(f)])
    # A point in the relative interior of each face: uniform weights on the face.
    points = masks / masks.sum(axis=1, keepdims=True)
    log_p = to_numpy(d.log_prob(from_numpy(backend, points)))
    log_vol = -gammaln(masks.sum(axis=1))
    np.testing.assert_allclose(np.exp(logsumexp(log_p + log_vol)), 1.0, rtol=1e-12)
    # P(F = f) = vol(f)·p(f), and face_log_prob says the same.
    face = to_numpy(d.face_log_prob(from_numpy(backend, masks)))
    np.testing.assert_allclose(face, log_p + log_vol, rtol=1e-12)
    if bits == 0:  # constant density 1/μ⊕(Δ) at N = 0
        np.testing.assert_allclose(log_p, -np.log(sum(comb(4, k) / math.factorial(k - 1)
                                                      for k in range(1, 5))), rtol=1e-12)


def test_empty_mask_has_probability_zero(backend):
    d = MaxEntMixed(3, like=_like(backend))
    out = to_numpy(d.face_log_prob(from_numpy(backend, np.zeros((1, 3), dtype=bool))))
    assert out[0] == -np.inf


def _size_frequencies(y, num_vertices):
    sizes = (y > 0).sum(axis=-1).ravel()
    return np.bincount(sizes, minlength=num_vertices + 1)[1:], sizes.size


def _within(counts, n, probs, sigmas=4.5):
    expected = n * probs
    se = np.sqrt(n * probs * (1 - probs))
    keep = expected >= 50
    return bool(np.all(np.abs(counts - expected)[keep] <= sigmas * se[keep]))


def test_sampler_face_sizes_match_the_law(backend):
    num_vertices, n = 6, 20000 if library_of(backend) == "numpy" else 4000
    d = MaxEntMixed(num_vertices, 1, like=_like(backend), batch_shape=(2,))
    y = to_numpy(d.sample(7, (n // 2,)))
    assert y.shape == (n // 2, 2, num_vertices)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-12)
    assert np.all(y >= 0)
    counts, total = _size_frequencies(y, num_vertices)
    assert _within(counts, total, _size_law(num_vertices, 1))
    # Negative control: the authors' law (no binomial factor) must fail the same test.
    assert not _within(counts, total, _size_law(num_vertices, 1, with_binomial=False))


def test_sampler_is_uniform_within_faces():
    """Every face of a size is equally likely, and the point is Dirichlet(1) on its face."""
    d = MaxEntMixed(3)
    y = d.sample(np.random.default_rng(3), (60000,))
    edges = (y > 0).sum(-1) == 2
    which = np.argmin(y[edges], axis=-1)  # the vertex left out
    counts = np.bincount(which, minlength=3)
    assert stats.chisquare(counts).pvalue > 1e-4
    interior = y[(y > 0).sum(-1) == 3]
    # Dirichlet(1, 1, 1): each coordinate is Beta(1, 2).
    assert stats.kstest(interior[:, 0], stats.beta(1, 2).cdf).pvalue > 1e-4
    assert stats.kstest(interior[:, 0], stats.beta(1.1, 2).cdf).pvalue < 1e-4  # control


def test_same_seed_same_samples_and_caller_arrays(backend):
    d = MaxEntMixed(5, like=_like(backend))
    a, b = d.sample(11, (4,)), d.sample(11, (4,))
    assert _backend.library_name(a) == library_of(backend)
    assert _backend.device(a) == _backend.device(_like(backend))
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    np.testing.assert_array_equal(to_numpy(d.rsample(11, (4,))), to_numpy(a))


def test_shapes_and_float32(backend):
    like = from_numpy(backend, np.zeros(1), "float32")
    d = MaxEntMixed(4, like=like, batch_shape=(3,))
    y = d.sample(0, (2,))
    assert tuple(y.shape) == (2, 3, 4) and y.dtype == like.dtype
    assert tuple(d.log_prob(y).shape) == (2, 3)
    assert tuple(d.log_prob(y[0, 0, ...]).shape) == (3,)  # broadcast against the batch


def test_bad_arguments(backend):
    with pytest.raises(ValueError, match="K must be at least 1"):
        MaxEntMixed(0)
    with pytest.raises(TypeError, match="K must be an int"):
        MaxEntMixed(3.0)
    with pytest.raises(ValueError, match="bits must be a number >= 0"):
        MaxEntMixed(3, -1)
    d = MaxEntMixed(3, like=_like(backend), batch_shape=(2,))
    with pytest.raises(ValueError, match="3 entries on its last axis"):
        d.log_prob(from_numpy(backend, np.ones((2, 4)) / 4))
    with pytest.raises(ValueError, match="does not broadcast"):
        d.log_prob(from_numpy(backend, np.ones((5, 3)) / 3))
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        d.face_log_prob(from_numpy(backend, np.ones((2, 3))))
    with pytest.raises(ValueError, match="sample_shape must have non-negative"):
        d.sample(0, (-1,))


def test_points_off_the_simplex_are_rejected_under_validation(cpu_backend):
    d = MaxEntMixed(3, like=_like(cpu_backend))
    assert d.validate_args
    with pytest.raises(ValueError, match="negative entry"):
        d.log_prob(from_numpy(cpu_backend, np.array([1.2, -0.2, 0.0])))
    with pytest.raises(ValueError, match="sum to 1"):
        d.log_prob(from_numpy(cpu_backend, np.array([0.5, 0.2, 0.0])))
    unchecked = MaxEntMixed(3, like=_like(cpu_backend), validate_args=False)
    unchecked.log_prob(from_numpy(cpu_backend, np.array([0.5, 0.2, 0.0])))


def test_mixing_libraries_is_a_type_error():
    torch = pytest.importorskip("torch")
    d = MaxEntMixed(3)
    with pytest.raises(TypeError, match="torch array but the distribution's parameters are numpy"):
        d.log_prob(torch.ones(3) / 3)
