"""NonEmptyBernoulli: the distribution interface over the face closed forms, on every backend.

The closed forms and the sampler are tested against enumeration in test_face_bernoulli.py;
here: the class's events, shapes, errors and the agreement of its methods with enumeration.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import mixedarray as ma
from mixedarray import _backend
from tests.helpers import from_numpy, library_of, to_numpy

ETA = np.array([[0.5, -1.0, 2.0], [-3.0, 0.2, 0.1]])
MASKS = np.array([f for f in itertools.product([False, True], repeat=3) if any(f)])


def _enumerated(eta):
    p = 1 / (1 + np.exp(-eta))
    probs = np.prod(np.where(MASKS[:, None, :], p, 1 - p), axis=-1)  # (faces, batch)
    return probs / probs.sum(axis=0)


def test_methods_match_enumeration(backend):
    d = ma.NonEmptyBernoulli(from_numpy(backend, ETA))
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    expected = _enumerated(ETA)
    log_p = to_numpy(d.log_prob(from_numpy(backend, MASKS[:, None, :])))
    np.testing.assert_allclose(np.exp(log_p), expected, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(d.entropy_exact()),
                               -(expected * np.log(expected)).sum(axis=0), rtol=1e-12)
    marginals = (expected[..., None] * MASKS[:, None, :]).sum(0)
    np.testing.assert_allclose(to_numpy(d.marginals()), marginals, rtol=1e-12)
    sizes = MASKS.sum(-1)
    np.testing.assert_allclose(to_numpy(d.size_probs()),
                               np.stack([expected[sizes == n].sum(0) for n in (1, 2, 3)], -1),
                               rtol=1e-12)
    np.testing.assert_array_equal(to_numpy(d.mode()), MASKS[np.argmax(expected, axis=0)])
    other = ma.NonEmptyBernoulli(from_numpy(backend, ETA[::-1].copy()))
    q = _enumerated(ETA[::-1])
    np.testing.assert_allclose(to_numpy(d.kl_divergence_exact(other)),
                               (expected * np.log(expected / q)).sum(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(d.cross_entropy_exact(other)),
                               -(expected * np.log(q)).sum(0), rtol=1e-12)


def test_samples_are_nonempty_masks_of_the_callers_library(backend):
    d = ma.NonEmptyBernoulli(from_numpy(backend, ETA))
    masks = d.sample(3, (5,))
    assert _backend.library_name(masks) == library_of(backend)
    assert tuple(masks.shape) == (5, 2, 3) and masks.dtype == backend[0].bool
    assert np.all(to_numpy(masks).any(axis=-1))
    assert tuple(d.log_prob(masks).shape) == (5, 2)
    with pytest.raises(NotImplementedError, match="no pathwise"):
        d.rsample(3)


def test_bad_input(cpu_backend):
    with pytest.raises(ValueError, match="face_logits contains NaN"):
        ma.NonEmptyBernoulli(from_numpy(cpu_backend, np.array([0.0, np.nan])))
    with pytest.raises(ValueError, match="at least one axis"):
        ma.NonEmptyBernoulli(from_numpy(cpu_backend, np.float64(0.0)))
    d = ma.NonEmptyBernoulli(from_numpy(cpu_backend, ETA))
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        d.log_prob(from_numpy(cpu_backend, np.ones((2, 3))))
    with pytest.raises(ValueError, match="3 entries on its last axis"):
        d.log_prob(from_numpy(cpu_backend, np.ones((2, 4), dtype=bool)))
