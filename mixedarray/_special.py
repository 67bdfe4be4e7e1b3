"""Special functions, dispatched to each array library's own implementation.

Every public function takes arrays of one library and returns an array of that library, on
the same device, in the input's floating dtype.  The work is done by the library's native
special functions, so that PyTorch autograd, ``jax.jit``/``jax.grad``/``jax.vmap`` and CuPy
kernels all keep working:

==================  =====================================================================
library             implementation
==================  =====================================================================
torch               ``torch.special``
jax                 ``jax.scipy.special``
cupy                ``cupyx.scipy.special``
numpy               ``scipy.special`` (the result is cast back to the input dtype)
array_api_strict    ``scipy.special`` on a zero-copy NumPy view (``numpy.from_dlpack``)
==================  =====================================================================

Two native implementations are replaced where they are inaccurate:

* ``torch.special.ndtr`` computes ``(1 + erf(x / sqrt 2)) / 2``, which cancels in the left
  tail (relative error 4e-11 at x = -5 and 100 % below x = -9 in float64; 4 % at x = -5 in
  float32).  We use ``erfc(-x / sqrt 2) / 2`` instead, as SciPy does.
* ``jax.scipy.special.log_ndtr`` loses relative accuracy in the right tail (7e-2 near x = 8 in
  float64 and near x = 4 in float32, where the value is tiny) and has a relative error of
  2e-11 around x = -20 in float64, where its asymptotic series starts.  We use
  ``log1p(-ndtr(-x))`` for x > 0, ``log(ndtr(x))`` down to where ``ndtr`` underflows, and
  JAX's asymptotic series only below that.

No framework is imported when this module is: each library is imported inside its resolver,
the first time one of its arrays arrives (and it is already imported then).  float16 and
bfloat16 inputs are computed in float32 and cast back; integer and boolean inputs are
computed in the library's default real floating dtype, which is also the result's dtype.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from functools import reduce
from types import ModuleType
from typing import Any

from ._backend import array_namespace, compute_dtype, device, is_floating, library_name

__all__ = ["digamma", "lgamma", "log1mexp", "log_ndtr", "ndtr", "ndtri", "xlogy"]

Array = Any
NativeFunction = Callable[..., Array]

_SQRT1_2 = 0.7071067811865476  # 1 / sqrt(2), rounded as SciPy's NPY_SQRT1_2
_LN2 = math.log(2.0)

# Public name -> the name SciPy, torch.special, jax.scipy.special and cupyx.scipy.special share.
_NATIVE_NAMES = {
    "lgamma": "gammaln",
    "digamma": "digamma",
    "log_ndtr": "log_ndtr",
    "ndtr": "ndtr",
    "ndtri": "ndtri",
    "xlogy": "xlogy",
}


# ---------------------------------------------------------------------------------------------
# Resolvers: public name -> a function on arrays of one library (already in the compute dtype)
# that returns an array of that library.  One per library; imported only when called.


def _resolve_torch(name: str) -> NativeFunction:
    import torch

    special = torch.special
    if name == "ndtr":
        # torch.special.ndtr is (1 + erf(x/√2))/2 and cancels in the left tail; erfc does not.
        return lambda x: 0.5 * special.erfc(-_SQRT1_2 * x)
    return getattr(special, _NATIVE_NAMES[name])


def _resolve_jax(name: str) -> NativeFunction:
    import jax
    from jax.scipy import special

    # jit: one compiled kernel per shape and dtype in eager use instead of dozens of dispatched
    # primitives; under an outer jit/grad/vmap it is simply inlined.
    if name == "log_ndtr":
        return jax.jit(lambda x: _log_ndtr_from_ndtr(x, special.ndtr, special.log_ndtr))
    return jax.jit(getattr(special, _NATIVE_NAMES[name]))


def _resolve_cupy(name: str) -> NativeFunction:
    from cupyx.scipy import special

    return getattr(special, _NATIVE_NAMES[name])


def _scipy_special(name: str) -> Callable[..., Any]:
    try:
        from scipy import special
    except ImportError as error:  # pragma: no cover - scipy is in the numpy extra
        raise ImportError(
            f"mixedarray's {name} on NumPy and array-api-strict arrays needs SciPy; "
            "install it with `pip install scipy`"
        ) from error
    return getattr(special, _NATIVE_NAMES[name])


def _resolve_numpy(name: str) -> NativeFunction:
    import numpy as np

    function = _scipy_special(name)
    # SciPy returns NumPy scalars for 0-d input; keep them 0-d arrays.
    return lambda *arrays: np.asarray(function(*arrays))


def _resolve_array_api_strict(name: str) -> NativeFunction:
    import array_api_strict
    import numpy as np

    function = _scipy_special(name)

    def call(*arrays: Array) -> Array:
        views = [np.from_dlpack(a) for a in arrays]  # zero copy on the CPU
        result = np.asarray(function(*views))
        return array_api_strict.asarray(result, device=device(arrays[0]))

    return call


_RESOLVERS: dict[str, Callable[[str], NativeFunction]] = {
    "torch": _resolve_torch,
    "jax": _resolve_jax,
    "cupy": _resolve_cupy,
    "numpy": _resolve_numpy,
    "array_api_strict": _resolve_array_api_strict,
}
_CACHE: dict[tuple[str, str], NativeFunction] = {}


def _native(library: str, name: str) -> NativeFunction:
    """The implementation of the public function ``name`` for arrays of ``library``."""
    key = (library, name)
    function = _CACHE.get(key)
    if function is None:
        resolver = _RESOLVERS.get(library)
        if resolver is None:
            supported = ", ".join(sorted(_RESOLVERS))
            raise TypeError(
                f"{name} has no implementation for {library} arrays; supported libraries: "
                f"{supported}"
            )
        function = _CACHE[key] = resolver(name)
    return function


# ---------------------------------------------------------------------------------------------
# Shared plumbing.


def _prepare(x: Array, name: str) -> tuple[ModuleType, Array, Any]:
    """``(xp, x in its compute dtype, result dtype)`` for one input argument called ``name``."""
    xp = array_namespace(x)
    dtype = x.dtype
    work = compute_dtype(xp, dtype, name=name)
    out = dtype if is_floating(xp, dtype) else work
    if dtype != work:
        x = xp.astype(x, work)
    return xp, x, out


def _finish(xp: ModuleType, result: Array, dtype: Any) -> Array:
    return result if result.dtype == dtype else xp.astype(result, dtype)


def _unary(name: str, x: Array, argument: str = "x") -> Array:
    xp, x, out = _prepare(x, argument)
    return _finish(xp, _native(library_name(x), name)(x), out)


def _quiet(library: str) -> contextlib.AbstractContextManager[Any]:
    """Silence NumPy's divide-by-zero warning for log(0) = -inf, an intended value here."""
    if library in ("numpy", "array_api_strict"):
        import numpy as np

        return np.errstate(divide="ignore")
    return contextlib.nullcontext()


