r"""Sparse projections onto the probability simplex and their closed-form derivatives.

Every map here sends a score vector :math:`z \in \mathbb{R}^K` (along ``axis``) to a point of
the simplex :math:`\Delta_{K-1} = \{y \ge 0,\ \sum_k y_k = 1\}`:

* ``sparsemax(z)  = argmin_{y ∈ Δ} ||y - z||²  = [z - τ]_+``;
* ``entmax(z, α)  = argmax_{y ∈ Δ} yᵀz + H^T_α(y) = [(α-1) z - τ]_+^{1/(α-1)}`` for α > 1, with
  the Tsallis entropy ``H^T_α(y) = Σ_k (y_k - y_k^α) / (α(α-1))``; ``entmax15`` is α = 3/2,
  computed exactly, and α = 2 is sparsemax;
* ``softmax(z)    = exp(z - max z) / Σ exp(z - max z)`` (the limit α → 1).

In each case τ is the unique threshold making the output sum to one.  The functions accept
any array of the Python array API (NumPy, CuPy, PyTorch, JAX, array-api-strict), any batch
shape and any ``axis``, and return the caller's kind of array on the caller's device.  float64
stays float64; float16 and bfloat16 are computed in float32 and cast back.

Entries equal to ``-inf`` (masks) get exactly zero output and zero gradient.  A row whose
entries are all ``-inf`` has no projection; under validation (the default where values can be
read without a device sync) it raises ``ValueError``, otherwise its output is the uniform
vector, the limit of constant rows.

Derivatives are closed forms in the output ``y`` (never autograd through a sort or a loop).
With the support ``S = {k : y_k > 0}`` and ``s = y^{2-α}`` on ``S`` (0 elsewhere) the Jacobian is
``J = diag(s) - s sᵀ / Σ s``, symmetric, so the JVP and the VJP are the same map
``v ↦ s ⊙ v - s (sᵀ v) / Σ s``; sparsemax has ``s = 1_S`` and softmax ``s = y``.  PyTorch and
JAX use them through ``torch.autograd.Function`` / ``jax.custom_jvp`` rules registered by the
adapters ``mixedarray.torch`` and ``mixedarray.jax``.
"""

from __future__ import annotations

import math
from typing import Any

from mixedarray import _backend
from mixedarray._backend import array_namespace, lookup_rule

__all__ = [
    "entmax",
    "entmax15",
    "entmax15_jvp",
    "entmax15_vjp",
    "entmax_alpha_jvp",
    "entmax_jvp",
    "entmax_vjp",
    "softmax",
    "softmax_jvp",
    "softmax_vjp",
    "sparsemax",
    "sparsemax_jvp",
    "sparsemax_vjp",
]

Array = Any


# ---------------------------------------------------------------------------------------------
# Public maps


def sparsemax(z: Array, axis: int = -1, *, validate_args: bool | None = None) -> Array:
    r"""Euclidean projection onto the probability simplex.

    Solves :math:`\operatorname{argmin}_{y \in \Delta} \lVert y - z \rVert^2`, whose solution is
    :math:`y = [z - \tau]_+` with :math:`\tau = (\sum_{j \le k^*} z_{(j)} - 1)/k^*`, where
    :math:`z_{(1)} \ge z_{(2)} \ge \dots` and
    :math:`k^* = \#\{k : 1 + k z_{(k)} > \sum_{j \le k} z_{(j)}\}`.
    Equivalently :math:`\tau = \max_k (\sum_{j \le k} z_{(j)} - 1)/k`.

    Parameters
    ----------
    z : array
        Scores; any real dtype, any shape with at least one dimension.
    axis : int, default -1
        The axis holding the K scores of each row.
    validate_args : bool or None, default None
        Check that every row has a finite maximum (no NaN, no ``+inf``, not all ``-inf``).
        ``None`` checks where that costs no device sync; ``True`` always; ``False`` never.

    Returns
    -------
    array
        Same shape, dtype, library and device as ``z``; each row lies on the simplex and has
        exact zeros outside its support.

    Examples
    --------
    >>> import numpy as np, mixedarray as ma
    >>> ma.sparsemax(np.array([1.0, 0.8, -1.0]))
    array([0.6, 0.4, 0. ])
    """
    return _project("sparsemax", z, axis, None, None, validate_args)


