"""Tests of the backend layer: namespaces, dtypes, value-check policy, rule registry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixedarray import _backend, projections
from mixedarray._native import cpu_threshold
from tests.helpers import from_numpy, library_of, to_numpy


def test_namespace_is_the_callers(backend):
    xp, _ = backend
    x = from_numpy(backend, np.ones(3))
    assert _backend.array_namespace(x, None, 2.0) is _backend.array_namespace(x)
    assert _backend.library_name(x) == library_of(backend)
    assert _backend.device(x) == _backend.device(xp.ones(1, device=backend[1]))


def test_mixing_libraries_names_both():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="numpy and torch"):
        _backend.array_namespace(np.ones(2), torch.ones(2))


def test_no_array_is_a_type_error():
    with pytest.raises(TypeError, match="at least one array"):
        _backend.array_namespace(1.0, None)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("float64", "float64"), ("float32", "float32"), ("float16", "float32"), ("int64", None)],
)
def test_compute_dtype(cpu_backend, dtype, expected):
    xp, _ = cpu_backend
    if not hasattr(xp, dtype):
        pytest.skip(f"{xp.__name__} has no {dtype}")
    default = xp.__array_namespace_info__().default_dtypes()["real floating"]
    got = _backend.compute_dtype(xp, getattr(xp, dtype))
    assert got == (getattr(xp, expected) if expected else default)


def test_compute_dtype_rejects_complex():
    import array_api_compat.numpy as xp

    with pytest.raises(TypeError, match="z must be a real array"):
        _backend.compute_dtype(xp, xp.complex128, name="z")


@pytest.mark.allow_host_transfers  # the CPU policy itself, which --device-guards simulate replaces
def test_values_checkable_policy(backend):
    x = from_numpy(backend, np.ones(2))
    on_cpu = library_of(backend) in ("numpy", "array_api_strict") or "cpu" in str(
        _backend.device(x)
    ).lower()
    assert _backend.values_are_checkable(x) == (on_cpu and library_of(backend) != "cupy")


def test_values_not_checkable_under_tracing():
    jax = pytest.importorskip("jax")
    torch = pytest.importorskip("torch")
    seen = []
    jax.jit(lambda x: seen.append(_backend.values_are_checkable(x)) or x)(jax.numpy.ones(2))
    torch.func.vmap(lambda x: seen.append(_backend.values_are_checkable(x)) or x)(torch.ones(3, 2))
    torch.func.grad(lambda x: seen.append(_backend.values_are_checkable(x)) or x.sum())(
        torch.ones(2)
    )
    assert seen == [False, False, True]


def test_host_float_detaches_torch():
    torch = pytest.importorskip("torch")
    x = torch.tensor(2.5, requires_grad=True)
    assert _backend.host_float(x * 2) == 5.0
    assert _backend.host_float(np.float32(1.5)) == 1.5


def test_rule_registry_is_lazy_and_keyed_by_library():
    assert _backend.lookup_rule("array_api_strict", "sparsemax") is None
    assert _backend.lookup_rule("nonexistent-library", "sparsemax") is None

    @_backend.register_rule("test-library", "f")
    def rule():
        return 1

    assert _backend.lookup_rule("test-library", "f") is rule


def test_eager_while_loop_runs_until_condition_fails():
    state = _backend.eager_while_loop(lambda s: s[0] < 5, lambda s: (s[0] + 1, s[1] * 2), (0, 1))
    assert state == (5, 32)


@pytest.mark.parametrize("name", ["sparsemax", "entmax15"])
def test_cpu_fast_path_is_taken_for_numpy_and_torch(monkeypatch, name):
    if not cpu_threshold.available():
        pytest.skip("numba is not installed: the CPU fast path is absent")
    calls = []
    original = cpu_threshold.project

    def spy(kind, x):
        calls.append(kind)
        return original(kind, x)

    monkeypatch.setattr(cpu_threshold, "project", spy)
    z = np.random.default_rng(0).standard_normal((3, 5))
    y = getattr(projections, name)(z)
    assert calls == [name]
    torch = pytest.importorskip("torch")
    y_torch = getattr(projections, name)(torch.from_numpy(z))
    assert calls == [name, name]
    np.testing.assert_allclose(to_numpy(y_torch), y, atol=1e-15)


@pytest.mark.parametrize("name", ["sparsemax", "entmax15"])
def test_newton_eager_equals_reference(cpu_backend, name):
    xp, _ = cpu_backend
    rng = np.random.default_rng(1)
    for scale in (1e-3, 1.0, 30.0):
        z = scale * rng.standard_normal((6, 40))
        z[0, :3] = -math.inf
        x = from_numpy(cpu_backend, z)
        fast = projections.threshold_newton(xp, name, x, _backend.eager_while_loop)
        slow = projections.reference(name, xp, x)
        assert np.array_equal(to_numpy(fast) > 0, to_numpy(slow) > 0)
        np.testing.assert_allclose(to_numpy(fast), to_numpy(slow), atol=1e-12)


def test_broadcast_shapes():
    assert _backend.broadcast_shapes((3, 1), (4,), ()) == (3, 4)
    assert _backend.broadcast_shapes() == ()
    with pytest.raises(ValueError, match=r"\(3,\), \(4,\) do not broadcast"):
        _backend.broadcast_shapes((3,), (4,))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_constant_is_on_the_callers_device(backend, dtype):
    xp, device = backend
    values = (0.5, -1.25, 3.0e-7)
    got = _backend.constant(xp, values, dtype=getattr(xp, dtype), device=device)
    assert _backend.library_name(got) == library_of(backend)
    assert got.dtype == getattr(xp, dtype)
    assert _backend.device(got) == _backend.device(xp.zeros(1, device=device))
    np.testing.assert_array_equal(to_numpy(got), np.asarray(values, dtype=dtype))
    again = _backend.constant(xp, values, dtype=getattr(xp, dtype), device=device)
    np.testing.assert_array_equal(to_numpy(again), to_numpy(got))


@pytest.mark.parametrize(("n", "dtype"), [(1, "int32"), (5, "int32"), (31, "int32"), (62, "int64")])
def test_powers_of_two(backend, n, dtype):
    xp, device = backend
    got = _backend.powers_of_two(xp, n, dtype=getattr(xp, dtype), device=device)
    assert got.dtype == getattr(xp, dtype)
    assert _backend.device(got) == _backend.device(xp.zeros(1, device=device))
    assert to_numpy(got).tolist() == [2**k for k in range(n)]


def test_jax_constants_captured_under_jit_are_not_checked():
    """A concrete CPU array closed over by a jitted function: its checks would be traced."""
    jax = pytest.importorskip("jax")
    import mixedarray as ma

    z = jax.numpy.asarray([0.3, -1.0, 2.0])
    seen = []
    jax.jit(lambda: seen.append(_backend.values_are_checkable(z)) or z)()
    assert seen == [False] and _backend.values_are_checkable(z)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda: ma.sparsemax(z))()), [0.0, 0.0, 1.0])
    d = jax.jit(lambda: ma.MixedDirichlet(z, z + 2.0).log_prob(jax.numpy.asarray([0.0, 0.0, 1.0])))
    assert np.isfinite(float(d()))
