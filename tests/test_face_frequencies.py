"""Monte Carlo face statistics against independent face laws.

References: the MixedDirichlet face law by enumeration in NumPy (independent Bernoulli vertices
conditioned on a non-empty face), and the Gaussian-Sparsemax K = 3 face masses that
paper-notes §6 obtained by numerical integration of the density (.1229, .0729, .00025 for the
vertices, .3918, .1615, .0248 for the edges 12, 13, 23, .2258 for the interior).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import from_numpy, to_numpy

import mixedarray as ma
from mixedarray.face_frequencies import face_statistics

ETA = np.array([0.3, -0.5, 1.1])


def _enumerated_face_law(eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Faces in code order (row c − 1 has code c = Σ f_k 2^k) and their probabilities."""
    K = eta.shape[-1]
    masks = np.array([[(c >> k) & 1 for k in range(K)] for c in range(1, 2**K)], dtype=bool)
    p = 1 / (1 + np.exp(-eta))
    weights = np.prod(np.where(masks, p, 1 - p), axis=-1)
    return masks, weights / weights.sum()


def _max_z(estimate, reference) -> float:
    value, stderr = to_numpy(estimate.value), to_numpy(estimate.stderr)
    stderr = np.maximum(stderr, 1e-12)
    return float(np.max(np.abs(value - reference) / stderr))


def test_mixed_dirichlet_faces_match_enumeration(backend):
    d = ma.MixedDirichlet(from_numpy(backend, ETA), from_numpy(backend, np.ones(3)))
    stats = face_statistics(d, 0, 200_000, table=True, chunk_size=30_000)
    masks, probs = _enumerated_face_law(ETA)
    sizes = masks.sum(-1)
    size_probs = np.array([probs[sizes == k].sum() for k in (1, 2, 3)])
    marginals = (masks * probs[:, None]).sum(0)
    assert stats.num_samples == 200_000
    assert _max_z(stats.face_probs, probs) < 4.5
    assert _max_z(stats.size_probs, size_probs) < 4.5
    assert _max_z(stats.marginals, marginals) < 4.5
    # Negative control: the same check rejects a planted wrong law (two faces swapped).
    assert _max_z(stats.face_probs, probs[[1, 0, 2, 3, 4, 5, 6]]) > 4.5
    # Standard errors are under 10% of every frequency.
    assert np.all(to_numpy(stats.face_probs.stderr) < 0.1 * probs)


def test_gaussian_sparsemax_faces_match_quadrature(backend):
    loc = from_numpy(backend, np.array([0.4, 0.1, -0.3]))
    scale = from_numpy(backend, np.array([0.5, 0.8, 0.3]))
    stats = face_statistics(ma.GaussianSparsemax(loc, scale), 1, 200_000, table=True)
    # Code order: v1, v2, e12, v3, e13, e23, interior (masses to the 4 digits quoted).
    quadrature = np.array([0.1229, 0.0729, 0.3918, 0.00025, 0.1615, 0.0248, 0.2258])
    value = to_numpy(stats.face_probs.value)
    stderr = to_numpy(stats.face_probs.stderr)
    # The quoted masses are rounded to 5e-5 (2.5e-6 for the third vertex): add that to the s.e.
    rounding = np.where(quadrature < 1e-3, 5e-6, 5e-5)
    assert np.all(np.abs(value - quadrature) < 4.5 * stderr + rounding)
    np.testing.assert_allclose(
        to_numpy(stats.size_probs.value), [value[[0, 1, 3]].sum(), value[[2, 4, 5]].sum(), value[6]]
    )


def test_batch_members_are_counted_separately(backend):
    eta = np.array([[2.0, -2.0], [-2.0, 2.0]])
    d = ma.NonEmptyBernoulli(from_numpy(backend, eta))
    stats = face_statistics(d, 3, 50_000, table=True)
    assert tuple(stats.face_probs.value.shape) == (2, 3)
    assert tuple(stats.marginals.value.shape) == (2, 2)
    value, stderr = to_numpy(stats.face_probs.value), to_numpy(stats.face_probs.stderr)
    for row in range(2):
        _, probs = _enumerated_face_law(eta[row])
        assert np.max(np.abs(value[row] - probs) / np.maximum(stderr[row], 1e-12)) < 4.5


def test_no_table_for_large_K_but_sizes_and_marginals(cpu_backend):
    K = 24
    d = ma.MixedDirichlet(from_numpy(cpu_backend, np.zeros(K)), from_numpy(cpu_backend, np.ones(K)))
    with pytest.raises(ValueError, match="table=True needs K <= 20"):
        face_statistics(d, 0, 100, table=True)
    stats = face_statistics(d, 0, 20_000)
    # Each vertex is in the face with probability 1/2 / (1 − 2^-K).
    assert _max_z(stats.marginals, np.full(K, 0.5 / (1 - 2.0**-K))) < 4.5
    assert stats.face_probs is None


@pytest.mark.parametrize("bad", [1, 0, 2.5, True])
def test_bad_counts(cpu_backend, bad):
    d = ma.NonEmptyBernoulli(from_numpy(cpu_backend, ETA))
    with pytest.raises(ValueError, match="num_samples"):
        face_statistics(d, 0, bad)
    with pytest.raises(ValueError, match="chunk_size"):
        face_statistics(d, 0, 10, chunk_size=0)


def test_counts_are_consistent_across_chunks(cpu_backend):
    # Uneven chunks (1000 + 1000 + 500): the table sums to 1, and sizes and marginals are the
    # table's own margins.
    d = ma.NonEmptyBernoulli(from_numpy(cpu_backend, ETA))
    stats = face_statistics(d, 5, 2_500, table=True, chunk_size=1_000)
    table = to_numpy(stats.face_probs.value)
    masks, _ = _enumerated_face_law(ETA)
    np.testing.assert_allclose(table.sum(), 1.0)
    np.testing.assert_allclose(to_numpy(stats.marginals.value), (masks * table[:, None]).sum(0))
    sizes = masks.sum(-1)
    np.testing.assert_allclose(
        to_numpy(stats.size_probs.value), [table[sizes == k].sum() for k in (1, 2, 3)]
    )