def entmax15(z: Array, axis: int = -1, *, validate_args: bool | None = None) -> Array:
    r"""1.5-entmax, computed exactly.

    Solves :math:`\operatorname{argmax}_{y \in \Delta} y^\top z + H^T_{3/2}(y)`, whose solution is
    :math:`y = [z/2 - \tau]_+^2`.  With :math:`x = z/2` sorted in decreasing order, for each k let
    :math:`M_k` be the mean of :math:`x_{(1..k)}`, :math:`S_k = \sum_{j\le k}(x_{(j)} - M_k)^2` and
    :math:`\tau_k = M_k - \sqrt{\max(0, (1 - S_k)/k)}`; then :math:`\tau = \tau_{k^*}` with
    :math:`k^* = \#\{k : \tau_k \le x_{(k)}\}`.

    Parameters and return value as in :func:`sparsemax`.
    """
    return _project("entmax15", z, axis, None, None, validate_args)


def entmax(
    z: Array,
    alpha: float | Array = 1.5,
    axis: int = -1,
    n_iter: int | None = None,
    *,
    validate_args: bool | None = None,
) -> Array:
    r"""α-entmax for any α > 1, by bisection on the threshold.

    Solves :math:`\operatorname{argmax}_{y \in \Delta} y^\top z + H^T_\alpha(y)`, whose solution is
    :math:`y = [(\alpha - 1) z - \tau]_+^{1/(\alpha-1)}`.  With :math:`x = (\alpha-1) z`, the
    threshold lies in :math:`[\max x - 1, \max x - K^{1-\alpha}]`, an interval shorter than 1, so
    ``n_iter`` halvings give :math:`|\tau - \tau^*| < 2^{-n}`; the result is renormalised.

    Parameters
    ----------
    z : array
        Scores, as in :func:`sparsemax`.
    alpha : float or array, default 1.5
        The entmax index, > 1.  An array must broadcast against ``z`` and have size 1 along
        ``axis`` (one α per row).  α = 2 is sparsemax; α → 1 tends to softmax.
    axis : int, default -1
        The axis holding the K scores of each row.
    n_iter : int or None
        Bisection steps; ``None`` is enough for the dtype (32 for float32, 60 for float64).
    validate_args : bool or None, default None
        As in :func:`sparsemax`, and also check ``alpha > 1``.

    Returns
    -------
    array
        Same shape, dtype, library and device as ``z``.
    """
    return _project("entmax", z, axis, alpha, n_iter, validate_args)


def softmax(z: Array, axis: int = -1, *, validate_args: bool | None = None) -> Array:
    r"""Softmax, :math:`y_k = \exp(z_k - \max z) / \sum_j \exp(z_j - \max z)`.

    The maximiser of :math:`y^\top z + H(y)` over the simplex (Shannon entropy H), the α → 1
    limit of :func:`entmax`.  Rows of all ``-inf`` follow the rule of :func:`sparsemax`.
    """
    return _project("softmax", z, axis, None, None, validate_args)


# ---------------------------------------------------------------------------------------------
# Closed-form derivatives (plain functions of the output y; JVP = VJP since J is symmetric)


def _along(xp: Any, fn: Any, axis: int, *arrays: Array) -> Array:
    """``fn(xp, *arrays)`` along the last axis, for arrays whose simplex axis is ``axis``.

    Integer or boolean arrays are promoted to the library's default floating dtype first.
    """
    arrays = tuple(
        a
        if _backend.is_floating(xp, a.dtype)
        else xp.astype(a, _backend.compute_dtype(xp, a.dtype))
        for a in arrays
    )
    if axis in (-1, len(arrays[0].shape) - 1):
        return fn(xp, *arrays)
    moved = [xp.moveaxis(a, axis, -1) for a in arrays]
    return xp.moveaxis(fn(xp, *moved), -1, axis)


def _weighted_projection(xp: Any, s: Array, v: Array) -> Array:
    # v ↦ s ⊙ v − s (sᵀv)/Σs  on the last axis.
    total = xp.sum(s, axis=-1, keepdims=True)
    return s * v - s * (xp.sum(s * v, axis=-1, keepdims=True) / total)


def _safe_support(xp: Any, y: Array) -> tuple[Array, Array]:
    support = y > 0
    return support, xp.where(support, y, xp.ones_like(y))


def _sparsemax_tangent(xp: Any, y: Array, v: Array) -> Array:
    support = y > 0
    s = xp.astype(support, v.dtype)
    mean = xp.sum(xp.where(support, v, xp.zeros_like(v)), axis=-1, keepdims=True) / xp.sum(
        s, axis=-1, keepdims=True
    )
    return xp.where(support, v - mean, xp.zeros_like(v))


