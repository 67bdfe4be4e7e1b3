"""Tests for ``mixedarray.jax``: the ``jax.custom_jvp`` rules of the projections.

Every derivative is held to something the library does not compute: ``jax.test_util.check_grads``
(finite differences), the closed-form Jacobian ``diag(s) - s sᵀ/Σs`` of paper-notes §5 built
here in NumPy from an independent float64 bisection, and central finite differences of that
bisection for ∂y/∂α.  Test points keep every score at least ``MARGIN`` away from the threshold,
where the maps are smooth.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip(
    "jax", reason="jax is not installed: the JAX adapter (mixedarray.jax) is untested"
)
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import mixedarray as ma  # noqa: E402
from tests.projection_reference import draw, jacobian, reference  # noqa: E402

FD_EPS = 1e-6  # finite-difference step of check_grads (its default 1e-4 would cross the kinks)
K = 6

# ---------------------------------------------------------------------------------------------
# The projections under test: name -> (function of z, α of the closed form)

PROJECTIONS = {
    "sparsemax": (ma.sparsemax, 2.0),
    "entmax15": (ma.entmax15, 1.5),
    "entmax": (lambda z: ma.entmax(z, 1.3), 1.3),
    "softmax": (ma.softmax, 1.0),
}
NAMES = list(PROJECTIONS)
# Every projection as a function of its array inputs: z, and α for "entmax-alpha-*"
FUNCTIONS = {name: fn for name, (fn, _) in PROJECTIONS.items()} | {"entmax-alpha-array": ma.entmax}
ALPHA_SHAPES = {"per-row": (3, 1), "broadcast": (1,)}
BISECTION = {"entmax", "entmax-alpha-array"}


def fast(name, fn):
    """``jax.jit(fn)``, but eager for the α-entmax bisection.

    Eager sparsemax and 1.5-entmax re-trace and re-compile their ``while_loop`` on every call,
    so derivative checks that call them hundreds of times run several times faster jitted;
    jitting the 60 unrolled bisection steps of α-entmax instead takes seconds to compile, while
    eager runs them op by op from JAX's cache.  Both modes run the same custom_jvp rules.
    """
    return fn if name in BISECTION else jax.jit(fn)


def inputs_for(name, rng, shape=(3, K), alpha_shape=(3, 1)):
    """Arguments of ``FUNCTIONS[name]`` at a random point keeping ``MARGIN``."""
    if name in PROJECTIONS:
        return (jnp.asarray(draw(rng, shape, PROJECTIONS[name][1])),)
    alpha = rng.uniform(1.2, 2.5, size=alpha_shape)
    return jnp.asarray(draw(rng, shape, alpha)), jnp.asarray(alpha)


def assert_close(got, expected, atol):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), expected, rtol=0, atol=atol)


# ---------------------------------------------------------------------------------------------
# Finite differences


@pytest.mark.parametrize(
    ("name", "alpha_shape"),
    [(name, None) for name in NAMES]
    + [("entmax-alpha-array", shape) for shape in ALPHA_SHAPES.values()],
    ids=[*NAMES, *(f"entmax-alpha-{key}" for key in ALPHA_SHAPES)],
)
def test_check_grads_orders_1_and_2(name, alpha_shape):
    """``order=2`` checks the first-order JVP/VJP and then the derivatives of those.

    Second order of α-entmax differences the closed-form first derivative evaluated at the
    60-step bisection output; that output is exact to ~1e-16, so the default float64 tolerance
    holds at these points and no looser rtol is needed.
    """
    args = inputs_for(name, np.random.default_rng(0), alpha_shape=alpha_shape)
    check_grads(fast(name, FUNCTIONS[name]), args, order=2, modes=("fwd", "rev"), eps=FD_EPS)


# ---------------------------------------------------------------------------------------------
# grad, jacfwd, jacrev against the closed form


@pytest.mark.parametrize("name", NAMES)
def test_transforms_match_closed_form_jacobian(name):
    fn, alpha = PROJECTIONS[name]
    rng = np.random.default_rng(1)
    z_np, v_np, w_np = draw(rng, (K,), alpha), rng.normal(size=K), rng.normal(size=K)
    y_np = reference(z_np, alpha)[0]
    jac = jacobian(y_np, alpha)
    z, v, w = jnp.asarray(z_np), jnp.asarray(v_np), jnp.asarray(w_np)
    y, jvp_out = fast(name, lambda z, v: jax.jvp(fn, (z,), (v,)))(z, v)
    assert_close(y, y_np, 1e-12)
    assert_close(jvp_out, jac @ v_np, 1e-12)
    assert_close(fast(name, jax.grad(lambda z: fn(z) @ w))(z), jac.T @ w_np, 1e-12)
    for transform in (jax.jacfwd, jax.jacrev):
        assert_close(fast(name, transform(fn))(z), jac, 1e-12)


def test_transforms_match_closed_form_wrt_alpha():
    rng = np.random.default_rng(2)
    alpha_np = np.array([1.6])
    z_np, w_np = draw(rng, (K,), alpha_np), rng.normal(size=K)
    y_np = reference(z_np, alpha_np)[0]
    h = 1e-6  # ∂y/∂α by central differences of the reference bisection
    dy_dalpha = (reference(z_np, alpha_np + h)[0] - reference(z_np, alpha_np - h)[0]) / (2 * h)
    z, alpha = jnp.asarray(z_np), jnp.asarray(alpha_np)
    for argnums, expected in ((0, jacobian(y_np, alpha_np[0])), (1, dy_dalpha[:, None])):
        for transform in (jax.jacfwd, jax.jacrev):
            assert_close(transform(ma.entmax, argnums=argnums)(z, alpha), expected, 1e-8)
    grad_z, grad_alpha = jax.grad(lambda z, a: ma.entmax(z, a) @ jnp.asarray(w_np),
                                  argnums=(0, 1))(z, alpha)
    assert_close(grad_z, jacobian(y_np, alpha_np[0]) @ w_np, 1e-12)
    assert_close(grad_alpha, [dy_dalpha @ w_np], 1e-8)


# ---------------------------------------------------------------------------------------------
# jit and vmap


@pytest.mark.parametrize("name", FUNCTIONS)
def test_jit_equals_eager(name):
    """Values and gradients, at a point whose rows each hold one masked (-inf) score."""
    z, *alpha = inputs_for(name, np.random.default_rng(3), shape=(3, K - 1))
    args = (jnp.concatenate([z, jnp.full((3, 1), -jnp.inf)], axis=-1), *alpha)
    fn = FUNCTIONS[name]

    def value_and_grads(*args):
        return fn(*args), jax.grad(lambda *a: jnp.sum(fn(*a) ** 3), tuple(range(len(args))))(*args)

    eager, jitted = value_and_grads(*args), jax.jit(value_and_grads)(*args)
    for got, expected in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
        assert_close(got, np.asarray(expected), 1e-14)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("axis", [0, 1], ids=["leading", "middle"])
def test_vmap_equals_loop(name, axis):
    fn = PROJECTIONS[name][0]
    z = jnp.asarray(np.random.default_rng(4).normal(size=(4, 3, K)))
    expected = jnp.stack([fn(jnp.take(z, i, axis=axis)) for i in range(z.shape[axis])], axis=axis)
    assert_close(jax.vmap(fn, in_axes=axis, out_axes=axis)(z), np.asarray(expected), 1e-15)


VMAP_ALPHA = {  # in_axes of (z, alpha) for z of shape (4, 3, K) and alpha of shape (4, 3, 1)
    "alpha-only": (None, 0),
    "z-and-alpha": (0, 0),
    "middle-z-and-alpha": (1, 1),
}


@pytest.mark.parametrize("in_axes", VMAP_ALPHA.values(), ids=VMAP_ALPHA.keys())
def test_vmap_over_alpha_equals_loop(in_axes):
    rng = np.random.default_rng(5)
    z_all = jnp.asarray(rng.normal(size=(4, 3, K)))
    alpha = jnp.asarray(rng.uniform(1.2, 2.5, size=(4, 3, 1)))
    axis = next(a for a in in_axes if a is not None)
    z = z_all[0] if in_axes[0] is None else z_all

    def value_and_alpha_grad(z, alpha):
        return ma.entmax(z, alpha), jax.grad(lambda a: jnp.sum(ma.entmax(z, a) ** 2))(alpha)

    pairs = [value_and_alpha_grad(z if in_axes[0] is None else jnp.take(z, i, axis=axis),
                                  jnp.take(alpha, i, axis=axis)) for i in range(alpha.shape[axis])]
    got = jax.vmap(value_and_alpha_grad, in_axes=in_axes, out_axes=axis)(z, alpha)
    for part, expected in zip(got, zip(*pairs, strict=True), strict=True):
        assert_close(part, np.asarray(jnp.stack(expected, axis=axis)), 1e-15)


# ---------------------------------------------------------------------------------------------
# -inf entries


NEG_INF_Z = np.array([[0.5, -np.inf, 0.2, -np.inf, -0.1], [-np.inf, 1.0, -np.inf, 0.9, 0.95]])
INF_MASK = np.isneginf(NEG_INF_Z)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_neg_inf_entries_have_exact_zero_output_and_gradient(name):
    args = (jnp.asarray(NEG_INF_Z),)
    args += () if name in PROJECTIONS else (jnp.asarray([[1.4], [1.7]]),)
    fn = FUNCTIONS[name]
    g = jnp.asarray(np.random.default_rng(6).normal(size=NEG_INF_Z.shape))
    y, grads = fast(name, lambda *a: (fn(*a), jax.vjp(fn, *a)[1](g)))(*args)
    jacs = [fast(name, t(lambda z: fn(z, *args[1:])))(args[0]) for t in (jax.jacfwd, jax.jacrev)]
    for t in (y, *grads, *jacs):
        assert np.all(np.isfinite(np.asarray(t)))
    assert np.all(np.asarray(y)[INF_MASK] == 0)
    assert np.all(np.asarray(grads[0])[INF_MASK] == 0)
    assert np.all(np.asarray(grads[0])[~INF_MASK] != 0)  # the finite entries do get a gradient
    for jac in jacs:
        assert np.all(np.asarray(jac).transpose(2, 3, 0, 1)[INF_MASK] == 0)  # ∂y/∂z at masked z


# ---------------------------------------------------------------------------------------------
# dtypes and devices


TOLERANCE = {"float32": 1e-6, "bfloat16": 1e-2, "float16": 2e-3}


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("dtype", TOLERANCE)
def test_low_precision_keeps_dtype_and_gets_gradients(name, dtype):
    rng = np.random.default_rng(7)
    args = tuple(a.astype(dtype) for a in inputs_for(name, rng))
    fn = FUNCTIONS[name]
    g = jnp.asarray(rng.normal(size=(3, K)))
    y, pullback = jax.vjp(fn, *args)
    grads = pullback(g.astype(dtype))
    exact = tuple(a.astype(jnp.float64) for a in args)  # the same rounded inputs, in float64
    y64, pullback64 = jax.vjp(fn, *exact)
    assert y.dtype == jnp.dtype(dtype) and all(t.dtype == jnp.dtype(dtype) for t in grads)
    tol = TOLERANCE[dtype]
    assert_close(y.astype(jnp.float64), np.asarray(y64), tol)
    for got, expected in zip(grads, pullback64(g), strict=True):
        expected = np.asarray(expected)
        assert_close(got.astype(jnp.float64), expected, 10 * tol * (1 + np.abs(expected).max()))


DEVICE_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import mixedarray as ma

target = jax.devices("cpu")[1]
assert jax.devices("cpu")[0] != target
z = jax.device_put(jnp.asarray(np.random.default_rng(0).normal(size=(3, 5))), target)
alpha = jax.device_put(jnp.full((3, 1), 1.7), target)
# (jit of the 60-step bisection of entmax compiles for seconds: the jitted calls are the others)
for fn, args, jit in [(ma.sparsemax, (z,), True), (ma.entmax15, (z,), True),
                      (ma.softmax, (z,), True), (lambda z: ma.entmax(z, 1.3), (z,), False),
                      (ma.entmax, (z, alpha), False)]:
    y, pullback = jax.vjp(fn, *args)
    outputs = (y, *pullback(jnp.ones_like(z))) + ((jax.jit(fn)(*args),) if jit else ())
    for out in outputs:
        assert out.devices() == {target}, (fn, out.devices())
print("ok")
"""


def test_results_and_gradients_stay_on_input_device():
    """On the second of two host CPU devices (a subprocess: the flag must precede JAX's start)."""
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(DEVICE_SCRIPT)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
