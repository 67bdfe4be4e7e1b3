"""Tests for ``mixedarray.projections``: sparsemax, entmax15, entmax, softmax and their derivatives.

Reference values are computed here, in NumPy float64, straight from the formulas of
paper-notes §5 (a sort-based sparsemax, the exact sort-based 1.5-entmax, a bisection for general
α, ``scipy.special.softmax``), and are cross-checked against the published ``entmax`` package on
torch tensors.  The fast paths (the Numba kernels behind NumPy and torch CPU arrays, the Newton
``while_loop`` behind JAX) are held to the standard-API sort reference ``projections.reference``:
same support, values to float rounding.  Derivatives are checked against central finite
differences of the forward maps.

JAX compiles once per input shape, so the tests reuse a few shapes and Hypothesis draws fewer
examples on JAX than on the other backends.
"""

from __future__ import annotations

import array_api_compat
import array_api_compat.numpy as anp
import numpy as np
import pytest
import scipy.special
from helpers import allow_host_transfers, from_numpy, library_of, to_numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mixedarray import _backend
from mixedarray import projections as P
from mixedarray._native import cpu_threshold

# ---------------------------------------------------------------------------------------------
# Independent NumPy float64 references (rows on the last axis)


def _finite_rows(z, row_fn, alpha):
    """``row_fn(x, alpha)`` on the finite entries of each row, shifted by the row max; 0 at -inf."""
    out = np.zeros_like(z)
    for i in range(z.shape[0]):
        finite = np.isfinite(z[i])
        out[i, finite] = row_fn(z[i, finite] - z[i, finite].max(), alpha[i])
    return out


def _sparsemax_row(x, _alpha):
    s = np.sort(x)[::-1]
    c = np.cumsum(s)
    k = np.arange(1, s.size + 1)
    k_star = np.count_nonzero(1 + k * s > c)
    return np.maximum(x - (c[k_star - 1] - 1) / k_star, 0.0)


def _entmax15_row(x, _alpha):
    x = x / 2
    s = np.sort(x[x > -1])[::-1]  # τ >= max x - 1 = -1: nothing at or below -1 is in the support
    k = np.arange(1, s.size + 1)
    mean = np.cumsum(s) / k
    deviation = s[None, :] - mean[:, None]  # S_k = Σ_{j<=k} (x_(j) - M_k)², summed directly
    spread = np.sum(np.where(np.tri(s.size, dtype=bool), deviation * deviation, 0.0), axis=1)
    tau_k = mean - np.sqrt(np.maximum(0.0, (1 - spread) / k))
    k_star = np.count_nonzero(tau_k <= s)
    return np.maximum(x - tau_k[k_star - 1], 0.0) ** 2


def _bisection_row(x, alpha):
    x = (alpha - 1) * x
    power = 1 / (alpha - 1)
    low, high = -1.0, 0.0
    for _ in range(100):
        mid = (low + high) / 2
        if np.sum(np.maximum(x - mid, 0.0) ** power) >= 1:
            low = mid
        else:
            high = mid
    y = np.maximum(x - low, 0.0) ** power
    return y / y.sum()


ROW_REFERENCES = {
    "sparsemax": lambda z, alpha: _finite_rows(z, _sparsemax_row, alpha),
    "entmax15": lambda z, alpha: _finite_rows(z, _entmax15_row, alpha),
    "entmax": lambda z, alpha: _finite_rows(z, _bisection_row, alpha),
    "softmax": lambda z, alpha: scipy.special.softmax(z, axis=-1),
}
ALPHA_OF = {"sparsemax": 2.0, "entmax15": 1.5, "softmax": 1.0}


def _row_shape(shape, axis):
    shape = list(shape)
    shape[axis] = 1
    return tuple(shape)


def expected(name, z, axis=-1, alpha=None):
    """float64 ``name`` of the NumPy array ``z`` along ``axis``; ``alpha`` a float or an array."""
    alpha = np.broadcast_to(np.asarray(ALPHA_OF.get(name, alpha), dtype=float),
                            _row_shape(z.shape, axis))
    z, alpha = np.moveaxis(np.asarray(z, dtype=float), axis, -1), np.moveaxis(alpha, axis, -1)
    rows = z.reshape(-1, z.shape[-1])
    y = ROW_REFERENCES[name](rows, np.broadcast_to(alpha, (*z.shape[:-1], 1)).reshape(-1))
    return np.moveaxis(y.reshape(z.shape), -1, axis)