def _entmax_weights(xp: Any, y: Array, alpha: Any) -> Array:
    support, safe = _safe_support(xp, y)
    return xp.where(support, safe ** (2 - alpha), xp.zeros_like(y))


def sparsemax_jvp(y: Array, v: Array, axis: int = -1) -> Array:
    r"""JVP of sparsemax at the output ``y``: :math:`v \mapsto 1_S \odot (v - \bar v_S)`.

    :math:`\bar v_S` is the mean of ``v`` over the support ``S = {y > 0}``.  The Jacobian
    :math:`\operatorname{diag}(1_S) - 1_S 1_S^\top/|S|` is symmetric, so this is also the VJP.
    """
    xp = array_namespace(y, v)
    return _along(xp, _sparsemax_tangent, axis, y, v)


sparsemax_vjp = sparsemax_jvp


def entmax15_jvp(y: Array, v: Array, axis: int = -1) -> Array:
    r"""JVP (= VJP) of 1.5-entmax at the output ``y``: ``s ⊙ v − s (sᵀv)/Σs`` with ``s = √y``."""
    return entmax_jvp(y, v, 1.5, axis)


entmax15_vjp = entmax15_jvp


def _pad_alpha(xp: Any, alpha: Any, y: Array) -> Any:
    """An α array with fewer dimensions than ``y`` gets leading axes (broadcasting rule)."""
    if isinstance(alpha, (int, float)) or len(alpha.shape) == len(y.shape):
        return alpha
    return xp.reshape(alpha, (1,) * (len(y.shape) - len(alpha.shape)) + tuple(alpha.shape))


def entmax_jvp(y: Array, v: Array, alpha: float | Array, axis: int = -1) -> Array:
    r"""JVP (= VJP) of α-entmax w.r.t. the scores, at the output ``y``.

    :math:`v \mapsto s \odot v - s\,(s^\top v)/\sum s` with :math:`s = y^{2-\alpha}` on the support
    (0 off it).  ``alpha`` broadcasts against ``y`` with size 1 along ``axis``.
    """
    xp = array_namespace(y, v, alpha)
    alpha = _pad_alpha(xp, alpha, y)

    def tangent(xp: Any, y: Array, v: Array, alpha: Any) -> Array:
        return _weighted_projection(xp, _entmax_weights(xp, y, alpha), v)

    if isinstance(alpha, (int, float)):
        return _along(xp, lambda xp, y, v: tangent(xp, y, v, alpha), axis, y, v)
    return _along(xp, tangent, axis, y, v, alpha)


entmax_vjp = entmax_jvp


def entmax_alpha_jvp(y: Array, alpha: float | Array, axis: int = -1) -> Array:
    r"""Derivative of α-entmax w.r.t. α, at the output ``y``: :math:`\partial y / \partial \alpha`.

    With :math:`g = y/(\alpha-1) - y \log y` and :math:`s = y^{2-\alpha}` on the support (both 0 off
    it), :math:`\partial y/\partial\alpha = (g - s \sum g / \sum s)/(\alpha - 1)`.  Multiply by
    :math:`d\alpha` for the JVP; the VJP w.r.t. a per-row α is the sum of ``ĝ ⊙ ∂y/∂α`` along
    ``axis``.
    """
    xp = array_namespace(y, alpha)
    alpha = _pad_alpha(xp, alpha, y)

    def derivative(xp: Any, y: Array, alpha: Any) -> Array:
        support, safe = _safe_support(xp, y)
        zero = xp.zeros_like(y)
        g = xp.where(support, safe / (alpha - 1) - safe * xp.log(safe), zero)
        s = xp.where(support, safe ** (2 - alpha), zero)
        ratio = xp.sum(g, axis=-1, keepdims=True) / xp.sum(s, axis=-1, keepdims=True)
        return (g - s * ratio) / (alpha - 1)

    if isinstance(alpha, (int, float)):
        return _along(xp, lambda xp, y: derivative(xp, y, alpha), axis, y)
    return _along(xp, derivative, axis, y, alpha)


def softmax_jvp(y: Array, v: Array, axis: int = -1) -> Array:
    r"""JVP (= VJP) of softmax at the output ``y``: :math:`v \mapsto y \odot (v - y^\top v)`."""
    xp = array_namespace(y, v)
    return _along(xp, lambda xp, y, v: _weighted_projection(xp, y, v), axis, y, v)


