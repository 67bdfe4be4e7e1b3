"""GaussianSparsemax: sampler, density and face probabilities agree, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

import mixedarray as ma
from mixedarray import _backend, faces
from tests.helpers import from_numpy, library_of, to_numpy

LOC = np.array([0.4, 0.1, -0.3])
SCALE = np.array([0.5, 0.8, 0.3])
# Face masses of paper-notes §6 (quadrature, 2e7 samples): vertices 1, 2, 3.
VERTEX_MASSES = [0.1229, 0.0729, 0.00025]


def _frequency_ok(count, n, prob, sigmas=4.5):
    return abs(count - n * prob) <= sigmas * math.sqrt(n * prob * (1 - prob))


def _draws(backend):
    return 200_000 if library_of(backend) == "numpy" else 40_000


def test_vertex_probabilities_match_paper_and_sampler(backend):
    d = ma.GaussianSparsemax(from_numpy(backend, LOC), from_numpy(backend, SCALE))
    masks = np.eye(3, dtype=bool)
    probs = np.exp(to_numpy(d.face_log_prob(from_numpy(backend, masks))))
    np.testing.assert_allclose(probs, VERTEX_MASSES, atol=5e-5)
    n = _draws(backend)
    y = d.sample(1, (n,))
    assert _backend.library_name(y) == library_of(backend) and tuple(y.shape) == (n, 3)
    support = to_numpy(faces.support(y))
    for mask, prob in zip(masks, probs, strict=True):
        count = int(np.all(support == mask, axis=-1).sum())
        if n * prob >= 50:
            assert _frequency_ok(count, n, prob)
            planted = prob + 9 * math.sqrt(prob * (1 - prob) / n)  # a wrong value: must fail
            assert not _frequency_ok(count, n, planted)


def test_k2_faces_sum_to_one_and_interior_box_matches_density(backend):
    loc, scale = np.array([0.3, -0.2]), np.array([0.7, 0.4])
    d = ma.GaussianSparsemax(from_numpy(backend, loc), from_numpy(backend, scale))
    masks = np.array([[True, False], [False, True], [True, True]])
    probs = np.exp(to_numpy(d.face_log_prob(from_numpy(backend, masks))))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-12)
    # Interior mass = ∫_0^1 p((t, 1 − t)) dt (one free coordinate).
    grid, weights = np.polynomial.legendre.leggauss(200)
    t = (grid + 1) / 2
    points = np.stack([t, 1 - t], axis=-1)
    density = np.exp(to_numpy(d.log_prob(from_numpy(backend, points))))
    np.testing.assert_allclose(np.sum(weights * density) / 2, probs[2], rtol=1e-9)
    # Sampler: fraction of draws with y₁ in (0.3, 0.4) vs ∫ of the density over that box.
    n = _draws(backend)
    y1 = to_numpy(d.sample(5, (n,)))[:, 0]
    box = ((grid + 1) / 2) * 0.1 + 0.3
    box_mass = np.sum(weights * np.exp(to_numpy(d.log_prob(from_numpy(
        backend, np.stack([box, 1 - box], axis=-1)))))) * 0.05
    count = int(((y1 > 0.3) & (y1 < 0.4)).sum())
    assert _frequency_ok(count, n, box_mass)
    assert not _frequency_ok(count, n, box_mass + 9 * math.sqrt(box_mass * (1 - box_mass) / n))


def test_density_integrates_to_one_k3():
    """Vertices + edges (1-D quadrature) + interior (2-D) = 1 (paper-notes §10.1)."""
    d = ma.GaussianSparsemax(LOC, SCALE)
    total = float(np.exp(d.face_log_prob(np.eye(3, dtype=bool))).sum())
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        def edge(t, i=i, j=j):
            y = np.zeros(3)
            y[i], y[j] = t, 1 - t
            return math.exp(d.log_prob(y))
        total += integrate.quad(edge, 0, 1, epsabs=1e-11)[0]

    def interior(t2, t1):
        if t1 + t2 >= 1:
            return 0.0
        return math.exp(d.log_prob(np.array([t1, t2, 1 - t1 - t2])))

    total += integrate.dblquad(interior, 0, 1, 0, lambda t1: 1 - t1, epsabs=1e-9)[0]
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_larger_faces_need_monte_carlo(cpu_backend):
    d = ma.GaussianSparsemax(from_numpy(cpu_backend, LOC), 0.5)
    with pytest.raises(NotImplementedError, match="Monte Carlo"):
        d.face_log_prob(from_numpy(cpu_backend, np.array([True, True, False])))
    unchecked = ma.GaussianSparsemax(from_numpy(cpu_backend, LOC), 0.5, validate_args=False)
    out = to_numpy(unchecked.face_log_prob(from_numpy(cpu_backend, np.array(
        [[True, True, False], [False, True, False], [False, False, False]]))))
    assert math.isnan(out[0]) and np.isfinite(out[1]) and out[2] == -np.inf


def test_rsample_carries_pathwise_gradients():
    torch = pytest.importorskip("torch")
    loc = torch.tensor(LOC, requires_grad=True)
    d = ma.GaussianSparsemax(loc, torch.tensor(SCALE))
    y = d.rsample(torch.Generator().manual_seed(0), (64,))
    (y[:, 0] ** 2).mean().backward()
    assert torch.all(torch.isfinite(loc.grad)) and loc.grad.abs().sum() > 0
    assert not d.sample(0, (2,)).requires_grad


def test_shapes_broadcast_and_dtype(backend):
    loc = from_numpy(backend, np.zeros((4, 3)), "float32")
    d = ma.GaussianSparsemax(loc, 1.0)
    assert d.batch_shape == (4,) and d.event_shape == (3,)
    y = d.sample(0, (2,))
    assert tuple(y.shape) == (2, 4, 3) and y.dtype == loc.dtype
    assert tuple(d.log_prob(y).shape) == (2, 4)


@pytest.mark.parametrize(
    ("loc", "scale", "error", "match"),
    [
        (LOC, -SCALE, ValueError, "scale must be positive"),
        (np.array([np.nan, 0.0, 0.0]), SCALE, ValueError, "loc must be finite"),
        (np.float64(1.0), 1.0, ValueError, "at least one axis"),
        (LOC, np.ones(4), ValueError, "does not broadcast"),
    ],
)
def test_bad_parameters(cpu_backend, loc, scale, error, match):
    scale = scale if isinstance(scale, float) else from_numpy(cpu_backend, scale)
    with pytest.raises(error, match=match):
        ma.GaussianSparsemax(from_numpy(cpu_backend, loc), scale)


def test_bad_num_nodes():
    for bad in (1, 257, 2.0, True):
        with pytest.raises(ValueError, match="num_nodes must be an int from 2 to 256"):
            ma.GaussianSparsemax(LOC, SCALE, num_nodes=bad)
    # the largest rule still has finite weights: a finite density
    d = ma.GaussianSparsemax(LOC, SCALE, num_nodes=256)
    assert np.isfinite(d.log_prob(np.array([0.5, 0.5, 0.0])))
