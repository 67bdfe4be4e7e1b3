"""The Distribution base class on every backend: expand, the pytree view, pickling, value checks.

Every distribution of the library is built here from NumPy reference data on each backend; the
reference values are NumPy broadcasts of those data and the distributions' own eager results
(a round trip must not change them).
"""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest

import mixedarray as ma
from mixedarray import _backend
from tests.helpers import from_numpy, library_of, to_numpy

LOC = np.array([[0.5, -0.2, 0.1], [0.0, 1.0, -1.0]])
ALPHA = np.array([[1.5, 0.5, 2.0], [0.7, 0.7, 0.7]])
TAU = np.array([0.5, 0.8])


def _builders(backend):
    """``name -> build(validate_args)``: every distribution class, batch_shape (2,)."""

    def a(x):
        return from_numpy(backend, np.asarray(x, dtype=np.float64))

    return {
        "GaussianSparsemax": lambda v: ma.GaussianSparsemax(
            a(LOC), a(np.full_like(LOC, 0.7)), num_nodes=16, validate_args=v
        ),
        "GaussianSparsemax-K2": lambda v: ma.GaussianSparsemax(
            a(LOC[:, :2]), a(np.full((2, 2), 0.7)), validate_args=v
        ),
        "MixedDirichlet": lambda v: ma.MixedDirichlet(a(LOC), a(ALPHA), validate_args=v),
        "NonEmptyBernoulli": lambda v: ma.NonEmptyBernoulli(a(LOC), validate_args=v),
        "MaxEntMixed": lambda v: ma.MaxEntMixed(
            3, 2.0, like=a(LOC), batch_shape=(2,), validate_args=v
        ),
        "HardConcrete": lambda v: ma.HardConcrete(
            a([0.3, -1.0]), a(TAU), -0.1, 1.1, validate_args=v
        ),
        "KDHardConcrete": lambda v: ma.KDHardConcrete(a(LOC), a(TAU), 1.2, validate_args=v),
        "KDHardConcrete-K2": lambda v: ma.KDHardConcrete(
            a(LOC[:, :2]), a(TAU), 1.2, validate_args=v
        ),
        "GumbelSoftmax": lambda v: ma.GumbelSoftmax(a(LOC), a(TAU), validate_args=v),
        "GumbelSoftmax-hard": lambda v: ma.GumbelSoftmax(
            a(LOC), a(TAU), hard=True, validate_args=v
        ),
    }


NAMES = list(_builders((np, "cpu")))
NO_DENSITY = {"KDHardConcrete"}  # K = 3: sampling only


def _build(backend, name, validate_args=None):
    return _builders(backend)[name](validate_args)


POINTS = {  # K -> points on the simplex (interior, an edge, a vertex), shape (3, 1, K)
    2: np.array([[[0.3, 0.7]], [[0.0, 1.0]], [[1.0, 0.0]]]),
    3: np.array([[[0.2, 0.3, 0.5]], [[0.0, 0.4, 0.6]], [[1.0, 0.0, 0.0]]]),
}


def _points(backend, d):
    """Fixed points for ``log_prob``, shape ``(3, 1, K)`` (masks for NonEmptyBernoulli).

    Fixed rather than sampled: eager JAX compiles every sampler op per shape, which is slow.
    """
    y = POINTS[d.num_vertices]
    if isinstance(d, ma.NonEmptyBernoulli):
        return from_numpy(backend, y > 0)
    return from_numpy(backend, y)


_JITTED = {}


def _log_prob(d, y):
    if type(y).__module__.startswith("jax"):
        # Compiled whole, once per tree structure and shape: eager JAX compiles every op of
        # the density separately (slow).
        if not _JITTED:
            import jax

            _JITTED["log_prob"] = jax.jit(lambda d, y: d.log_prob(y))
        return to_numpy(_JITTED["log_prob"](d, y))
    return to_numpy(d.log_prob(y))


# ---------------------------------------------------------------------------------------------
# expand