softmax_vjp = softmax_jvp


# ---------------------------------------------------------------------------------------------
# Reference forward maps (standard array API, last axis, compute dtype). These are the single
# source of truth: fast paths in ``mixedarray._native`` are tested against them.


def _shifted(xp: Any, z: Array, scale: Any = 1.0) -> Array:
    """``x = (z - max z) · scale`` with entries below ``-1`` clamped to ``-2``.

    With ``scale = α - 1`` every entry with ``x_i ≤ -1`` is outside the support (the threshold
    is at least ``max x - 1``), so clamping them changes nothing but removes ``-inf`` (no
    ``-inf - -inf``).  A row of all ``-inf`` becomes all zeros (the uniform limit).
    """
    top = xp.max(z, axis=-1, keepdims=True)
    masked = top == -math.inf
    x = xp.clip((z - xp.where(masked, xp.zeros_like(top), top)) * scale, min=-2.0)
    return xp.where(masked, xp.zeros_like(x), x)


def _positive_part(xp: Any, gap: Array) -> Array:
    """``[gap]_+`` with gaps within rounding of 0 (``≤ 4 eps``) set to exactly 0.

    ``gap = x − τ`` is computed with x's maximum at 0 and τ ∈ [−1, 0], so its rounding error is
    a few eps; entries tied with the threshold must land on the face's boundary (exactly 0),
    not on rounding-level mass.  What this drops is below the output's resolution.
    """
    tolerance = 4 * xp.finfo(gap.dtype).eps
    return xp.where(gap > tolerance, gap, xp.zeros_like(gap))


def sparsemax_reference(xp: Any, z: Array) -> Array:
    """Sort-based sparsemax on the last axis, using ``τ = max_k (C_k − 1)/k``."""
    x = _shifted(xp, z)
    k = xp.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=_backend.device(x))
    cumulative = xp.cumulative_sum(xp.sort(x, axis=-1, descending=True), axis=-1)
    tau = xp.max((cumulative - 1) / k, axis=-1, keepdims=True)
    return _positive_part(xp, x - tau)


def entmax15_reference(xp: Any, z: Array) -> Array:
    """Exact sort-based 1.5-entmax on the last axis.

    With x sorted decreasingly, entry k is in the support iff ``Σ_{j≤k} (x_(j) − x_(k))² < 1``
    (``f`` at ``x_(k)`` is still positive), which counts the support size k* from cumulative
    sums; the threshold then comes from two-pass sums over the support (mean M, spread S),
    ``τ = M − √((1 − S)/k*)``, without the cancellation of ``Σx² − k M²`` in float32.
    """
    x = _shifted(xp, z, 0.5)
    ordered = xp.sort(x, axis=-1, descending=True)
    k = xp.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=_backend.device(x))
    total = xp.cumulative_sum(ordered, axis=-1)
    squares = xp.cumulative_sum(ordered * ordered, axis=-1)
    below = squares - 2 * ordered * total + k * ordered * ordered
    count = xp.sum(xp.astype(below < 1, x.dtype), axis=-1, keepdims=True)
    smallest = xp.sum(xp.where(k == count, ordered, xp.zeros_like(ordered)), axis=-1, keepdims=True)
    support = x >= smallest
    zero = xp.zeros_like(x)
    mean = xp.sum(xp.where(support, x, zero), axis=-1, keepdims=True) / count
    deviation = xp.where(support, x - mean, zero)
    spread = xp.sum(deviation * deviation, axis=-1, keepdims=True)
    tau = mean - xp.sqrt(xp.clip((1 - spread) / count, min=0.0))
    y = _positive_part(xp, x - tau)
    return y * y


def default_n_iter(xp: Any, dtype: Any) -> int:
    """Bisection steps enough for ``dtype``: the threshold interval is shorter than 1."""
    return 60 if dtype == xp.float64 else 32