def test_numpy_references_agree_with_each_other():
    """The references are consistent: bisection at α = 2 and α = 3/2 = the closed forms."""
    z = np.random.default_rng(11).normal(size=(20, 64)) * 2
    np.testing.assert_allclose(expected("entmax", z, alpha=2.0), expected("sparsemax", z),
                               rtol=0, atol=1e-13)
    np.testing.assert_allclose(expected("entmax", z, alpha=1.5), expected("entmax15", z),
                               rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# The functions under test

SPECS = [("sparsemax", None), ("entmax15", None), ("entmax", 1.25), ("entmax", 3.0),
         ("softmax", None)]
SPEC_IDS = ["sparsemax", "entmax15", "entmax-1.25", "entmax-3", "softmax"]
SPARSE = pytest.mark.parametrize("name", ["sparsemax", "entmax15"])  # maps with a fast path


def forward(name, z, alpha=None, axis=-1, **kwargs):
    if name == "entmax":
        return P.entmax(z, alpha, axis, **kwargs)
    return getattr(P, name)(z, axis=axis, **kwargs)


def tangent(name, kind, y, v, alpha=None, axis=-1):
    """The public JVP (``kind='jvp'``) or VJP of ``name`` at the output ``y``."""
    if name == "entmax":
        return getattr(P, f"entmax_{kind}")(y, v, alpha, axis)
    return getattr(P, f"{name}_{kind}")(y, v, axis)


def _without_alpha(function):
    return lambda y, v, alpha, axis: function(y, v, axis)


# Every public derivative function: the forward map it belongs to, and a call on (y, v, α, axis).
DERIVATIVES = {
    **{f"{name}_{kind}": (name, _without_alpha(getattr(P, f"{name}_{kind}")))
       for name in ("sparsemax", "entmax15", "softmax") for kind in ("jvp", "vjp")},
    "entmax_jvp": ("entmax", P.entmax_jvp),
    "entmax_vjp": ("entmax", P.entmax_vjp),
    "entmax_alpha_jvp": ("entmax", lambda y, v, a, axis: P.entmax_alpha_jvp(y, a, axis)),
}

# Absolute tolerances on values in [0, 1]: float16/bfloat16 are a float32 result rounded once.
TOL = {"float64": 1e-12, "float32": 1e-6, "float16": 2.0**-10, "bfloat16": 2.0**-7}
BISECTION_TOL = {"float64": 1e-10, "float32": 2e-6}
DEFAULT_FLOAT = {"numpy": "float64", "array_api_strict": "float64", "jax": "float64",
                 "cupy": "float64"}


def _value_tol(name, alpha, dtype_name="float64"):
    """Tolerance on forward values.  Bisection leaves τ within rounding (eps), which moves
    y = (x - τ)^(1/(α-1)) by up to eps^(1/(α-1)) near the threshold when α > 2."""
    if name != "entmax":
        return TOL[dtype_name]
    tol = BISECTION_TOL[dtype_name]
    return max(tol, 10 * float(np.finfo(dtype_name).eps) ** (1 / (alpha - 1))) if alpha > 2 else tol


def _dtype(backend, name):
    dtype = getattr(backend[0], name, None)
    if dtype is None:
        pytest.skip(f"{library_of(backend)} has no {name}")
    return dtype


def _default_float(backend):
    if library_of(backend) == "torch":
        import torch

        return torch.get_default_dtype()
    return getattr(backend[0], DEFAULT_FLOAT[library_of(backend)])


def _f64(x):
    return to_numpy(x).astype(np.float64)


def _assert_native(out, like, backend, dtype):
    """``out`` is an array of ``like``'s type on the backend's device, with ``dtype``."""
    assert type(out) is type(like), (type(out), type(like))
    assert array_api_compat.device(out) == backend[1]
    assert out.dtype == dtype, (out.dtype, dtype)


def _scores(seed, shape, scale=1.0):
    return np.random.default_rng(seed).normal(size=shape) * scale


# ---------------------------------------------------------------------------------------------
# 1. Library, device, dtype; the caller's arrays are not mutated

LOW_PRECISION = ("float16", "bfloat16")
DTYPES = pytest.mark.parametrize("dtype_name", ["float32", "float64", *LOW_PRECISION])


@DTYPES
@pytest.mark.parametrize(("name", "alpha"), SPECS, ids=SPEC_IDS)
def test_forward_keeps_library_device_dtype(backend, name, alpha, dtype_name):
    dtype = _dtype(backend, dtype_name)
    z = from_numpy(backend, _scores(0, (2, 3, 5), 2.0), dtype)
    before = to_numpy(z).copy()
    y = forward(name, z, alpha)
    _assert_native(y, z, backend, dtype)
    np.testing.assert_array_equal(to_numpy(z), before)
    if dtype_name in LOW_PRECISION:  # computed in float32 and rounded once
        y32 = forward(name, from_numpy(backend, before.astype(np.float32), "float32"), alpha)
        np.testing.assert_allclose(_f64(y), _f64(y32), rtol=0, atol=TOL[dtype_name])
    else:
        np.testing.assert_allclose(_f64(y), expected(name, before.astype(float), alpha=alpha),
                                   rtol=0, atol=_value_tol(name, alpha, dtype_name))


@pytest.mark.parametrize(("name", "alpha"), SPECS, ids=SPEC_IDS)
def test_forward_integer_input_gives_default_float(backend, name, alpha):
    z_np = np.array([[3, 1, 0, -2], [0, 0, 0, 0], [7, 7, -1, 2]])
    z = from_numpy(backend, z_np, "int32")
    y = forward(name, z, alpha)
    default = _default_float(backend)
    _assert_native(y, z, backend, default)
    np.testing.assert_array_equal(to_numpy(z), z_np)
    dtype_name = "float64" if default == backend[0].float64 else "float32"
    np.testing.assert_allclose(_f64(y), expected(name, z_np, alpha=alpha), rtol=0,
                               atol=_value_tol(name, alpha, dtype_name))


@DTYPES
@pytest.mark.parametrize("function", list(DERIVATIVES))
def test_derivative_keeps_library_device_dtype(backend, function, dtype_name):
    dtype = _dtype(backend, dtype_name)
    name, fn = DERIVATIVES[function]
    alpha = 1.75 if name == "entmax" else None
    y = forward(name, from_numpy(backend, _scores(0, (2, 3, 5), 2.0), dtype), alpha)
    v = from_numpy(backend, _scores(1, (2, 3, 5)), dtype)
    saved = to_numpy(y).copy(), to_numpy(v).copy()
    out = fn(y, v, alpha, -1)
    _assert_native(out, y, backend, dtype)
    np.testing.assert_array_equal(to_numpy(y), saved[0])
    np.testing.assert_array_equal(to_numpy(v), saved[1])
    # float16/bfloat16 against float32, float32/float64 against float64, at the same (rounded)
    # inputs; derivatives are computed in the input dtype: allow a few roundings.
    wide = "float32" if dtype_name in LOW_PRECISION else "float64"
    reference = _f64(fn(*(from_numpy(backend, a.astype(wide), wide) for a in saved), alpha, -1))
    np.testing.assert_allclose(_f64(out), reference, rtol=0,
                               atol=8 * TOL[dtype_name] * (1 + np.abs(reference).max()))


@pytest.mark.parametrize("function", list(DERIVATIVES))
def test_derivative_integer_input_gives_default_float(backend, function):
    name, fn = DERIVATIVES[function]
    y_np, v_np = np.array([[1, 0, 0], [0, 1, 0]]), np.array([[1, 2, 3], [4, -5, 6]])
    y, v = from_numpy(backend, y_np, "int32"), from_numpy(backend, v_np, "int32")
    out = fn(y, v, 1.75 if name == "entmax" else None, -1)
    _assert_native(out, y, backend, _default_float(backend))
    np.testing.assert_array_equal(to_numpy(y), y_np)
    np.testing.assert_array_equal(_f64(out), np.zeros((2, 3)))  # every derivative is 0 at a vertex


# ---------------------------------------------------------------------------------------------
# 2. Values against the NumPy references and the published entmax package


def _layouts():
    """(shape, axis) with the K scores on ``axis``: every axis for K = 5, both ends otherwise."""
    for k in (1, 2, 5, 64):
        for rest in ((), (3,), (2, 3)):
            ndim = len(rest) + 1
            for axis in range(-ndim, ndim) if k == 5 else sorted({0, -1}):
                shape = list(rest)
                shape.insert(axis % ndim, k)
                yield pytest.param(tuple(shape), axis, id=f"{tuple(shape)}-axis{axis}")


@pytest.mark.parametrize(("shape", "axis"), list(_layouts()))
@pytest.mark.parametrize(("name", "alpha"), SPECS, ids=SPEC_IDS)
def test_forward_matches_numpy_reference(backend, name, alpha, shape, axis):
    z_np = _scores(sum(shape) + axis, shape, 1.5)
    y = _f64(forward(name, from_numpy(backend, z_np), alpha, axis))
    ref = expected(name, z_np, axis, alpha)
    np.testing.assert_allclose(y, ref, rtol=0, atol=_value_tol(name, alpha))
    if name != "softmax":
        np.testing.assert_array_equal(y > 0, ref > 0)


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize(("name", "alpha"), SPECS, ids=SPEC_IDS)
def test_single_entry_gives_exactly_one(backend, name, alpha, dtype_name):
    z_np = np.array([[0.1], [1e3 + 0.1], [-7.3], [123.456], [-np.pi]])
    for axis, z in ((-1, z_np), (0, z_np.T)):
        y = to_numpy(forward(name, from_numpy(backend, z, dtype_name), alpha, axis))
        np.testing.assert_array_equal(y, np.ones_like(z))


def _alpha_forms(shape, axis):
    """Per-row α arrays for ``z`` of ``shape``, in the broadcastable forms entmax accepts."""
    values = np.random.default_rng(7).choice([1.25, 1.5, 2.0, 3.0], size=_row_shape(shape, axis))
    forms = {"full": values, "ones": np.full((1,) * len(shape), 2.5), "0d": np.array(1.25)}
    if len(shape) > 1:
        forms["trimmed"] = values[0]  # leading dimension dropped: shared along it
    if len(shape) > 1 and axis % len(shape) != 0:
        forms["bcast-row"] = values[:1]
    return forms


ALPHA_CASES = [
    pytest.param(shape, axis, form, id=f"{shape}-axis{axis}-{form}")
    for shape, axis in [((3, 5), -1), ((2, 3, 64), -1), ((5, 3), 0), ((2, 5, 3), 1),
                        ((2, 5, 3), -2)]
    for form in _alpha_forms(shape, axis)
]


@pytest.mark.parametrize(("shape", "axis", "form"), ALPHA_CASES)
def test_entmax_per_row_alpha_matches_bisection(backend, shape, axis, form):
    alpha_np = _alpha_forms(shape, axis)[form]
    z_np = _scores(3, shape, 2.0)
    y = P.entmax(from_numpy(backend, z_np), from_numpy(backend, alpha_np), axis)
    np.testing.assert_allclose(_f64(y), expected("entmax", z_np, axis, alpha_np), rtol=0,
                               atol=_value_tol("entmax", alpha_np.max()))


@pytest.mark.parametrize("alpha", [1.25, 1.5, 2.0, 3.0])
@pytest.mark.parametrize(("shape", "axis"), [((64,), 0), ((5, 3), 0), ((2, 3, 5), -1)])
def test_entmax_float_alpha_matches_bisection(backend, alpha, shape, axis):
    z_np = _scores(5, shape, 2.0)
    y = _f64(P.entmax(from_numpy(backend, z_np), alpha, axis))
    np.testing.assert_allclose(y, expected("entmax", z_np, axis, alpha), rtol=0,
                               atol=_value_tol("entmax", alpha))


@allow_host_transfers()  # the peer's values, read on the host
def _published(name, z_np, axis, alpha):
    entmax_package = pytest.importorskip("entmax")
    import torch

    z = torch.from_numpy(np.ascontiguousarray(z_np))
    if name == "softmax":
        return torch.softmax(z, dim=axis).numpy()
    if name != "entmax":
        return getattr(entmax_package, name)(z, dim=axis).numpy()
    if isinstance(alpha, np.ndarray):
        alpha = torch.from_numpy(np.ascontiguousarray(alpha))
    return entmax_package.entmax_bisect(z, alpha, dim=axis, n_iter=60).numpy()


@pytest.mark.parametrize(("shape", "axis"), [((1,), 0), ((2,), -1), ((3, 5), -1), ((5, 3), 0),
                                             ((2, 64, 3), 1), ((2, 3, 64), -1)])
@pytest.mark.parametrize(("name", "alpha"),
                         [*SPECS, ("entmax", 1.5), ("entmax", 2.0), ("entmax", "rows")],
                         ids=[*SPEC_IDS, "entmax-1.5", "entmax-2", "entmax-rows"])
def test_forward_matches_published_entmax(backend, name, alpha, shape, axis):
    z_np = _scores(13, shape, 2.0)
    alpha_arg = alpha
    if alpha == "rows":
        alpha = _alpha_forms(shape, axis)["full"]
        alpha_arg = from_numpy(backend, alpha)
    y = _f64(forward(name, from_numpy(backend, z_np), alpha_arg, axis))
    tol = _value_tol(name, np.max(alpha) if name == "entmax" else None)
    np.testing.assert_allclose(y, _published(name, z_np, axis, alpha), rtol=0, atol=tol)


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize(("shape", "axis"), [((1,), -1), ((3, 5), -1), ((2, 64, 3), 1)])
def test_closed_forms_equal_bisection(backend, shape, axis, dtype_name):
    z = from_numpy(backend, _scores(17, shape, 3.0), dtype_name)
    for name, alpha in (("sparsemax", 2.0), ("entmax15", 1.5)):
        np.testing.assert_allclose(_f64(forward(name, z, axis=axis)),
                                   _f64(P.entmax(z, alpha, axis)), rtol=0,
                                   atol=BISECTION_TOL[dtype_name], err_msg=name)


# ---------------------------------------------------------------------------------------------
# 3. Fast paths = the standard-API sort reference (same support, values to rounding)

FAST_TOL = {"float64": 1e-12, "float32": 1e-6}


def _fast_path_inputs():
    """Hard inputs, one array per K (rows in multiples of 3, see _in_chunks).  Every group has
    rows at scales 1e-3, 1 and 1e3 and rows offset by 1e6 (a huge common score)."""
    rng = np.random.default_rng(19)
    cases = {k: [rng.normal(size=(3, k)) * scale for scale in (1e-3, 1, 1e3)]
             + [rng.normal(size=(3, k)) + 1e6] for k in (1, 2, 5, 64)}
    # entries exactly at the threshold: sparsemax (rows 0-2), 1.5-entmax (rows 3-5), -inf padded
    ties = np.full((6, 5), -np.inf)
    ties[:, :3] = [[1, 0, 0], [1, 1, 0], [2, 1, 1], [2, 0, 0], [3, 1, 1], [4, 2, 2]]
    cases[5].append(ties)
    cases[5].append(rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=(6, 5)))  # ties
    cases[64].append(rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=(6, 64)))
    cases[64].append(rng.choice([999.0, 1000.0, 1000.5], size=(6, 64)))  # ties, large scale
    masked = rng.normal(size=(6, 64)) * 2
    masked[rng.random(masked.shape) < 0.5] = -np.inf
    masked[:, 3] = rng.normal(size=6)
    masked[0, :] = -np.inf
    masked[0, 10] = 4.0  # a single finite entry
    cases[64].append(masked)
    return {f"K{k}": np.concatenate(rows) for k, rows in cases.items()}