@pytest.mark.parametrize("name", NAMES)
def test_expand_shapes_and_values_are_the_broadcast(backend, name):
    d = _build(backend, name)
    new = (4, 2)
    e = d.expand(new)
    assert type(e) is type(d)
    assert tuple(e.batch_shape) == new
    assert tuple(e.event_shape) == tuple(d.event_shape)
    assert e.validate_args == d.validate_args
    assert [getattr(e, s) for s in d.static_names] == [getattr(d, s) for s in d.static_names]
    for pname, ndim in zip(d.parameter_names, d.parameter_event_ndims, strict=True):
        original = to_numpy(getattr(d, pname))
        event = original.shape[original.ndim - ndim :]
        got = to_numpy(getattr(e, pname))
        np.testing.assert_array_equal(got, np.broadcast_to(original, new + event))
    y = _points(backend, d)
    if name in NO_DENSITY:
        assert tuple(e.sample(0, (5,)).shape) == (5, *new, d.num_vertices)
    else:
        expected = np.broadcast_to(_log_prob(d, y)[:, None], (3, *new))
        np.testing.assert_allclose(_log_prob(e, y[:, None, ...]), expected, rtol=1e-12)


def test_expand_grows_axes_of_size_one_and_keeps_the_same_shape(backend):
    a = from_numpy(backend, LOC[:1])
    d = ma.MixedDirichlet(a, a * 0 + 2.0)
    e = d.expand((3, 5, 1))
    assert tuple(e.batch_shape) == (3, 5, 1)
    grown = d.expand((6,))
    assert tuple(grown.batch_shape) == (6,)
    np.testing.assert_array_equal(to_numpy(grown.face_logits), np.broadcast_to(LOC[:1], (6, 3)))
    same = d.expand((1,))
    assert tuple(same.batch_shape) == (1,)
    np.testing.assert_array_equal(to_numpy(same.concentration), np.full((1, 3), 2.0))


@pytest.mark.parametrize("bad", [(3,), (), (2, 3), (4, 3)])
def test_expand_to_an_unreachable_shape_is_a_clear_error(backend, bad):
    d = _build(backend, "MixedDirichlet")  # batch_shape (2,)
    with pytest.raises(ValueError, match=r"batch_shape .* cannot be reached by broadcasting"):
        d.expand(bad)


def test_expand_rejects_malformed_shapes(backend):
    d = _build(backend, "HardConcrete")
    with pytest.raises(ValueError, match="non-negative"):
        d.expand((-1, 2))
    with pytest.raises(TypeError, match="tuple of ints"):
        d.expand(("a", 2))
    with pytest.raises(TypeError, match="tuple of ints"):
        d.expand((2.0,))
    assert tuple(d.expand(2).batch_shape) == (2,)  # an int is a one-axis shape


# ---------------------------------------------------------------------------------------------
# The pytree view, on every backend (it is plain Python; JAX registers it).


@pytest.mark.parametrize("name", NAMES)
def test_tree_flatten_unflatten_round_trip(backend, name):
    d = _build(backend, name)
    leaves, aux = d.tree_flatten()
    assert len(leaves) == len(d.parameter_names)
    for leaf, pname in zip(leaves, d.parameter_names, strict=True):
        assert leaf is getattr(d, pname)
    hash(aux)  # auxiliary data must be hashable (JAX compares tree structures by it)
    statics, num_vertices, validate = aux
    assert statics == tuple(getattr(d, s) for s in d.static_names)
    assert num_vertices == d.num_vertices
    assert validate is None  # the request as given, not its resolution

    r = type(d).tree_unflatten(aux, leaves)
    assert type(r) is type(d)
    assert r.batch_shape == d.batch_shape
    assert r.event_shape == d.event_shape
    assert r.validate_args == d.validate_args
    assert r.dtype == d.dtype
    assert r.tree_flatten()[1] == aux
    if name in NO_DENSITY:
        np.testing.assert_array_equal(to_numpy(r.sample(7, (2,))), to_numpy(d.sample(7, (2,))))
    else:
        y = _points(backend, d)
        np.testing.assert_array_equal(_log_prob(r, y), _log_prob(d, y))