def entmax_bisect_reference(
    xp: Any, z: Array, alpha: Any, n_iter: int, repeat: Any = None
) -> Array:
    """α-entmax on the last axis by ``n_iter`` bisection steps on τ (then renormalised).

    ``repeat(n, step, state)`` applies ``step`` n times (``jax.lax.fori_loop`` under JAX, so
    ``jit`` does not unroll the loop); ``None`` is a Python loop.
    """
    x = _shifted(xp, z, alpha - 1)
    power = 1 / (alpha - 1)
    size = x.shape[-1]
    low = -xp.ones_like(x[..., :1])
    high = -((size * xp.ones_like(low)) ** (1 - alpha)) if size > 1 else xp.zeros_like(low)

    def halve(bounds: tuple) -> tuple:
        low, high = bounds
        mid = (low + high) / 2
        above = xp.sum(xp.clip(x - mid, min=0.0) ** power, axis=-1, keepdims=True) >= 1
        return xp.where(above, mid, low), xp.where(above, high, mid)

    low, high = (repeat or _backend.eager_repeat)(n_iter, halve, (low, high))
    y = xp.clip(x - low, min=0.0) ** power
    return y / xp.sum(y, axis=-1, keepdims=True)


def threshold_newton(xp: Any, name: str, z: Array, while_loop: Any) -> Array:
    """Sort-free exact sparsemax or 1.5-entmax on the last axis, by Newton's method on τ.

    ``f(τ) = Σ [x − τ]_+^p − 1`` (p = 1 for sparsemax, 2 for 1.5-entmax, x = z/2) is convex
    and decreasing, so Newton's method from the lower bound ``max x − 1`` stays below the root
    and its support only shrinks.  Sparsemax is exact once the support stops changing; for
    1.5-entmax the quadratic on the current support is solved in closed form and accepted once
    every support entry stays above that root.  ``while_loop(cond, body, state)`` is the
    loop primitive (``jax.lax.while_loop`` under JAX, a Python loop when eager).
    """
    x = _shifted(xp, z, 1.0 if name == "sparsemax" else 0.5)
    tau = -xp.ones_like(x[..., :1])
    done = xp.zeros(tau.shape, dtype=xp.bool, device=_backend.device(x))
    zero = xp.zeros_like(x)
    if name == "sparsemax":

        def body(state: tuple) -> tuple:
            tau, previous, done, step = state
            inside = x > tau
            count = xp.sum(xp.astype(inside, x.dtype), axis=-1, keepdims=True)
            total = xp.sum(xp.where(inside, x, zero), axis=-1, keepdims=True)
            stable = count == previous
            tau = xp.where(done | stable, tau, (total - 1) / count)
            return tau, count, done | stable, step + 1

        state = (tau, xp.zeros_like(tau), done, 0)
    else:

        def body(state: tuple) -> tuple:
            tau, done, step = state
            gap = x - tau
            inside = gap > 0
            count = xp.sum(xp.astype(inside, x.dtype), axis=-1, keepdims=True)
            s1 = xp.sum(xp.where(inside, gap, zero), axis=-1, keepdims=True)
            s2 = xp.sum(xp.where(inside, gap * gap, zero), axis=-1, keepdims=True)
            lowest = xp.min(
                xp.where(inside, gap, xp.full_like(x, math.inf)), axis=-1, keepdims=True
            )
            disc = s1 * s1 - count * (s2 - 1)
            delta = (s1 - xp.sqrt(xp.clip(disc, min=0.0))) / count
            exact = (disc >= 0) & (lowest >= delta)
            step_size = xp.where(exact, delta, (s2 - 1) / (2 * s1))
            return xp.where(done, tau, tau + step_size), done | exact, step + 1

        state = (tau, done, 0)

    def cond(state: tuple) -> Any:
        return ~xp.all(state[-2]) & (state[-1] < _MAX_NEWTON_STEPS)

    tau = while_loop(cond, body, state)[0]
    y = _positive_part(xp, x - tau)
    return y if name == "sparsemax" else y * y


_MAX_NEWTON_STEPS = 200