def _in_chunks(f, z_np, rows=3):
    """``f`` applied to ``z_np`` three rows at a time, as NumPy: JAX compiles once per input
    shape, and (3, K) is the shape the other tests already compiled."""
    return np.concatenate([to_numpy(f(z_np[i:i + rows])) for i in range(0, len(z_np), rows)])


FAST_PATH_INPUTS = _fast_path_inputs()


def _assert_same_as_sort_reference(name, y, z_np, dtype):
    """``y`` (any library) equals ``projections.reference`` on NumPy: same support, close values.

    Values are held to the float64 reference at the same (rounded) input.
    """
    z_np = z_np.astype(dtype)
    ref = to_numpy(P.reference(name, anp, z_np))
    y = to_numpy(y)
    assert y.dtype == ref.dtype
    np.testing.assert_array_equal(y > 0, ref > 0, err_msg=f"{name}: support differs")
    exact = to_numpy(P.reference(name, anp, z_np.astype(np.float64)))
    np.testing.assert_allclose(y, exact, rtol=0, atol=FAST_TOL[np.dtype(dtype).name])


# The CPU backends with a fast path (array-api-strict runs the sort reference itself).
FAST_BACKENDS = pytest.mark.parametrize("cpu_backend", ["numpy", "torch", "jax"], indirect=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(FAST_PATH_INPUTS))
@SPARSE
@FAST_BACKENDS
def test_fast_path_matches_sort_reference(cpu_backend, name, case, dtype):
    z_np = FAST_PATH_INPUTS[case]
    y = _in_chunks(lambda z: forward(name, from_numpy(cpu_backend, z, dtype)), z_np)
    _assert_same_as_sort_reference(name, y, z_np, dtype)