def _log_ndtr_from_ndtr(
    x: Array, ndtr_: NativeFunction, tail: NativeFunction
) -> Array:
    """log Φ(x) from an accurate Φ, with ``tail`` (an asymptotic series) only where Φ underflows.

    ``log1p(-Φ(-x))`` for x > 0 (relative accuracy where log Φ(x) ≈ -Φ(-x) is tiny),
    ``log Φ(x)`` for ``lower <= x <= 0`` (Φ(x) is a normal number there) and ``tail(x)``
    below.  Every branch is evaluated at a safe stand-in where it is not selected (the
    "double where"), so gradients carry no NaN.
    """
    xp = array_namespace(x)
    lower = -37.0 if x.dtype == xp.float64 else -12.0
    right = x > 0
    left = x < lower
    middle = xp.logical_not(xp.logical_or(right, left))
    x_right = xp.where(right, x, 1.0)
    x_middle = xp.where(middle, x, -1.0)
    x_left = xp.where(left, x, lower - 1.0)
    return xp.where(
        right,
        xp.log1p(-ndtr_(-x_right)),
        xp.where(left, tail(x_left), xp.log(ndtr_(x_middle))),
    )


# ---------------------------------------------------------------------------------------------
# Public functions.


def lgamma(x: Array) -> Array:
    r"""Logarithm of the absolute value of the gamma function.

    .. math:: \operatorname{lgamma}(x) = \log\lvert\Gamma(x)\rvert,
              \qquad \Gamma(x) = \int_0^\infty t^{x-1} e^{-t}\,dt .

    Parameters
    ----------
    x : array
        Real array of any supported library.

    Returns
    -------
    array
        ``log|Γ(x)|``, same library, device and (floating) dtype as ``x``; ``+inf`` at the
        poles ``x = 0, -1, -2, ...``.

    Notes
    -----
    Near the zeros ``x = 1`` and ``x = 2`` the accuracy is absolute rather than relative for
    JAX (XLA's Lanczos approximation: absolute error about 1e-16 in float64 and 1e-7 in
    float32).  Its derivative is :func:`digamma`.
    """
    return _unary("lgamma", x)


