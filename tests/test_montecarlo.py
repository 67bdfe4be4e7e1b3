"""Chunked Monte Carlo estimation (mixedarray.montecarlo), on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mixedarray as ma
from mixedarray import _backend
from tests.helpers import from_numpy, library_of, to_numpy


def _like(backend):
    return from_numpy(backend, np.zeros(1))


def test_expectation_of_a_known_mean(backend):
    """Under MaxEntMixed(3) every coordinate has mean 1/3 (symmetry)."""
    d = ma.MaxEntMixed(3, like=_like(backend), batch_shape=(2,))
    n = 40_000
    est = ma.expectation(lambda y: y[..., 0], d, 3, n, chunk_size=7_000)
    assert _backend.library_name(est.value) == library_of(backend)
    value, stderr = to_numpy(est.value), to_numpy(est.stderr)
    assert value.shape == (2,) and stderr.shape == (2,)
    # The variance of y_0 is finite and positive; the stderr is about its sd/√n.
    assert np.all(stderr > 0) and np.all(stderr < 0.01)
    assert np.all(np.abs(value - 1 / 3) <= 4.5 * stderr)
    assert not np.all(np.abs(value - (1 / 3 + 10 * stderr)) <= 4.5 * stderr)  # control


def test_stderr_matches_the_spread_of_repeated_estimates():
    d = ma.MaxEntMixed(4)
    estimates = [ma.expectation(lambda y: y[..., 1], d, seed, 2_000) for seed in range(40)]
    values = np.array([float(e.value) for e in estimates])
    stderrs = np.array([float(e.stderr) for e in estimates])
    np.testing.assert_allclose(values.std(ddof=1), stderrs.mean(), rtol=0.3)


def test_chunks_bound_the_memory(monkeypatch):
    d = ma.MaxEntMixed(3)
    seen = []

    def record(y):
        seen.append(y.shape[0])
        return y[..., 0]

    ma.expectation(record, d, 0, 1_000, chunk_size=300)
    assert seen == [300, 300, 300, 100]


def test_reparameterized_expectation_carries_gradients():
    torch = pytest.importorskip("torch")
    loc = torch.tensor([0.2, -0.1, 0.0], dtype=torch.float64, requires_grad=True)
    d = ma.GaussianSparsemax(loc, 0.5)
    est = ma.expectation(lambda y: y[..., 0], d, 0, 1_000, reparameterized=True)
    est.value.backward()
    assert loc.grad is not None and math.isfinite(float(loc.grad.sum()))
    plain = ma.expectation(lambda y: y[..., 0], d, 0, 1_000)
    assert not plain.value.requires_grad


def test_functional_sample(backend):
    d = ma.MaxEntMixed(3, like=_like(backend))
    np.testing.assert_array_equal(to_numpy(ma.sample(d, 5, (3,))), to_numpy(d.sample(5, (3,))))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"num_samples": 1}, "num_samples must be an int >= 2"),
    ({"num_samples": 10, "chunk_size": 0}, "chunk_size must be a positive int"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ma.expectation(lambda y: y[..., 0], ma.MaxEntMixed(2), 0, **kwargs)


def test_progress_bar_is_optional(capsys):
    pytest.importorskip("tqdm", reason="tqdm is not installed: the progress bar is untested")
    d = ma.MaxEntMixed(3)
    quiet = ma.expectation(lambda y: y[..., 0], d, 0, 1_000, chunk_size=250)
    shown = ma.expectation(lambda y: y[..., 0], d, 0, 1_000, chunk_size=250, progress=True)
    assert float(quiet.value) == float(shown.value)
    assert "Monte Carlo" in capsys.readouterr().err