def _numba(name, z_np):
    if not cpu_threshold.available():
        pytest.skip("numba is not installed")
    return cpu_threshold.project(name, z_np)


SOLVERS = {
    "numba": _numba,
    "newton": lambda name, z_np: P.threshold_newton(anp, name, z_np, _backend.eager_while_loop),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(FAST_PATH_INPUTS))
@SPARSE
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_sort_free_solvers_match_sort_reference(solver, name, case, dtype):
    z_np = FAST_PATH_INPUTS[case].astype(dtype)
    _assert_same_as_sort_reference(name, SOLVERS[solver](name, z_np), z_np, dtype)


ENTMAX15_FACE_TIE = [0, 0, 1, .5, 1, -.5, -1, 0, -.5, -.5, .5, 0, .5, 1, -.5, .5]


def _uses_sort_reference(backend, name):
    """Whether ``name`` on this backend runs ``projections.reference`` (no fast path)."""
    library = library_of(backend)
    if library == "numpy":
        return _backend.lookup_rule("numpy", name) is None
    if library == "torch":
        return not (cpu_threshold.available() and backend[1].type == "cpu")
    return library != "jax"


# Scores with entries exactly at the threshold (τ = 0).  Rounding used to leave mass ~1e-32 on
# them: the sort reference on the vertex rows, the Numba/Newton solvers on the face row.
TIE_CASES = {
    "sparsemax-vertex-float64": ("sparsemax", [1.0, 0, 0, 0, 0], "float64"),
    "sparsemax-vertex-float32": ("sparsemax", [1.0, 0, 0, 0, 0], "float32"),
    "entmax15-vertex-float64": ("entmax15", [2.0, 0, 0, 0, 0], "float64"),
    "entmax15-vertex-float32": ("entmax15", [2.0, 0, 0, 0, 0], "float32"),
    "entmax15-vertex-K23-float32": ("entmax15", [2.0] + [0] * 22, "float32"),
    "entmax15-face-float64": ("entmax15", ENTMAX15_FACE_TIE, "float64"),
    "entmax15-face-float32": ("entmax15", ENTMAX15_FACE_TIE, "float32"),
}