def digamma(x: Array) -> Array:
    r"""Digamma function, the logarithmic derivative of the gamma function.

    .. math:: \psi(x) = \frac{d}{dx}\log\Gamma(x) = \frac{\Gamma'(x)}{\Gamma(x)} .

    Parameters
    ----------
    x : array
        Real array of any supported library.

    Returns
    -------
    array
        ``ψ(x)``, same library, device and (floating) dtype as ``x``.  Negative non-integers
        are computed by reflection, ``ψ(1 - x) - ψ(x) = π cot(π x)``.

    Notes
    -----
    Near its positive root ``x ≈ 1.4616`` the accuracy of the PyTorch and JAX
    implementations is absolute (about 3e-16 in float64), not relative.  At the poles
    ``x = 0, -1, -2, ...`` the libraries disagree (SciPy and PyTorch give ``-inf`` at 0,
    JAX gives NaN).
    """
    return _unary("digamma", x)


def log_ndtr(x: Array) -> Array:
    r"""Logarithm of the standard normal cumulative distribution function.

    .. math:: \log\Phi(x), \qquad
              \Phi(x) = \frac{1}{\sqrt{2\pi}}\int_{-\infty}^{x} e^{-t^2/2}\,dt
              = \tfrac12\operatorname{erfc}\!\left(-x/\sqrt2\right) .

    Accurate in both tails: in the far left tail, where ``Φ(x)`` underflows (``x = -40`` in
    float64, ``x = -20`` in float32), ``log Φ(x) ≈ -x²/2 - log(-x √(2π))`` stays finite and
    correct; in the right tail ``log Φ(x) ≈ -Φ(-x)`` keeps its relative accuracy.

    Parameters
    ----------
    x : array
        Real array of any supported library.

    Returns
    -------
    array
        ``log Φ(x)``, same library, device and (floating) dtype as ``x``.

    Notes
    -----
    The derivative is ``φ(x) / Φ(x)`` with ``φ`` the standard normal density.
    """
    return _unary("log_ndtr", x)


def ndtr(x: Array) -> Array:
    r"""Standard normal cumulative distribution function.

    .. math:: \Phi(x) = \frac{1}{\sqrt{2\pi}}\int_{-\infty}^{x} e^{-t^2/2}\,dt
              = \tfrac12\operatorname{erfc}\!\left(-x/\sqrt2\right) .

    Parameters
    ----------
    x : array
        Real array of any supported library.

    Returns
    -------
    array
        ``Φ(x)``, same library, device and (floating) dtype as ``x``; relatively accurate in
        the left tail until it underflows (use :func:`log_ndtr` beyond).
    """
    return _unary("ndtr", x)


