"""Tests for ``mixedarray._special``: values against SciPy, dtype/device/library, gradients.

References are SciPy's float64 values on NumPy at the same (dtype-rounded) inputs, or, for
``log1mexp`` (which SciPy lacks), mpmath at 50 digits.  Tolerances are relative, with an
absolute floor only where the function has a zero (``lgamma`` at 1 and 2, ``digamma`` at
1.4616...) or underflows: there a relative error is meaningless and every implementation,
SciPy's own float32 loops included, is accurate in absolute terms only.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.special as ss
from helpers import from_numpy, library_of, to_numpy

from mixedarray import _special as sp
from mixedarray._backend import array_namespace, device

LN2 = math.log(2.0)
FUNCTIONS = ["lgamma", "digamma", "log_ndtr", "ndtr", "ndtri", "log1mexp"]


def _log1mexp_reference(x: np.ndarray) -> np.ndarray:
    """log(1 - exp(-x)) from first principles: mpmath at 50 digits (NumPy if it is absent)."""
    x = np.asarray(x, dtype=np.float64)
    try:
        import mpmath
    except ImportError:  # pragma: no cover - mpmath comes with torch's sympy
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x <= LN2, np.log(-np.expm1(-x)), np.log1p(-np.exp(-x)))
    out = np.empty_like(x)
    with mpmath.workdps(50):
        for i, xi in enumerate(x.flat):
            if np.isnan(xi) or xi < 0:
                out.flat[i] = np.nan
            elif xi == 0:
                out.flat[i] = -np.inf
            elif np.isinf(xi):
                out.flat[i] = 0.0
            else:  # each form where it does not cancel at 50 digits
                xm = mpmath.mpf(float(xi))
                value = mpmath.log1p(-mpmath.exp(-xm)) if xi > 1 else mpmath.log(-mpmath.expm1(-xm))
                out.flat[i] = float(value)
    return out


REFERENCE = {
    "lgamma": ss.gammaln,
    "digamma": ss.digamma,
    "log_ndtr": ss.log_ndtr,
    "ndtr": ss.ndtr,
    "ndtri": ss.ndtri,
    "log1mexp": _log1mexp_reference,
}

# Hard points: far tails, zeros of the function, reflection region, near the branch switches.
POINTS = {
    "lgamma": [1e-8, 0.5, 0.999999, 1.0, 1.000001, 1.5, 1.999999, 2.0, 2.000001, 3.7, 10.0,
               100.5, 1e5, 1e10, 1e30, -0.5, -2.5, -3.3, -10.7],
    "digamma": [1e-6, 0.3, 1.0, 1.4616321449683622, 2.5, 10.0, 1e3, 1e8, -0.3, -0.7, -1.5,
                -2.3, -5.2, -10.4],
    "log_ndtr": [-40.0, -38.5, -37.5, -36.0, -30.0, -20.0, -12.5, -10.0, -5.0, -1.0, -0.5, 0.0,
                 0.5, 1.0, 3.0, 4.0, 6.0, 8.0, 10.0, 20.0, 30.0, np.inf, -np.inf],
    "ndtr": [-37.0, -20.0, -10.0, -5.0, -3.0, -1.0, 0.0, 1.0, 3.0, 6.0, 8.0, np.inf, -np.inf],
    "ndtri": [0.0, 1e-300, 1e-100, 1e-20, 1e-10, 1e-5, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99,
              1 - 1e-5, 1 - 1e-10, 1 - 2.0**-52, 1.0],
    "log1mexp": [0.0, 1e-300, 1e-30, 1e-10, 1e-5, 0.1, 0.5, LN2 - 1e-9, LN2, LN2 + 1e-9, 1.0,
                 5.0, 20.0, 36.0, 50.0, 700.0, 1e4, np.inf],
}

# Relative tolerance per dtype; float64 is 1e-12 unless a framework is known to do worse.
RTOL = {"float64": 1e-12, "float32": 1e-5}
# Where a relative error is not meaningful: absolute floors, in units of the dtype's eps.
ATOL_EPS = {"lgamma": 16.0, "digamma": 8.0}
# float32 log_ndtr/ndtr: float32 x/√2 is rounded by eps, and erfc(t) amplifies a relative
# argument error by 2t² = x² (SciPy's float32 loops compute in double, torch/JAX/CuPy do not):
# about 1e-5 at |x| = 13, the last point before Φ(-x) underflows.
RTOL_FLOAT32 = {"log_ndtr": 3e-5, "ndtr": 3e-5}


def _tolerances(name: str, dtype: str) -> tuple[float, float]:
    rtol = RTOL_FLOAT32.get(name, RTOL[dtype]) if dtype == "float32" else RTOL[dtype]
    finfo = np.finfo(dtype)
    atol = ATOL_EPS.get(name, 0.0) * float(finfo.eps)
    # Values below the smallest normal number (underflow) only agree in absolute terms.
    return rtol, max(atol, float(finfo.smallest_normal))


def _same_kind(out, inp) -> None:
    assert type(out) is type(inp)
    assert array_namespace(out) is array_namespace(inp)
    assert device(out) == device(inp)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_values_match_scipy(backend, name, dtype):
    x = np.asarray(POINTS[name], dtype=dtype)
    ref = REFERENCE[name](x.astype(np.float64))
    inp = from_numpy(backend, x, dtype)
    out = getattr(sp, name)(inp)
    _same_kind(out, inp)
    assert out.dtype == inp.dtype
    rtol, atol = _tolerances(name, dtype)
    got = to_numpy(out).astype(np.float64)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, err_msg=f"{name} x={x}")


def test_log_ndtr_far_left_tail_is_finite(backend):
    # Φ(-40) = 3.6e-350 underflows float64 and Φ(-20) = 2.8e-89 underflows float32.
    for dtype, xv in (("float64", -40.0), ("float32", -20.0)):
        out = to_numpy(sp.log_ndtr(from_numpy(backend, np.asarray([xv]), dtype)))
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(out, ss.log_ndtr(np.asarray([xv])), rtol=RTOL[dtype])


def test_log1mexp_special_values(backend):
    x = from_numpy(backend, np.asarray([0.0, 1e-10, LN2, 50.0, np.inf]))
    out = to_numpy(sp.log1mexp(x))
    assert out[0] == -np.inf
    assert out[4] == 0.0
    np.testing.assert_allclose(out[1], math.log(1e-10) - 5e-11, rtol=1e-14)
    np.testing.assert_allclose(out[2], -LN2, rtol=1e-15)
    np.testing.assert_allclose(out[3], -math.exp(-50.0), rtol=1e-14)
    # outside the domain (x < 0) the value is NaN, like log of a negative number
    assert np.isnan(to_numpy(sp.log1mexp(from_numpy(backend, np.asarray([-1.0])))))[0]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_xlogy_values(backend, dtype):
    x = np.asarray([0.0, 0.0, 0.0, 1.0, 2.5, -3.0, 1e-300, 7.0, 2.0], dtype=dtype)
    y = np.asarray([0.0, 1.0, np.inf, 0.0, 3.0, 0.5, 1e-300, 1e30, 1.0], dtype=dtype)
    ref = ss.xlogy(x.astype(np.float64), y.astype(np.float64))
    xi, yi = from_numpy(backend, x, dtype), from_numpy(backend, y, dtype)
    out = sp.xlogy(xi, yi)
    _same_kind(out, xi)
    assert out.dtype == xi.dtype
    rtol, atol = _tolerances("xlogy", dtype)
    np.testing.assert_allclose(to_numpy(out), ref, rtol=rtol, atol=atol)
    assert to_numpy(out)[0] == 0.0  # 0 * log(0) = 0


def test_xlogy_broadcasts_and_takes_scalars(backend):
    x = np.asarray([[0.0], [1.0], [2.5]])
    y = np.asarray([0.5, 1.0, 4.0, 9.0])
    out = sp.xlogy(from_numpy(backend, x), from_numpy(backend, y))
    assert tuple(out.shape) == (3, 4)
    np.testing.assert_allclose(to_numpy(out), ss.xlogy(x, y), rtol=1e-12)
    yi = from_numpy(backend, y, "float32")
    out = sp.xlogy(2.0, yi)
    _same_kind(out, yi)
    assert out.dtype == yi.dtype
    np.testing.assert_allclose(to_numpy(out), 2.0 * np.log(y), rtol=1e-6)
    xi = from_numpy(backend, x)
    np.testing.assert_allclose(to_numpy(sp.xlogy(xi, 3)), ss.xlogy(x, 3.0), rtol=1e-12)


def test_xlogy_dtype_promotion(backend):
    xp, _ = backend
    x32 = from_numpy(backend, np.asarray([1.0, 2.0]), "float32")
    y64 = from_numpy(backend, np.asarray([3.0, 4.0]), "float64")
    assert sp.xlogy(x32, y64).dtype == xp.float64
    ints = from_numpy(backend, np.asarray([0, 2]), xp.int32)
    # integer arrays do not widen a floating partner ...
    assert sp.xlogy(ints, x32).dtype == xp.float32
    # ... and alone compute in the default floating dtype
    default = xp.__array_namespace_info__().default_dtypes()["real floating"]
    out = sp.xlogy(ints, ints)
    assert out.dtype == default
    np.testing.assert_allclose(to_numpy(out), [0.0, 2.0 * math.log(2.0)], rtol=1e-6)


INSIDE = {"lgamma": 2.5, "digamma": 2.5, "log_ndtr": -1.5, "ndtr": -1.5, "ndtri": 0.3,
          "log1mexp": 0.4}


@pytest.mark.parametrize("name", [*FUNCTIONS, "xlogy"])
def test_zero_d_and_no_mutation(backend, name):
    fn = getattr(sp, name)
    xp, _ = backend
    v = INSIDE.get(name, 0.7)
    x0 = xp.reshape(from_numpy(backend, np.asarray([v])), ())
    out = fn(x0, x0) if name == "xlogy" else fn(x0)
    _same_kind(out, x0)
    assert tuple(out.shape) == ()
    data = np.asarray([v, v / 2, v / 3])
    x = from_numpy(backend, data)
    fn(x, x) if name == "xlogy" else fn(x)
    np.testing.assert_array_equal(to_numpy(x), data)


def test_numpy_scalar_input_gives_zero_d_array():
    for name in FUNCTIONS:
        out = getattr(sp, name)(np.float32(INSIDE[name]))
        assert type(out) is np.ndarray
        assert out.shape == ()
        assert out.dtype == np.float32


@pytest.mark.parametrize("name", [*FUNCTIONS, "xlogy"])
def test_half_precision_round_trips(backend, name):
    xp, _ = backend
    library = library_of(backend)
    if not hasattr(xp, "float16"):
        pytest.skip(f"{library} has no float16 dtype")
    dtypes = [xp.float16]
    if library == "torch":
        import torch

        dtypes.append(torch.bfloat16)
    if library == "jax":
        import jax.numpy as jnp

        dtypes.append(jnp.bfloat16)
    data = np.asarray([INSIDE.get(name, 0.7), INSIDE.get(name, 0.7) / 2])
    fn = getattr(sp, name)
    for dtype in dtypes:
        inp = from_numpy(backend, data, dtype)
        out = fn(inp, inp) if name == "xlogy" else fn(inp)
        _same_kind(out, inp)
        assert out.dtype == dtype
        ref = (ss.xlogy(data, data) if name == "xlogy" else REFERENCE[name](data))
        np.testing.assert_allclose(to_numpy(out).astype(np.float64), ref, rtol=1e-2)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_integer_input_uses_default_float(backend, name):
    xp, _ = backend
    default = xp.__array_namespace_info__().default_dtypes()["real floating"]
    data = np.asarray([3, 5]) if name != "ndtri" else np.asarray([0, 1])
    out = getattr(sp, name)(from_numpy(backend, data, xp.int64))
    assert out.dtype == default
    np.testing.assert_allclose(to_numpy(out), REFERENCE[name](data.astype(np.float64)),
                               rtol=1e-6)


def test_bad_input_is_a_type_error(backend):
    with pytest.raises(TypeError, match="at least one array"):
        sp.lgamma(1.5)
    with pytest.raises(TypeError, match="different libraries"):
        if library_of(backend) == "numpy":
            import array_api_strict as other

            sp.xlogy(np.ones(2), other.ones(2))
        else:
            sp.xlogy(from_numpy(backend, np.ones(2)), np.ones(2))
    xp, _ = backend
    z = xp.ones(2, dtype=xp.complex128)
    with pytest.raises(TypeError, match="x must be a real array"):
        sp.log_ndtr(z)
    with pytest.raises(TypeError, match="y must be a real array"):
        sp.xlogy(from_numpy(backend, np.ones(2)), z)


def test_import_is_lazy():
    code = (
        "import sys, numpy as np\n"
        "import mixedarray._special as sp\n"
        "sp.lgamma(np.ones(2)); sp.log1mexp(np.ones(2)); sp.xlogy(np.ones(2), 2.0)\n"
        "bad = [m for m in ('torch', 'jax', 'cupy', 'array_api_strict') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# Gradients: closed forms computed with SciPy, at points inside each branch and at hard ones.


def _phi(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


DERIVATIVE = {
    "lgamma": ss.digamma,
    "digamma": lambda x: ss.polygamma(1, x),
    "log_ndtr": lambda x: np.exp(-0.5 * x * x - ss.log_ndtr(x)) / math.sqrt(2 * math.pi),
    "ndtr": _phi,
    "ndtri": lambda p: 1.0 / _phi(ss.ndtri(p)),
    "log1mexp": lambda x: 1.0 / np.expm1(x),
}
GRAD_POINTS = {
    "lgamma": [0.5, 1.5, 3.2, 30.0, -2.5],
    "digamma": [0.7, 2.0, 12.0, -1.3],
    "log_ndtr": [-45.0, -38.0, -36.0, -20.0, -3.0, -0.5, 0.2, 4.0, 9.0],
    "ndtr": [-20.0, -3.0, 0.1, 2.0],
    "ndtri": [1e-10, 0.01, 0.4, 0.97],
    "log1mexp": [1e-10, 1e-3, 0.5, LN2 - 1e-6, LN2 + 1e-6, 3.0, 30.0, 50.0],
}
GRAD_RTOL = 1e-10
# torch's trigamma (the derivative of digamma) is a short asymptotic series: ~4e-10 relative.
TORCH_GRAD_RTOL = {"digamma": 1e-9}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_torch_gradients(name):
    torch = pytest.importorskip("torch")
    fn = getattr(sp, name)
    x = torch.tensor(GRAD_POINTS[name], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(fn(x).sum(), x)
    np.testing.assert_allclose(grad.numpy(), DERIVATIVE[name](np.asarray(GRAD_POINTS[name])),
                               rtol=TORCH_GRAD_RTOL.get(name, GRAD_RTOL))
    # finite differences, away from the extreme tails where they are meaningless
    moderate = [v for v in GRAD_POINTS[name] if 1e-4 < abs(v) < 25]
    xm = torch.tensor(moderate, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (xm,))


def test_torch_xlogy_gradients():
    torch = pytest.importorskip("torch")
    x = torch.tensor([0.5, 2.0, -1.0, 0.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.3, 4.0, 1.5, 2.0], dtype=torch.float64, requires_grad=True)
    gx, gy = torch.autograd.grad(sp.xlogy(x, y).sum(), (x, y))
    xn, yn = x.detach().numpy(), y.detach().numpy()
    np.testing.assert_allclose(gx.numpy(), np.log(yn), rtol=1e-14)
    np.testing.assert_allclose(gy.numpy(), xn / yn, rtol=1e-14)
    assert torch.autograd.gradcheck(sp.xlogy, (x[:3], y[:3]))


def test_torch_log1mexp_gradient_has_no_nan():
    torch = pytest.importorskip("torch")
    for dtype in (torch.float64, torch.float32):
        x = torch.tensor([0.0, 1e-10, LN2, 50.0, 200.0, float("inf")], dtype=dtype,
                         requires_grad=True)
        (grad,) = torch.autograd.grad(sp.log1mexp(x).sum(), x)
        assert not torch.isnan(grad).any(), grad
        assert grad[0] == float("inf") and grad[-1] == 0.0


@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


@pytest.mark.parametrize("name", FUNCTIONS)
def test_jax_grad_under_jit(jax, name):
    jnp = jax.numpy
    fn = getattr(sp, name)
    x = jnp.asarray(GRAD_POINTS[name], dtype=jnp.float64)
    grad = jax.jit(jax.vmap(jax.grad(fn)))(x)
    np.testing.assert_allclose(np.asarray(grad), DERIVATIVE[name](np.asarray(GRAD_POINTS[name])),
                               rtol=GRAD_RTOL)
    # jit + vmap of the value itself
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(fn))(x)),
                               REFERENCE[name](np.asarray(GRAD_POINTS[name])), rtol=1e-12)


def test_jax_xlogy_grad_under_jit(jax):
    jnp = jax.numpy
    x = jnp.asarray([0.5, 2.0, -1.0, 0.0])
    y = jnp.asarray([0.3, 4.0, 1.5, 2.0])
    gx, gy = jax.jit(jax.grad(lambda a, b: sp.xlogy(a, b).sum(), argnums=(0, 1)))(x, y)
    np.testing.assert_allclose(np.asarray(gx), np.log(np.asarray(y)), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(gy), np.asarray(x) / np.asarray(y), rtol=1e-14)


def test_jax_log1mexp_gradient_has_no_nan(jax):
    jnp = jax.numpy
    grad = jax.jit(jax.vmap(jax.grad(sp.log1mexp)))
    for dtype in (jnp.float64, jnp.float32):
        g = np.asarray(grad(jnp.asarray([0.0, 1e-10, LN2, 50.0, 200.0, jnp.inf], dtype=dtype)))
        assert not np.isnan(g).any(), g
        assert g[0] == np.inf and g[-1] == 0.0
        points = np.asarray([1e-10, LN2, 50.0, 200.0], dtype=dtype).astype(np.float64)
        np.testing.assert_allclose(g[1:5], 1.0 / np.expm1(points), rtol=1e-5,
                                   atol=float(np.finfo(dtype).smallest_normal))
