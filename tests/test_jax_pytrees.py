"""JAX citizenship: every distribution is a pytree that passes through jit, vmap, grad and scan.

Array parameters are the leaves; static configuration (``num_nodes``, ``hard``, ``K``, ``bits``),
the number of vertices and the requested ``validate_args`` are auxiliary data.  Registration is
lazy: ``import mixedarray`` does not import JAX (checked in a fresh interpreter).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import mixedarray as ma  # noqa: E402
from mixedarray import montecarlo  # noqa: E402

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[1]

LOC = np.array([[0.5, -0.2, 0.1], [0.0, 1.0, -1.0]])
ALPHA = np.array([[1.5, 0.5, 2.0], [0.7, 0.7, 0.7]])
TAU = np.array([0.5, 0.8])


class Case:
    """One distribution: raw parameters, how to build it from them, and what to expect."""

    def __init__(self, cls, params, build, static, entropy):
        self.cls = cls
        self.params = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in params.items()}
        self.build = build  # dict of raw parameter arrays -> distribution
        self.static = static  # expected static values, in static_names order
        self.entropy = entropy  # "exact", "mc" or None (no estimator at all)

    def make(self):
        return self.build(self.params)

    def numpy(self):
        """The same distribution on NumPy: the eager reference for densities and entropies
        (eager JAX compiles every op separately, which is slow)."""
        return self.build({k: np.asarray(v) for k, v in self.params.items()})


CASES = {
    "GaussianSparsemax": Case(
        ma.GaussianSparsemax,
        {"loc": LOC, "scale": np.full_like(LOC, 0.7)},
        lambda p: ma.GaussianSparsemax(p["loc"], p["scale"], num_nodes=16),
        (16,),
        "mc",
    ),
    "GaussianSparsemax-K2": Case(
        ma.GaussianSparsemax,
        {"loc": LOC[:, :2], "scale": np.full((2, 2), 0.7)},
        lambda p: ma.GaussianSparsemax(p["loc"], p["scale"]),
        (32,),
        "exact",
    ),
    "MixedDirichlet": Case(
        ma.MixedDirichlet,
        {"face_logits": LOC, "concentration": ALPHA},
        lambda p: ma.MixedDirichlet(p["face_logits"], p["concentration"]),
        (),
        "exact",
    ),
    "NonEmptyBernoulli": Case(
        ma.NonEmptyBernoulli,
        {"face_logits": LOC},
        lambda p: ma.NonEmptyBernoulli(p["face_logits"]),
        (),
        "exact",
    ),
    "MaxEntMixed": Case(
        ma.MaxEntMixed,
        {"like": LOC},
        lambda p: ma.MaxEntMixed(3, 2.0, like=p["like"], batch_shape=(2,)),
        (3, 2.0),
        "exact",
    ),
    "HardConcrete": Case(
        ma.HardConcrete,
        {"logits": [0.3, -1.0], "temperature": TAU, "low": [-0.1, -0.2], "high": [1.1, 1.05]},
        lambda p: ma.HardConcrete(p["logits"], p["temperature"], p["low"], p["high"]),
        (),
        "exact",
    ),
    "KDHardConcrete": Case(
        ma.KDHardConcrete,
        {"logits": LOC, "temperature": TAU, "scale": [1.2, 1.5]},
        lambda p: ma.KDHardConcrete(p["logits"], p["temperature"], p["scale"]),
        (),
        None,  # K = 3: no density, so neither an exact nor a Monte Carlo entropy
    ),
    "KDHardConcrete-K2": Case(
        ma.KDHardConcrete,
        {"logits": LOC[:, :2], "temperature": TAU, "scale": [1.2, 1.5]},
        lambda p: ma.KDHardConcrete(p["logits"], p["temperature"], p["scale"]),
        (),
        "exact",
    ),
    "GumbelSoftmax": Case(
        ma.GumbelSoftmax,
        {"logits": LOC, "temperature": TAU},
        lambda p: ma.GumbelSoftmax(p["logits"], p["temperature"]),
        (False,),
        "mc",
    ),
    "GumbelSoftmax-hard": Case(
        ma.GumbelSoftmax,
        {"logits": LOC, "temperature": TAU},
        lambda p: ma.GumbelSoftmax(p["logits"], p["temperature"], hard=True),
        (True,),
        "mc",
    ),
}
NAMES = list(CASES)
WITH_DENSITY = [n for n in NAMES if CASES[n].entropy is not None]
KEY = jax.random.key(0)


# Shared jitted functions: JAX caches compilations per function object, tree structure and
# shapes, so tests that reuse these (rather than fresh lambdas) compile each case only once.
LOG_PROB = jax.jit(lambda d, y: d.log_prob(y))
SAMPLE = jax.jit(lambda d, key, n: d.sample(key, (n,)), static_argnums=2)
NEG_LOG_PROB_OF_SAMPLE = jax.jit(
    lambda d, key, n: -d.log_prob(d.sample(key, (n,))), static_argnums=2
)


def _close(a, b, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def _leaves_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        _close(x, y)


def _objective(d, y):
    """A scalar smooth in the parameters: the summed log density of the fixed points ``y``,
    or, without a density, a weighted pathwise sample."""
    if isinstance(d, ma.KDHardConcrete) and d.num_vertices > 2:
        w = jnp.arange(1.0, d.num_vertices + 1.0)
        return jnp.sum(d.rsample(KEY, (4,)) * w)
    return jnp.sum(d.log_prob(y))


POINTS = {
    2: np.array([[[0.3, 0.7]], [[0.0, 1.0]], [[1.0, 0.0]]]),
    3: np.array([[[0.2, 0.3, 0.5]], [[0.0, 0.4, 0.6]], [[1.0, 0.0, 0.0]]]),
}


def _points(d):
    """Fixed points (3, 1, K) where every density is smooth in the parameters."""
    y = jnp.asarray(POINTS[d.num_vertices])
    if isinstance(d, ma.NonEmptyBernoulli):
        return y > 0
    if isinstance(d, ma.GumbelSoftmax) and not d.hard:
        return jnp.asarray([[[0.2, 0.3, 0.5]], [[0.1, 0.4, 0.5]], [[0.7, 0.2, 0.1]]])
    if isinstance(d, ma.GumbelSoftmax):
        return jnp.asarray(np.eye(3)[:, None, :])
    return y


# ---------------------------------------------------------------------------------------------
# Registration without importing JAX


def _run(code):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_mixedarray_does_not_import_jax_yet_distributions_are_pytrees():
    out = _run(
        """
        import sys
        import mixedarray as ma

        class Early(ma.NonEmptyBernoulli):  # defined before JAX is imported
            pass

        assert "jax" not in sys.modules and "mixedarray.jax" not in sys.modules
        import numpy as np
        ma.MixedDirichlet(np.zeros(3), np.ones(3))  # NumPy use does not load the adapter
        assert "jax" not in sys.modules and "mixedarray.jax" not in sys.modules

        import jax, jax.numpy as jnp
        d = ma.MixedDirichlet(jnp.zeros((2, 3)), jnp.ones((2, 3)))
        assert "mixedarray.jax" in sys.modules
        leaves, tree = jax.tree_util.tree_flatten(d)
        assert [leaf.shape for leaf in leaves] == [(2, 3), (2, 3)], leaves
        assert jax.tree_util.tree_unflatten(tree, leaves).batch_shape == (2,)

        class Late(ma.NonEmptyBernoulli):  # defined after registration
            pass

        for cls in (Early, Late):
            e = cls(jnp.zeros(3))
            assert len(jax.tree_util.tree_leaves(e)) == 1, cls
            assert type(jax.jit(lambda d: d)(e)) is cls
        print("ok")
        """
    )
    assert out.strip() == "ok"


# ---------------------------------------------------------------------------------------------
# Leaves and auxiliary data


@pytest.mark.parametrize("name", NAMES)
def test_leaves_are_the_parameters_and_aux_holds_the_static_fields(name):
    case = CASES[name]
    d = case.make()
    path_leaves, tree = jax.tree_util.tree_flatten_with_path(d)
    assert [path[0].name for path, _ in path_leaves] == list(case.cls.parameter_names)
    for (_, leaf), pname in zip(path_leaves, case.cls.parameter_names, strict=True):
        assert leaf is getattr(d, pname)
    _, aux = d.tree_flatten()
    assert aux == (case.static, d.num_vertices, None)
    rebuilt = jax.tree_util.tree_unflatten(tree, [leaf for _, leaf in path_leaves])
    assert type(rebuilt) is type(d)
    assert rebuilt.batch_shape == d.batch_shape


STATIC_VARIANTS = {
    "num_nodes": (
        lambda: ma.GaussianSparsemax(jnp.asarray(LOC), 0.7, num_nodes=8),
        lambda: ma.GaussianSparsemax(jnp.asarray(LOC), 0.7, num_nodes=16),
    ),
    "hard": (
        lambda: ma.GumbelSoftmax(jnp.asarray(LOC), 0.5),
        lambda: ma.GumbelSoftmax(jnp.asarray(LOC), 0.5, hard=True),
    ),
    "bits": (
        lambda: ma.MaxEntMixed(3, 0.0, like=jnp.asarray(LOC)),
        lambda: ma.MaxEntMixed(3, 4.0, like=jnp.asarray(LOC)),
    ),
    "K": (
        lambda: ma.MaxEntMixed(3, like=jnp.asarray(LOC)),
        lambda: ma.MaxEntMixed(4, like=jnp.asarray(LOC)),
    ),
    "validate_args": (
        lambda: ma.NonEmptyBernoulli(jnp.asarray(LOC)),
        lambda: ma.NonEmptyBernoulli(jnp.asarray(LOC), validate_args=False),
    ),
}


@pytest.mark.parametrize("field", STATIC_VARIANTS)
def test_changing_a_static_field_changes_the_treedef_and_retraces(field):
    first, second = (make() for make in STATIC_VARIANTS[field])
    assert jax.tree_util.tree_structure(first) != jax.tree_util.tree_structure(second)
    traces = []

    @jax.jit
    def f(d):
        traces.append(None)
        return sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(d)) + d.num_vertices

    f(first)
    f(jax.tree_util.tree_map(lambda x: x + 1.0, first))  # new leaf values: no retrace
    assert len(traces) == 1
    f(second)
    assert len(traces) == 2
    f(second)
    assert len(traces) == 2


def test_eager_and_traced_builds_have_the_same_treedef():
    # validate_args=None resolves differently for concrete arrays and for tracers; the tree
    # structure carries the request, so jit outputs and scan carries match eager inputs.
    d = CASES["MixedDirichlet"].make()
    out = jax.jit(lambda p: ma.MixedDirichlet(p, jnp.ones_like(p)))(jnp.asarray(LOC))
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(d)
    assert out.validate_args is True  # concrete again: checks resume


# ---------------------------------------------------------------------------------------------
# jit: in and out; sample, log_prob, entropy


@pytest.mark.parametrize("name", NAMES)
def test_jit_in_and_out(name):
    case = CASES[name]
    d = case.make()
    same = jax.jit(lambda d: d)(d)
    assert type(same) is type(d)
    assert same.batch_shape == d.batch_shape
    _leaves_equal(same, d)
    built = jax.jit(case.build)(case.params)
    assert type(built) is type(d)
    assert built.batch_shape == d.batch_shape
    assert built.event_shape == d.event_shape
    _leaves_equal(built, d)


@pytest.mark.parametrize("name", NAMES)
def test_jit_sample_equals_eager_with_the_same_key(name):
    d = CASES[name].make()
    key = jax.random.key(3)
    eager = d.sample(key, (5,))

    @jax.jit
    def draws(d, k):  # one compilation for both: XLA shares the common computation
        return d.sample(k, (5,)), (d.rsample(k, (5,)) if d.has_rsample else None)

    jitted, pathwise = draws(d, key)
    assert jitted.shape == (5, *d.batch_shape, d.num_vertices)
    assert jitted.dtype == eager.dtype
    _close(jitted, eager)
    if d.has_rsample:  # the same draw, with a pathwise gradient
        _close(pathwise, eager)
    other = draws(d, jax.random.key(4))[0]
    assert not np.array_equal(np.asarray(other), np.asarray(eager))


def test_jit_sample_with_a_legacy_key():
    d = CASES["HardConcrete"].make()
    legacy = jax.random.PRNGKey(3)
    _close(jax.jit(lambda d, k: d.sample(k, (4,)))(d, legacy), d.sample(legacy, (4,)))


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_jit_log_prob_equals_eager(name):
    d = CASES[name].make()
    y = _points(d)
    jitted = LOG_PROB(d, y)
    assert jitted.shape == (3, *d.batch_shape)
    _close(jitted, CASES[name].numpy().log_prob(np.asarray(y)))
    # Built inside jit from raw parameters, too.
    case = CASES[name]
    _close(jax.jit(lambda p, y: case.build(p).log_prob(y))(case.params, y), jitted)


@pytest.mark.parametrize("name", [n for n in NAMES if CASES[n].entropy == "exact"])
def test_jit_exact_entropy_equals_eager(name):
    case = CASES[name]
    d = case.make()
    eager = ma.entropy(case.numpy(), method="exact")
    _close(jax.jit(lambda d: ma.entropy(d, method="exact"))(d), eager)


def _explicit_estimate(d, key, sizes):
    """The plain Monte Carlo estimate of H = E[-log p(Y)] written out: the same chunk keys as
    the library (``jax.random.split``), jitted draws and densities, NumPy statistics."""
    values = np.concatenate(
        [
            np.asarray(NEG_LOG_PROB_OF_SAMPLE(d, k, n))
            for k, n in zip(list(jax.random.split(key, len(sizes))), sizes, strict=True)
        ]
    )
    return values.mean(axis=0), values.std(axis=0, ddof=1) / np.sqrt(len(values))


@pytest.mark.parametrize("name", [n for n in NAMES if CASES[n].entropy is not None])
def test_jit_monte_carlo_entropy_is_chunked_and_right(name, monkeypatch):
    case = CASES[name]
    d = case.make()
    # Small chunks: 400 samples in two chunks of 200 (the loop unrolls under jit).
    # (the chunk budget counts log_prob's work per draw: K, or K × nodes for Gaussian-Sparsemax)
    monkeypatch.setattr(montecarlo, "_CHUNK_ELEMENTS", 200 * 2 * d._log_prob_width)

    @jax.jit
    def estimate(d, key):
        return ma.entropy(d, method="mc", rng=key, num_samples=400, return_stderr=True)

    got = estimate(d, KEY)
    assert got.value.shape == d.batch_shape
    assert np.all(np.asarray(got.stderr) > 0)
    if case.entropy == "mc":  # the only estimator there is: check it term by term
        mean, stderr = _explicit_estimate(d, KEY, [200, 200])
        _close(got.value, mean, rtol=1e-9)
        _close(got.stderr, stderr, rtol=1e-6)
    if case.entropy == "exact":
        exact = np.asarray(ma.entropy(case.numpy(), method="exact"))
        assert np.all(np.abs(np.asarray(got.value) - exact) < 5 * np.asarray(got.stderr))


def test_jit_monte_carlo_entropy_equals_eager():
    d = CASES["HardConcrete"].make()

    def estimate(d, key):
        return ma.entropy(d, method="mc", rng=key, num_samples=300, return_stderr=True)

    eager, jitted = estimate(d, KEY), jax.jit(estimate)(d, KEY)
    _close(jitted.value, eager.value)
    _close(jitted.stderr, eager.stderr)


def test_monte_carlo_chunks_under_jit_with_an_explicit_chunk_size():
    d = CASES["HardConcrete"].make()

    @jax.jit
    def mean_first(d, key):
        return ma.expectation(lambda y: y[..., 0], d, key, 50, chunk_size=7)

    got = mean_first(d, KEY)  # 7 chunks of 7 and one of 1
    sizes = [7] * 7 + [1]
    values = np.concatenate(
        [
            np.asarray(SAMPLE(d, k, n)[..., 0])
            for k, n in zip(list(jax.random.split(KEY, 8)), sizes, strict=True)
        ]
    )
    _close(got.value, values.mean(axis=0))
    _close(got.stderr, values.std(axis=0, ddof=1) / np.sqrt(50), rtol=1e-8)


def test_mc_only_entropies_need_a_key_and_no_estimator_at_all_is_clear():
    gs = CASES["GaussianSparsemax"].make()
    with pytest.raises(NotImplementedError, match="Monte Carlo"):
        jax.jit(lambda d: ma.entropy(d, method="exact"))(gs)
    with pytest.raises(ValueError, match="needs rng"):
        jax.jit(lambda d: ma.entropy(d, num_samples=10))(gs)
    kd = CASES["KDHardConcrete"].make()  # K = 3: no density, hence no estimator
    with pytest.raises(NotImplementedError, match="no tractable density"):
        jax.jit(lambda d, k: ma.entropy(d, rng=k, num_samples=10))(kd, KEY)


# ---------------------------------------------------------------------------------------------
# vmap, grad, scan


def _stack(*ds):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *ds)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_a_stacked_distribution(name):
    case = CASES[name]
    members = [
        case.build(jax.tree_util.tree_map(lambda x, s=s: x * s, case.params)) for s in (1.0, 1.3)
    ]
    stacked = _stack(*members)
    assert stacked.batch_shape == (2, *members[0].batch_shape)
    if case.entropy is None:  # no density: map the sampler
        keys = jax.random.split(KEY, 2)
        samples = jax.jit(jax.vmap(lambda d, k: d.sample(k, (3,))))(stacked, keys)
        for i, member in enumerate(members):
            _close(samples[i], SAMPLE(member, keys[i], 3))
    else:
        y = _points(members[0])
        values = jax.jit(jax.vmap(LOG_PROB, in_axes=(0, None)))(stacked, y)
        for i, member in enumerate(members):
            _close(values[i], LOG_PROB(member, y))


@pytest.mark.parametrize("name", NAMES)
def test_vmap_out_builds_a_batched_distribution(name):
    case = CASES[name]
    raw = jax.tree_util.tree_map(lambda x: jnp.stack([x, 1.2 * x, 0.9 * x, x]), case.params)
    d = jax.vmap(case.build)(raw)
    single = case.make()
    assert type(d) is type(single)
    assert d.batch_shape == (4, *single.batch_shape)
    assert d.event_shape == single.event_shape
    if case.entropy is None:
        draws = SAMPLE(d, KEY, 2)
        assert draws.shape == (2, 4, *single.batch_shape, single.num_vertices)
    else:
        y = _points(single)
        batched = LOG_PROB(d, y[:, None])
        _close(batched[:, 0], LOG_PROB(single, y))
        _close(batched[:, 3], LOG_PROB(single, y))


@pytest.mark.parametrize("name", NAMES)
def test_grad_with_respect_to_a_distribution_is_a_distribution_of_gradients(name):
    case = CASES[name]
    d = case.make()
    y = _points(d)

    @jax.jit
    def both(d, raw):  # one compilation: XLA shares the (identical) computations
        return jax.grad(_objective)(d, y), jax.grad(lambda p: _objective(case.build(p), y))(raw)

    grads, raw = both(d, case.params)
    assert type(grads) is type(d)
    assert grads.batch_shape == d.batch_shape
    if isinstance(d, ma.MaxEntMixed):  # the leaf is derived from K and bits: check by FD
        leaves, aux = d.tree_flatten()
        h = 1e-6
        direction = jnp.asarray(np.random.default_rng(0).normal(size=leaves[0].shape))

        def moved(step):
            return _objective(type(d).tree_unflatten(aux, [leaves[0] + step * direction]), y)

        fd = (moved(h) - moved(-h)) / (2 * h)
        _close(jnp.sum(grads.log_size_probs * direction), fd, rtol=1e-6, atol=1e-8)
        return
    for pname in d.parameter_names:
        _close(getattr(grads, pname), raw[pname], rtol=1e-9)
    assert any(np.any(np.asarray(getattr(grads, p)) != 0) for p in d.parameter_names)


def test_grad_matches_finite_differences():
    case = CASES["MixedDirichlet"]
    d = case.make()
    y = _points(d)

    def f(d):
        return jnp.sum(d.log_prob(y)) + jnp.sum(ma.entropy(d))

    grads = jax.jit(jax.grad(f))(d)
    f = jax.jit(f)
    h = 1e-6
    for pname in d.parameter_names:
        value = getattr(d, pname)
        for index in [(0, 0), (1, 2)]:
            bump = jnp.zeros_like(value).at[index].set(h)
            up = case.build({**case.params, pname: value + bump})
            down = case.build({**case.params, pname: value - bump})
            fd = (f(up) - f(down)) / (2 * h)
            _close(getattr(grads, pname)[index], fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["MixedDirichlet", "GaussianSparsemax", "KDHardConcrete"])
def test_scan_carries_a_distribution(name):
    case = CASES[name]
    d = case.make()
    keys = jax.random.split(KEY, 3)

    def body(carry, key):
        # Rebuild from the carried parameters each step: eager and traced builds must agree
        # in tree structure for scan to accept the carry.
        params = {
            k: (getattr(carry, k) if hasattr(carry, k) else v) for k, v in case.params.items()
        }
        nxt = case.build(params)
        if case.entropy is None:
            return nxt, nxt.sample(key, (2,))
        return nxt, nxt.log_prob(_points(d))

    final, outputs = jax.lax.scan(body, d, keys)
    assert type(final) is type(d)
    _leaves_equal(final, d)
    for i in range(3):
        if case.entropy is None:
            _close(outputs[i], SAMPLE(d, keys[i], 2))
        else:
            _close(outputs[i], LOG_PROB(d, _points(d)))


def test_scan_over_updates_of_a_distribution():
    d = CASES["MixedDirichlet"].make()

    def body(carry, step):
        nxt = ma.MixedDirichlet(carry.face_logits + step, carry.concentration * 1.1)
        return nxt, ma.entropy(nxt)

    final, entropies = jax.lax.scan(body, d, jnp.arange(3.0))
    expected = d
    for i, step in enumerate([0.0, 1.0, 2.0]):
        expected = ma.MixedDirichlet(expected.face_logits + step, expected.concentration * 1.1)
        _close(entropies[i], jax.jit(ma.entropy)(expected))
    _leaves_equal(final, expected)