def ndtri(p: Array) -> Array:
    r"""Inverse of the standard normal cumulative distribution function (the probit).

    .. math:: \Phi^{-1}(p) = x \quad\text{such that}\quad \Phi(x) = p,
              \qquad 0 < p < 1 .

    Parameters
    ----------
    p : array
        Real array of probabilities of any supported library.

    Returns
    -------
    array
        ``Φ⁻¹(p)``, same library, device and (floating) dtype as ``p``; ``-inf`` at 0,
        ``+inf`` at 1 and NaN outside ``[0, 1]``.

    Notes
    -----
    The derivative is ``1 / φ(Φ⁻¹(p))``.
    """
    return _unary("ndtri", p, "p")


def xlogy(x: Array | float, y: Array | float) -> Array:
    r"""``x * log(y)``, defined as 0 where ``x == 0`` (even where ``y == 0``).

    .. math:: \operatorname{xlogy}(x, y) =
              \begin{cases} 0 & x = 0,\\ x \log y & \text{otherwise.} \end{cases}

    Parameters
    ----------
    x, y : array or float
        Real arrays of one library, broadcast together; one of them may be a Python scalar.

    Returns
    -------
    array
        Same library and device as the array arguments, in the floating dtype the floating
        arguments promote to (integer and boolean arrays do not take part, as Python scalars
        do not), or the library's default floating dtype if no argument is floating.

    Notes
    -----
    The gradient with respect to ``y`` at ``x = y = 0`` is NaN in PyTorch and JAX (their
    rule is ``x / y``), and ``xlogy(0, nan)`` is NaN, as in SciPy.
    """
    xp = array_namespace(x, y)
    args = {"x": x, "y": y}
    arrays = {k: a for k, a in args.items() if not isinstance(a, (bool, int, float))}
    dtypes = {k: a.dtype for k, a in arrays.items()}
    for k, dtype in dtypes.items():
        compute_dtype(xp, dtype, name=k)  # a TypeError naming the argument if complex
    floats = [dtype for dtype in dtypes.values() if is_floating(xp, dtype)]
    if floats:
        out = reduce(xp.result_type, floats)
    else:
        out = compute_dtype(xp, next(iter(dtypes.values())))
    work = compute_dtype(xp, out)
    like = next(iter(arrays.values()))
    converted = [
        xp.full((), float(a), dtype=work, device=device(like))
        if isinstance(a, (bool, int, float))
        else (a if a.dtype == work else xp.astype(a, work))
        for a in args.values()
    ]
    return _finish(xp, _native(library_name(like), "xlogy")(*converted), out)


def log1mexp(x: Array) -> Array:
    r"""``log(1 - exp(-x))`` for ``x >= 0``, accurate for every ``x``.

    .. math:: \operatorname{log1mexp}(x) = \log\left(1 - e^{-x}\right) =
              \begin{cases}
                  \log\left(-\operatorname{expm1}(-x)\right) & 0 \le x \le \log 2,\\
                  \operatorname{log1p}\left(-e^{-x}\right) & x > \log 2,
              \end{cases}

    the split of Mächler (2012), "Accurately computing log(1 - exp(-|a|))".  Note the sign
    convention: the argument is positive.  ``log1mexp(0) = -inf``, ``log1mexp(inf) = 0`` and
    negative ``x`` (outside the domain) gives NaN.

    Parameters
    ----------
    x : array
        Real, non-negative array of any supported library.

    Returns
    -------
    array
        Same library, device and (floating) dtype as ``x``.

    Notes
    -----
    Written in array-API code with the "double where": each branch is evaluated at a safe
    stand-in where it is not selected, so the gradient ``1 / expm1(x)`` carries no NaN
    (it is ``+inf`` at 0 and 0 at ``+inf``).
    """
    xp, x, out = _prepare(x, "x")
    with _quiet(library_name(x)):
        small = x <= _LN2
        x_small = xp.where(xp.logical_and(small, x >= 0), x, _LN2)
        x_large = xp.where(small, 1.0, x)
        result = xp.where(
            small, xp.log(-xp.expm1(-x_small)), xp.log1p(-xp.exp(-x_large))
        )
        result = xp.where(x < 0, math.nan, result)
    return _finish(xp, result, out)