def softmax_reference(xp: Any, z: Array) -> Array:
    """Softmax on the last axis; all ``-inf`` rows give the uniform vector."""
    top = xp.max(z, axis=-1, keepdims=True)
    top = xp.where(top == -math.inf, xp.zeros_like(top), top)
    shifted = z - top
    shifted = xp.where(xp.all(z == -math.inf, axis=-1, keepdims=True), xp.zeros_like(z), shifted)
    e = xp.exp(shifted)
    return e / xp.sum(e, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Dispatch


def _check_axis(z: Array, axis: Any) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    ndim = len(z.shape)
    if ndim == 0:
        raise ValueError("z must have at least one dimension (the simplex axis); got a 0-d array")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for z with {ndim} dimension(s)")
    if z.shape[axis] == 0:
        raise ValueError(f"z has size 0 along axis {axis}: the simplex needs K >= 1 entries")
    return axis % ndim


def _check_finite_rows(xp: Any, z: Array) -> None:
    # Maxima propagate NaN, so the largest and smallest row maxima tell whether any row has
    # NaN, +inf or only -inf (two scalar host reads); details are looked up only on failure.
    top = xp.max(z, axis=-1)
    if math.isfinite(_backend.host_float(xp.max(top))) and math.isfinite(
        _backend.host_float(xp.min(top))
    ):
        return
    if bool(xp.any(xp.isnan(top))):
        raise ValueError("z contains NaN")
    if bool(xp.any(top == math.inf)):
        raise ValueError("z contains +inf; scores must be finite or -inf (masked)")
    raise ValueError(
        "z has a row whose entries are all -inf: no point of the simplex is allowed; "
        "unmask at least one entry (with validate_args=False such rows give the uniform vector)"
    )


def _check_alpha(xp: Any, alpha: Any, z: Array, axis: int, validate: bool) -> Any:
    if isinstance(alpha, bool):
        raise TypeError("alpha must be a float > 1 or an array, got a bool")
    if isinstance(alpha, (int, float)):
        if not alpha > 1:
            raise ValueError(f"alpha must be > 1, got {alpha}; use softmax for alpha = 1")
        return float(alpha)
    shape = tuple(alpha.shape)
    ndim = len(z.shape)
    if len(shape) > ndim:
        raise ValueError(f"alpha has shape {shape}, more dimensions than z {tuple(z.shape)}")
    shape = (1,) * (ndim - len(shape)) + shape
    if shape[axis] != 1:
        raise ValueError(
            f"alpha must have size 1 along axis {axis} (one alpha per row); got shape "
            f"{tuple(alpha.shape)} for z of shape {tuple(z.shape)}"
        )
    for a, b in zip(shape, z.shape, strict=True):
        if a not in (1, b):
            raise ValueError(
                f"alpha of shape {tuple(alpha.shape)} does not broadcast against z of shape "
                f"{tuple(z.shape)}"
            )
    if not _backend.is_floating(xp, alpha.dtype):
        raise TypeError(f"alpha must be a real floating array, got dtype {alpha.dtype}")
    if validate and not bool(xp.all(alpha > 1)):
        raise ValueError("alpha must be > 1 everywhere (use softmax for alpha = 1)")
    return xp.reshape(alpha, shape)


_REFERENCE = {
    "sparsemax": lambda xp, z, alpha, n_iter: sparsemax_reference(xp, z),
    "entmax15": lambda xp, z, alpha, n_iter: entmax15_reference(xp, z),
    "entmax": entmax_bisect_reference,
    "softmax": lambda xp, z, alpha, n_iter: softmax_reference(xp, z),
}


def reference(name: str, xp: Any, z: Array, alpha: Any = None, n_iter: int | None = None) -> Array:
    """The standard-API forward map ``name`` on the last axis (no dispatch, no checks)."""
    return _REFERENCE[name](xp, z, alpha, n_iter)


def _project(
    name: str, z: Array, axis: Any, alpha: Any, n_iter: int | None, validate_args: bool | None
) -> Array:
    xp = array_namespace(z, None if isinstance(alpha, (int, float)) else alpha)
    axis = _check_axis(z, axis)
    validate = _backend.values_are_checkable(z, alpha) if validate_args is None else validate_args
    dtype = _backend.compute_dtype(xp, z.dtype, name="z")
    x = z if z.dtype == dtype else xp.astype(z, dtype)
    last = axis == len(z.shape) - 1
    if not last:
        x = xp.moveaxis(x, axis, -1)
    if name == "entmax":
        alpha = _check_alpha(xp, alpha, z, axis, validate)
        if not isinstance(alpha, float):
            alpha = xp.astype(alpha, dtype) if alpha.dtype != dtype else alpha
            if not last:
                alpha = xp.moveaxis(alpha, axis, -1)
        if n_iter is None:
            n_iter = default_n_iter(xp, dtype)
        elif isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
            raise ValueError(f"n_iter must be a positive int or None, got {n_iter!r}")
    if validate:
        _check_finite_rows(xp, x)
    rule = lookup_rule(_backend.library_name(z), name)
    y = rule(x, alpha, n_iter) if rule is not None else reference(name, xp, x, alpha, n_iter)
    if not last:
        y = xp.moveaxis(y, -1, axis)
    if y.dtype != z.dtype and _backend.is_floating(xp, z.dtype):
        y = xp.astype(y, z.dtype)
    return y