@pytest.mark.parametrize("case", list(TIE_CASES))
def test_exact_threshold_ties_give_exact_zeros(backend, case):
    """y = [x - τ]_+^p where τ equals some scores exactly: those entries are exactly 0."""
    name, scores, dtype_name = TIE_CASES[case]
    z_np = np.array([scores])
    # Built with τ = 0 exactly: y is the positive part of z (sparsemax) or (z/2)_+² (1.5-entmax)
    exact = np.maximum(z_np, 0) if name == "sparsemax" else np.maximum(z_np / 2, 0) ** 2
    assert exact.sum() == 1
    y = to_numpy(forward(name, from_numpy(backend, z_np, dtype_name)))
    np.testing.assert_array_equal(y > 0, exact > 0)
    np.testing.assert_allclose(y, exact, rtol=0, atol=TOL[dtype_name])


@pytest.mark.parametrize(("k", "top"), [(64, 1.84), (1024, 1.94)])
def test_entmax15_float32_accuracy(backend, k, top):
    z_np = np.zeros((1, k), dtype=np.float32)
    z_np[0, 0] = top  # one large score, k - 1 small ones just inside the support
    exact = expected("entmax15", z_np.astype(float))
    assert np.count_nonzero(exact) == k
    y = _f64(P.entmax15(from_numpy(backend, z_np, "float32")))
    np.testing.assert_allclose(y, exact, rtol=0, atol=1e-6)
    # A float32 τ is rounded by ~eps·|τ| ≈ 1e-7 and Σy moves by 2·Σ(x − τ)·δτ (≈ 16·δτ at
    # k = 1024): a computation done in float32 throughout can be off by a few 1e-6 here.
    np.testing.assert_allclose(y.sum(), 1.0, rtol=0, atol=5e-6)


# ---------------------------------------------------------------------------------------------
# 4. Properties (Hypothesis; seeded; fewer examples on JAX, which compiles each new shape)

EXAMPLES = {"jax": 3}
DEFAULT_EXAMPLES = 25
TIE_VALUES = [-1.0, -0.5, 0.0, 0.25, 1.0, 2.0]


def check_property(backend, check, **strategies):
    """Run ``check(**drawn)`` over Hypothesis examples of ``strategies``."""
    examples = EXAMPLES.get(library_of(backend), DEFAULT_EXAMPLES)
    settings(max_examples=examples, derandomize=True, deadline=None, database=None,
             suppress_health_check=list(HealthCheck))(given(**strategies)(check))()


@st.composite
def score_arrays(draw, max_k=64):
    """float64 scores of shape (rows, K): K up to 64, |z| up to 1e3, ties, -inf masks."""
    rows, k = draw(st.integers(1, 3)), draw(st.integers(1, max_k))
    tied = draw(st.booleans())
    elements = st.sampled_from(TIE_VALUES) if tied else st.floats(-1, 1, allow_subnormal=False)
    z = draw(hnp.arrays(np.float64, (rows, k), elements=elements))
    z = z * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    if draw(st.booleans()):
        mask = draw(hnp.arrays(np.bool_, (rows, k)))
        mask[:, draw(st.integers(0, k - 1))] = False  # at least one finite entry per row
        z[mask] = -np.inf
    return z


@pytest.mark.parametrize(("name", "alpha"), SPECS, ids=SPEC_IDS)
def test_property_output_on_simplex(cpu_backend, name, alpha):
    """y >= 0, Σy = 1 to the dtype's precision, y = 0 exactly at -inf, in every dtype."""
    available = [d for d in ("float64", "float32", *LOW_PRECISION) if hasattr(cpu_backend[0], d)]

    def check(z_np, dtype_name):
        z = from_numpy(cpu_backend, z_np, dtype_name)
        y = forward(name, z, alpha)
        assert y.dtype == getattr(cpu_backend[0], dtype_name)
        y, z_np = _f64(y), _f64(z)
        assert np.all(y >= 0)
        np.testing.assert_allclose(y.sum(-1), 1.0, rtol=0, atol=max(4 * TOL[dtype_name], 1e-10))
        assert np.all(y[np.isneginf(z_np)] == 0)

    check_property(cpu_backend, check, z_np=score_arrays(), dtype_name=st.sampled_from(available))


@pytest.mark.parametrize(("name", "alpha"), SPECS, ids=SPEC_IDS)
def test_property_shift_invariant_and_permutation_equivariant(cpu_backend, name, alpha):
    def check(z_np, shift, seed):
        perm = np.random.default_rng(seed).permutation(z_np.shape[-1])
        batch = np.stack([z_np, z_np + shift, z_np[:, perm]])  # one call: the maps are row-wise
        y, shifted, permuted = _f64(forward(name, from_numpy(cpu_backend, batch), alpha))
        # z + c is rounded in float64: outputs may move by a few ulps of max|z + c|.
        scale = 1 + abs(shift) + np.abs(z_np[np.isfinite(z_np)]).max()
        tol = _value_tol(name, alpha)
        np.testing.assert_allclose(shifted, y, rtol=0, atol=max(1e-13 * scale, tol))
        np.testing.assert_allclose(permuted, y[:, perm], rtol=0, atol=tol)

    check_property(cpu_backend, check, z_np=score_arrays(), shift=st.floats(-1e3, 1e3),
                   seed=st.integers(0, 2**32 - 1))


