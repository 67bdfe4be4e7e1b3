"""Tests of the face lattice and the direct-sum measure (mixedarray.faces)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.special import comb

from mixedarray import _backend, faces
from tests.helpers import from_numpy, library_of, to_numpy


def test_support_and_dim_of_points(backend):
    y = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    x = from_numpy(backend, y)
    mask = faces.support(x)
    assert _backend.library_name(mask) == library_of(backend)
    np.testing.assert_array_equal(to_numpy(mask), y > 0)
    np.testing.assert_array_equal(to_numpy(faces.dim(x)), [1, 0, 2])
    np.testing.assert_array_equal(to_numpy(faces.dim(mask)), [1, 0, 2])
    np.testing.assert_array_equal(to_numpy(faces.size(mask)), [2, 1, 3])
    np.testing.assert_array_equal(to_numpy(x), y)  # not mutated


def test_batched_shapes(backend):
    y = np.zeros((2, 3, 4))
    y[..., 0] = 1.0
    assert tuple(faces.dim(from_numpy(backend, y)).shape) == (2, 3)


@pytest.mark.parametrize("num_vertices", [1, 2, 3, 6])
def test_enumerate_lists_every_nonempty_face_once(backend, num_vertices):
    like = from_numpy(backend, np.zeros(1))
    table = faces.enumerate(num_vertices, like=like)
    assert _backend.library_name(table) == library_of(backend)
    assert _backend.device(table) == _backend.device(like)
    table = to_numpy(table)
    assert table.shape == (2**num_vertices - 1, num_vertices) and table.dtype == bool
    expected = {f for f in itertools.product([False, True], repeat=num_vertices) if any(f)}
    assert {tuple(row) for row in table} == expected
    codes = table @ (2 ** np.arange(num_vertices))
    np.testing.assert_array_equal(codes, np.arange(1, 2**num_vertices))


def test_enumerate_defaults_to_numpy_and_rejects_bad_sizes():
    assert isinstance(faces.enumerate(3), np.ndarray)
    with pytest.raises(ValueError, match="between 1 and"):
        faces.enumerate(0)
    with pytest.raises(ValueError, match="between 1 and"):
        faces.enumerate(25)
    with pytest.raises(TypeError, match="num_vertices must be an int"):
        faces.enumerate(3.0)


def test_log_volume_is_minus_log_factorial(backend):
    masks = np.array([[True, False, False, False], [True, True, False, False],
                      [True, True, True, False], [True, True, True, True],
                      [False, False, False, False]])
    got = to_numpy(faces.log_volume(from_numpy(backend, masks)))
    expected = [-math.log(math.factorial(k - 1)) for k in (1, 2, 3, 4)] + [-np.inf]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("num_vertices", "total"), [(2, 3.0), (3, 6.5), (10, 162.43)])
def test_measure_of_the_simplex(backend, num_vertices, total):
    """μ⊕(Δ) = Σ_f vol(f) = Σ_k C(K, k)/(k − 1)!  (paper-notes §2: 3, 6.5, 162.43)."""
    like = from_numpy(backend, np.zeros(1))
    volumes = np.exp(to_numpy(faces.log_volume(faces.enumerate(num_vertices, like=like))))
    by_size = sum(comb(num_vertices, k) / math.factorial(k - 1)
                  for k in range(1, num_vertices + 1))
    np.testing.assert_allclose(volumes.sum(), by_size, rtol=1e-6)
    np.testing.assert_allclose(volumes.sum(), total, atol=5e-3)


def test_log_volume_rejects_non_boolean():
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        faces.log_volume(np.ones((2, 3)))