def test_tree_unflatten_runs_no_init_and_accepts_placeholders():
    # JAX rebuilds trees from placeholder objects (and None); nothing may be derived eagerly.
    d = _build((np, "cpu"), "GaussianSparsemax")
    leaves, aux = d.tree_flatten()
    placeholders = [object() for _ in leaves]
    r = type(d).tree_unflatten(aux, placeholders)
    assert r.loc is placeholders[0]
    assert type(d).tree_unflatten(aux, [None, None]).scale is None


# validate_args=True reads the values on the host, on GPUs too: no device guard for it
VALIDATED = pytest.param(True, marks=pytest.mark.allow_host_transfers)


@pytest.mark.parametrize("validate_args", [None, VALIDATED, False])
def test_aux_keeps_the_requested_validate_args(backend, validate_args):
    d = _build(backend, "NonEmptyBernoulli", validate_args)
    assert d.tree_flatten()[1][-1] is validate_args
    expected = (
        _backend.values_are_checkable(d.face_logits) if validate_args is None else validate_args
    )
    assert d.validate_args is expected
    rebuilt = type(d).tree_unflatten(*reversed(d.tree_flatten()))
    assert rebuilt.validate_args is expected


def test_static_fields_are_in_the_aux_data(backend):
    def a(x):
        return from_numpy(backend, np.asarray(x, dtype=np.float64))

    gs = [ma.GaussianSparsemax(a(LOC), 0.5, num_nodes=n) for n in (8, 16)]
    assert gs[0].tree_flatten()[1] != gs[1].tree_flatten()[1]
    soft, hard = (ma.GumbelSoftmax(a(LOC), 0.5, hard=h) for h in (False, True))
    assert soft.tree_flatten()[1][0] == (False,)
    assert hard.tree_flatten()[1][0] == (True,)
    me = ma.MaxEntMixed(3, 1.0, like=a(LOC))
    assert me.tree_flatten()[1][:2] == ((3, 1.0), 3)


# ---------------------------------------------------------------------------------------------
# Pickling (torch twins included) and copies


@pytest.mark.parametrize("name", NAMES)
def test_pickle_and_deepcopy_round_trip(backend, name):
    d = _build(backend, name)
    y = _points(backend, d)
    for r in (pickle.loads(pickle.dumps(d)), copy.deepcopy(d), copy.copy(d)):
        assert type(r) is type(d)
        assert r.batch_shape == d.batch_shape
        assert r.validate_args == d.validate_args
        assert r.tree_flatten()[1] == d.tree_flatten()[1]
        for pname in d.parameter_names:
            np.testing.assert_array_equal(to_numpy(getattr(r, pname)), to_numpy(getattr(d, pname)))
        if name not in NO_DENSITY:
            np.testing.assert_array_equal(_log_prob(r, y), _log_prob(d, y))
    if library_of(backend) == "torch":
        import torch

        assert isinstance(pickle.loads(pickle.dumps(d)), torch.distributions.Distribution)