@SPARSE
@FAST_BACKENDS
def test_property_fast_path_matches_sort_reference(cpu_backend, name):
    def check(z_np, dtype):
        y = forward(name, from_numpy(cpu_backend, z_np, dtype))
        _assert_same_as_sort_reference(name, y, z_np, dtype)
        if library_of(cpu_backend) == "numpy" and cpu_threshold.available():  # the kernel itself
            _assert_same_as_sort_reference(name, cpu_threshold.project(name, z_np.astype(dtype)),
                                           z_np, dtype)

    check_property(cpu_backend, check, z_np=score_arrays(),
                   dtype=st.sampled_from(["float32", "float64"]))


@pytest.mark.parametrize(("name", "power"), [("sparsemax", 1), ("entmax15", 2)])
def test_property_kkt_conditions(cpu_backend, name, power):
    """y = [x - τ]_+^p with one τ per row: x_i - y_i^(1/p) = τ on the support, x_i <= τ off it
    (sparsemax: x = z, p = 1; 1.5-entmax: x = z/2, p = 2)."""

    def check(z_np):
        y = _f64(forward(name, from_numpy(cpu_backend, z_np)))
        x = z_np / power
        tol = 1e-12 * (1 + np.abs(x[np.isfinite(x)]).max())
        for x_row, y_row in zip(x, y, strict=True):
            support = y_row > 0
            taus = x_row[support] - y_row[support] ** (1 / power)
            assert taus.max() - taus.min() <= tol
            assert np.all(x_row[~support] <= taus.mean() + tol)
        np.testing.assert_allclose(y.sum(-1), 1.0, rtol=0, atol=1e-12)

    check_property(cpu_backend, check, z_np=score_arrays())


def test_property_sparsemax_idempotent_on_simplex(cpu_backend):
    """sparsemax(y) = y exactly for dyadic points y of the simplex (their sums are exact, and
    every zero of y sits exactly at the threshold τ = 0, so the support must not grow)."""

    def check(counts, dtype):
        total = 2 ** int(np.ceil(np.log2(counts.sum(-1).max() + 1)))
        counts[:, 0] += total - counts.sum(-1)
        y_np = (counts / total).astype(dtype)
        y = to_numpy(P.sparsemax(from_numpy(cpu_backend, y_np, dtype)))
        np.testing.assert_array_equal(y, y_np)

    check_property(cpu_backend, check,
                   counts=hnp.arrays(np.int64, st.tuples(st.integers(1, 3), st.integers(1, 64)),
                                     elements=st.sampled_from([0, 0, 0, 1, 2, 5, 100])),
                   dtype=st.sampled_from(["float32", "float64"]))


# ---------------------------------------------------------------------------------------------
# 5. Derivatives against central finite differences (float64)

FD_EPS = 1e-6
FD_LAYOUTS = [((3, 5), -1), ((5, 3), 0), ((2, 5, 3), 1), ((2, 3, 5), -1)]


def _threshold_gaps(z, y, axis, alpha):
    """|x_i - τ| for every entry, x = (α - 1) z, from the reference output ``y``."""
    a = np.moveaxis(np.broadcast_to(np.asarray(alpha, dtype=float), _row_shape(z.shape, axis)),
                    axis, -1)
    x, y = np.moveaxis(z, axis, -1) * (a - 1), np.moveaxis(y, axis, -1)
    top = np.argmax(y, axis=-1)[..., None]  # on the support x - τ = y^(α-1)
    tau = np.take_along_axis(x, top, -1) - np.take_along_axis(y, top, -1) ** (a - 1)
    return np.abs(x - tau)


def _well_conditioned(name, shape, axis, alpha, gap=1e-3):
    """Scores with every entry at least ``gap`` from the threshold, and some outside the support
    (so no kink lies within the finite-difference step)."""
    rng = np.random.default_rng(23)
    for _ in range(1000):
        z = rng.normal(size=shape) * 1.5
        if name == "softmax":
            return z
        y = expected(name, z, axis, alpha)
        if np.any(y == 0) and _threshold_gaps(z, y, axis, ALPHA_OF.get(name, alpha)).min() > gap:
            return z
    raise AssertionError("no well-conditioned scores found")


def _finite_differences(f, z_np, directions, backend):
    """Central differences of ``f`` at ``z_np`` along each of ``directions`` (same input shape
    in every call, so JAX compiles nothing new)."""
    return np.stack([(_f64(f(from_numpy(backend, z_np + FD_EPS * d)))
                      - _f64(f(from_numpy(backend, z_np - FD_EPS * d)))) / (2 * FD_EPS)
                     for d in directions])


def _basis(shape, axis):
    """The K unit directions along ``axis`` (each moves score j of every row at once)."""
    k = shape[axis]
    moved = np.moveaxis(np.zeros(shape), axis, -1)
    return np.stack([np.moveaxis(moved + np.eye(k)[j], -1, axis) for j in range(k)])


@pytest.mark.parametrize(("shape", "axis"), FD_LAYOUTS)
@pytest.mark.parametrize(("name", "alpha"), [*SPECS, ("entmax", 1.5), ("entmax", 2.0)],
                         ids=[*SPEC_IDS, "entmax-1.5", "entmax-2"])
def test_jvp_and_vjp_match_finite_differences(backend, name, alpha, shape, axis):
    z_np = _well_conditioned(name, shape, axis, alpha)
    v_np, u_np = _scores(29, shape), _scores(31, shape)
    y = forward(name, from_numpy(backend, z_np), alpha, axis)
    jvp = _f64(tangent(name, "jvp", y, from_numpy(backend, v_np), alpha, axis))
    vjp = _f64(tangent(name, "vjp", y, from_numpy(backend, u_np), alpha, axis))
    fd = _finite_differences(lambda z: forward(name, z, alpha, axis), z_np,
                             np.concatenate([v_np[None], _basis(shape, axis)]), backend)
    np.testing.assert_allclose(jvp, fd[0], rtol=0, atol=1e-7)
    # The Jacobian by finite differences, J[..., i, j] = dy_i/dz_j, and the VJP uᵀJ.
    jacobian = np.stack([np.moveaxis(column, axis, -1) for column in fd[1:]], axis=-1)
    vjp_fd = np.einsum("...i,...ij->...j", np.moveaxis(u_np, axis, -1), jacobian)
    np.testing.assert_allclose(np.moveaxis(vjp, axis, -1), vjp_fd, rtol=0, atol=1e-7)
    # u · (J v) = (Jᵀ u) · v, row by row
    np.testing.assert_allclose(np.sum(u_np * jvp, axis=axis), np.sum(vjp * v_np, axis=axis),
                               rtol=0, atol=1e-12)
    if name != "softmax":
        off_support = _f64(y) == 0
        assert np.all(jvp[off_support] == 0) and np.all(vjp[off_support] == 0)


def _alpha_finite_difference(backend, z_np, alpha_np, axis):
    """∂y/∂α by central differences (α ± ε as arrays of one α per row)."""
    full = np.broadcast_to(np.asarray(alpha_np, dtype=float), _row_shape(z_np.shape, axis))
    z = from_numpy(backend, z_np)
    plus, minus = (_f64(P.entmax(z, from_numpy(backend, full + step), axis))
                   for step in (FD_EPS, -FD_EPS))
    return (plus - minus) / (2 * FD_EPS)


@pytest.mark.parametrize(("shape", "axis", "form"), ALPHA_CASES)
def test_alpha_derivatives_match_finite_differences(backend, shape, axis, form):
    alpha_np = _alpha_forms(shape, axis)[form]
    z_np = _well_conditioned("entmax", shape, axis, alpha_np)
    alpha = from_numpy(backend, alpha_np)
    y = P.entmax(from_numpy(backend, z_np), alpha, axis)
    v_np = _scores(37, shape)
    jvp = _f64(P.entmax_jvp(y, from_numpy(backend, v_np), alpha, axis))
    fd = _finite_differences(lambda z: P.entmax(z, alpha, axis), z_np, v_np[None], backend)
    np.testing.assert_allclose(jvp, fd[0], rtol=0, atol=1e-7)
    np.testing.assert_allclose(_f64(P.entmax_alpha_jvp(y, alpha, axis)),
                               _alpha_finite_difference(backend, z_np, alpha_np, axis),
                               rtol=0, atol=1e-7)


@pytest.mark.parametrize("alpha", [1.25, 1.5, 2.0, 3.0])
@pytest.mark.parametrize(("shape", "axis"), FD_LAYOUTS)
def test_alpha_jvp_float_alpha_matches_finite_differences(backend, alpha, shape, axis):
    z_np = _well_conditioned("entmax", shape, axis, alpha)
    y = P.entmax(from_numpy(backend, z_np), alpha, axis)
    d_alpha = _f64(P.entmax_alpha_jvp(y, alpha, axis))
    np.testing.assert_allclose(d_alpha, _alpha_finite_difference(backend, z_np, alpha, axis),
                               rtol=0, atol=1e-7)
    np.testing.assert_allclose(d_alpha.sum(axis), 0.0, rtol=0, atol=1e-12)  # stays on Δ


# ---------------------------------------------------------------------------------------------
# 6. -inf, invalid values and bad arguments


@pytest.mark.parametrize(("name", "alpha"), SPECS, ids=SPEC_IDS)
def test_neg_inf_entries_give_exact_zero_and_zero_derivative(backend, name, alpha):
    z_np = _scores(41, (3, 5), 2.0)
    z_np[0, [1, 4]] = -np.inf
    z_np[1, :4] = -np.inf  # a single finite entry
    z_np[2, 0] = -np.inf
    masked = np.isneginf(z_np)
    y = forward(name, from_numpy(backend, z_np), alpha)
    assert np.all(_f64(y)[masked] == 0)
    np.testing.assert_allclose(_f64(y), expected(name, z_np, alpha=alpha), rtol=0,
                               atol=_value_tol(name, alpha))
    v = from_numpy(backend, _scores(43, z_np.shape))
    derivatives = [tangent(name, kind, y, v, alpha) for kind in ("jvp", "vjp")]
    if name == "entmax":
        derivatives.append(P.entmax_alpha_jvp(y, alpha))
    for derivative in map(_f64, derivatives):
        assert np.all(np.isfinite(derivative)) and np.all(derivative[masked] == 0)


def _all_masked_row(backend, axis):
    z_np = _scores(47, (3, 4))
    z_np[1] = -np.inf
    z_np = z_np if axis == -1 else z_np.T
    return z_np, from_numpy(backend, z_np)


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize(("name", "alpha"), SPECS, ids=SPEC_IDS)
def test_all_neg_inf_row_raises_under_default_validation(cpu_backend, name, alpha, axis):
    _, z = _all_masked_row(cpu_backend, axis)
    with pytest.raises(ValueError, match="all -inf"):
        forward(name, z, alpha, axis)


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize(("name", "alpha"), SPECS, ids=SPEC_IDS)
def test_all_neg_inf_row_unvalidated_is_uniform(backend, name, alpha, axis):
    z_np, z = _all_masked_row(backend, axis)
    y = np.moveaxis(_f64(forward(name, z, alpha, axis, validate_args=False)), axis, -1)
    rows = np.moveaxis(z_np, axis, -1)
    np.testing.assert_allclose(y[1], np.full(4, 0.25), rtol=0, atol=1e-12)
    np.testing.assert_allclose(y[[0, 2]], expected(name, rows[[0, 2]], alpha=alpha), rtol=0,
                               atol=_value_tol(name, alpha))


@pytest.mark.parametrize(("name", "alpha"), SPECS, ids=SPEC_IDS)
def test_all_neg_inf_row_under_jit_is_uniform(name, alpha):
    jax = pytest.importorskip("jax")
    z = jax.numpy.asarray([[0.5, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]])
    y = np.asarray(jax.jit(lambda z: forward(name, z, alpha))(z))
    np.testing.assert_allclose(y[1], np.full(3, 1 / 3), rtol=0, atol=1e-12)
    assert y[0, 1] == 0 and not np.any(np.isnan(y))