def test_pickle_after_derived_state_is_cached(backend):
    # Lazily derived state (namespace, batch shape, host constants) must not break pickling
    # once it has been computed.
    d = _build(backend, "MaxEntMixed")
    e = d.expand((3, 2))
    _ = (e.batch_shape, e._xp, e.dtype, e._log_normalizer)
    r = pickle.loads(pickle.dumps(e))
    assert tuple(r.batch_shape) == (3, 2)
    np.testing.assert_allclose(to_numpy(ma.entropy(r)), to_numpy(ma.entropy(e)), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Value checks: validate_args=True checks whenever values are readable; False never; None where
# checking costs no device sync.

BAD = {  # (a, validate_args) -> a distribution with an invalid parameter value
    "GaussianSparsemax": lambda a, v: ma.GaussianSparsemax(
        a(LOC), a(-np.ones_like(LOC)), validate_args=v
    ),
    "MixedDirichlet": lambda a, v: ma.MixedDirichlet(a(LOC), a(-ALPHA), validate_args=v),
    "NonEmptyBernoulli": lambda a, v: ma.NonEmptyBernoulli(
        a(np.full((2, 3), np.nan)), validate_args=v
    ),
    "HardConcrete": lambda a, v: ma.HardConcrete(a([0.3, -1.0]), a(-TAU), validate_args=v),
    "KDHardConcrete": lambda a, v: ma.KDHardConcrete(
        a(LOC), a(TAU), a([0.5, 2.0]), validate_args=v
    ),
    "GumbelSoftmax": lambda a, v: ma.GumbelSoftmax(a(LOC), a(-TAU), validate_args=v),
}


def _array(backend):
    def a(x):
        return from_numpy(backend, np.asarray(x, dtype=np.float64))

    return a


@pytest.mark.allow_host_transfers  # validate_args=True reads the values, on GPUs too
@pytest.mark.parametrize("name", list(BAD))
def test_validate_args_true_checks_parameters_on_every_backend(backend, name):
    a = _array(backend)
    with pytest.raises(ValueError):
        BAD[name](a, True)  # forced: checked even where it costs a device sync
    assert BAD[name](a, False).validate_args is False  # never checked


@pytest.mark.parametrize("name", list(BAD))
def test_validate_args_none_checks_where_values_are_free_to_read(backend, name):
    a = _array(backend)
    if _backend.values_are_checkable(a(LOC)):
        with pytest.raises(ValueError):
            BAD[name](a, None)
    else:  # an accelerator: no device sync by default
        assert BAD[name](a, None).validate_args is False


@pytest.mark.parametrize("validate_args", [VALIDATED, False])
def test_log_prob_checks_points_only_under_validation(backend, validate_args):
    d = _build(backend, "MixedDirichlet", validate_args)
    off = from_numpy(backend, np.array([0.5, 0.6, 0.1]))
    negative = from_numpy(backend, np.array([1.5, -0.5, 0.0]))
    if validate_args:
        with pytest.raises(ValueError, match="sum to 1"):
            d.log_prob(off)
        with pytest.raises(ValueError, match="negative"):
            d.log_prob(negative)
    else:
        assert tuple(d.log_prob(off).shape) == (2,)


def test_shape_checks_run_even_without_validation(backend):
    d = _build(backend, "MixedDirichlet", False)
    with pytest.raises(ValueError, match="3 entries on its last axis"):
        d.log_prob(from_numpy(backend, np.array([0.5, 0.5])))
    with pytest.raises(ValueError, match="does not broadcast against batch_shape"):
        d.log_prob(from_numpy(backend, np.full((4, 3), 1 / 3)))


def test_validate_args_true_is_skipped_while_tracing_and_resumes_outside():
    """Under ``jax.jit`` values cannot be read even when checks are forced; the same
    distribution checks again as soon as it is used eagerly (and one returned by ``jit``)."""
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    d = ma.MixedDirichlet(jnp.asarray(LOC), jnp.asarray(ALPHA), validate_args=True)
    off = jnp.asarray([0.5, 0.6, 0.1])
    with pytest.raises(ValueError, match="sum to 1"):
        d.log_prob(off)
    traced = jax.jit(lambda d, y: d.log_prob(y))(d, off)  # no error: values are abstract
    assert traced.shape == (2,)
    back = jax.jit(lambda d: d)(d)
    assert back.validate_args is True
    with pytest.raises(ValueError, match="sum to 1"):
        back.log_prob(off)
    # Parameters built from tracers are not checked; the result is checked afterwards.
    bad = jax.jit(lambda c: ma.MixedDirichlet(jnp.asarray(LOC), c, validate_args=True))(
        jnp.asarray(-ALPHA)
    )
    with pytest.raises(ValueError, match="sum to 1"):
        bad.log_prob(off)


def test_validate_args_true_is_skipped_under_torch_vmap_and_resumes_outside():
    torch = pytest.importorskip("torch")
    d = ma.MixedDirichlet(torch.tensor(LOC), torch.tensor(ALPHA), validate_args=True)
    off = torch.tensor([[0.5, 0.6, 0.1], [0.2, 0.2, 0.2]])
    out = torch.func.vmap(d.log_prob)(off[:, None, :])  # batched: values are abstract
    assert tuple(out.shape) == (2, 2)
    with pytest.raises(ValueError, match="sum to 1"):
        d.log_prob(off[:1])
    assert math.isfinite(float(d.log_prob(torch.tensor([0.2, 0.3, 0.5]))[0]))