# validate_args=True reads the values on the host, on GPUs too: no device guard for it
VALIDATED = pytest.param(True, marks=pytest.mark.allow_host_transfers)


@pytest.mark.parametrize("validate_args", [None, VALIDATED])
@pytest.mark.parametrize(("bad", "match"), [(np.nan, "NaN"), (np.inf, r"\+inf")])
@pytest.mark.parametrize(("name", "alpha"), SPECS, ids=SPEC_IDS)
def test_nan_and_plus_inf_raise(backend, name, alpha, bad, match, validate_args):
    z_np = _scores(53, (2, 5))
    z_np[1, 2] = bad
    z = from_numpy(backend, z_np)
    if validate_args is None and not _backend.values_are_checkable(z):
        pytest.skip("values are checked by default only where that costs no device sync")
    with pytest.raises(ValueError, match=match):
        forward(name, z, alpha, validate_args=validate_args)


def _bad_argument_cases():
    z35 = np.zeros((3, 5))
    shape_cases = [
        ("axis-too-big", z35, {"axis": 2}, ValueError, "out of range"),
        ("axis-too-negative", z35, {"axis": -3}, ValueError, "out of range"),
        ("axis-float", z35, {"axis": 1.0}, TypeError, "axis must be an int"),
        ("axis-bool", z35, {"axis": True}, TypeError, "axis must be an int"),
        ("0-d", np.array(1.0), {}, ValueError, "at least one dimension"),
        ("K=0", np.zeros((3, 0)), {}, ValueError, "size 0"),
    ]
    for (name, alpha), spec_id in zip(SPECS, SPEC_IDS, strict=True):
        for label, z, kwargs, error, match in shape_cases:
            yield pytest.param(name, alpha, z, kwargs, error, match, id=f"{spec_id}-{label}")
    alpha_cases = [
        ("alpha=1", 1.0, {}, ValueError, "alpha must be > 1"),
        ("alpha=0.5", 0.5, {}, ValueError, "alpha must be > 1"),
        ("alpha-bool", True, {}, TypeError, "alpha"),
        ("alpha-array<=1", np.array([[1.5], [1.0], [2.0]]), {"validate_args": True}, ValueError,
         "alpha must be > 1"),
        ("alpha-size-along-axis", np.full((3, 5), 1.5), {}, ValueError, "size 1 along axis"),
        ("alpha-not-broadcastable", np.full((4, 1), 1.5), {}, ValueError, "broadcast"),
        ("alpha-too-many-dims", np.full((1, 3, 1), 1.5), {}, ValueError, "more dimensions"),
        ("alpha-int-array", np.full((3, 1), 2), {}, TypeError, "floating"),
        ("n_iter=0", 1.5, {"n_iter": 0}, ValueError, "n_iter"),
        ("n_iter=-1", 1.5, {"n_iter": -1}, ValueError, "n_iter"),
        ("n_iter=2.5", 1.5, {"n_iter": 2.5}, (TypeError, ValueError), "n_iter"),
        ("n_iter=True", 1.5, {"n_iter": True}, (TypeError, ValueError), "n_iter"),
    ]
    for label, alpha, kwargs, error, match in alpha_cases:
        # validate_args=True asks for a host read of alpha's values, on GPUs too
        marks = [pytest.mark.allow_host_transfers] if kwargs.get("validate_args") else []
        yield pytest.param(
            "entmax", alpha, z35, kwargs, error, match, id=f"entmax-{label}", marks=marks
        )


@pytest.mark.parametrize(("name", "alpha", "z_np", "kwargs", "error", "match"),
                         list(_bad_argument_cases()))
def test_bad_arguments_raise(backend, name, alpha, z_np, kwargs, error, match):
    z = from_numpy(backend, z_np)
    if isinstance(alpha, np.ndarray):
        alpha = from_numpy(backend, alpha)
    with pytest.raises(error, match=match):
        forward(name, z, alpha, **kwargs)


def test_entmax_alpha_array_at_most_one_raises_under_default_validation(cpu_backend):
    alpha = from_numpy(cpu_backend, np.array([[1.5], [0.5]]))
    with pytest.raises(ValueError, match="alpha must be > 1"):
        P.entmax(from_numpy(cpu_backend, np.zeros((2, 3))), alpha)


MIXED_CALLS = {
    "entmax(z, alpha)": lambda a, b: P.entmax(a, b),
    "sparsemax_jvp(y, v)": P.sparsemax_jvp,
    "entmax15_vjp(y, v)": P.entmax15_vjp,
    "entmax_jvp(y, v, alpha)": lambda a, b: P.entmax_jvp(a, a, b),
    "entmax_alpha_jvp(y, alpha)": P.entmax_alpha_jvp,
    "softmax_vjp(y, v)": P.softmax_vjp,
}


@pytest.mark.parametrize("swap", [False, True], ids=["numpy-first", "torch-first"])
@pytest.mark.parametrize("call", list(MIXED_CALLS))
def test_mixing_libraries_raises_type_error_naming_both(call, swap):
    torch = pytest.importorskip("torch")
    a, b = np.full((2, 3), 1 / 3), torch.full((2, 1), 1.5, dtype=torch.float64)
    if swap:
        a, b = torch.from_numpy(a), b.numpy()
    with pytest.raises(TypeError, match="numpy and torch"):
        MIXED_CALLS[call](a, b)


# ---------------------------------------------------------------------------------------------
# 7. Large rows


@pytest.mark.parametrize("name", ["sparsemax", "entmax15", "softmax"])
def test_large_rows_match_reference(backend, name):
    z_np = _scores(59, (4, 65536)).astype(np.float32)
    y = forward(name, from_numpy(backend, z_np, "float32"))
    _assert_same_as_sort_reference(name, y, z_np, "float32")
    if name != "softmax":
        assert 4 <= np.count_nonzero(to_numpy(y)) < z_np.size // 10  # genuinely sparse rows

