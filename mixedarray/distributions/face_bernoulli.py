r"""The face distribution of the Mixed Dirichlet: independent Bernoullis conditioned on f ≠ ∅.

With face logits :math:`\eta \in \mathbb{R}^K` (last axis) and :math:`p_k = \sigma(\eta_k)`, a
face is a non-empty boolean mask :math:`f \in \{0, 1\}^K \setminus \{0\}` with

.. math:: P_F(f) = \frac{\prod_k p_k^{f_k} (1 - p_k)^{1 - f_k}}{1 - \prod_k (1 - p_k)}
                 = \exp\bigl(\eta \cdot f - A(\eta)\bigr),
          \qquad A(\eta) = \log\Bigl(\prod_k (1 + e^{\eta_k}) - 1\Bigr) = S + \log(1 - e^{-S}),

where :math:`S = \sum_k \operatorname{softplus}(\eta_k)` (paper notes §7).  The functions here are
pure array-API code of ``eta`` (any batch shape, faces on the last axis): no Python loops over
rows or faces, no boolean-mask indexing, no in-place writes and no branching on values, so they
run unchanged on NumPy, array-api-strict, PyTorch and JAX, under ``jax.jit`` and autograd.
float64 stays float64; float16 and bfloat16 are computed in float32 and cast back.

Numerics.  The non-empty probability :math:`1 - e^{-S} = 1 - \prod_k (1 - p_k)` is computed by
its *first-one* decomposition

.. math:: 1 - \prod_k (1 - p_k) = \sum_k p_k \prod_{j < k} (1 - p_j),
          \qquad \log(1 - e^{-S}) = \operatorname{logsumexp}_k
          \Bigl(\log\sigma(\eta_k) - \sum_{j<k} \operatorname{softplus}(\eta_j)\Bigr),

a log-sum of positive terms: it equals ``log1mexp(S)`` where that is accurate and, unlike
``log1mexp(S)``, stays exact when every :math:`\eta_k` is so negative that :math:`S` underflows
(e.g. :math:`\eta = -110` in float32, where :math:`A(\eta) \approx \operatorname{logsumexp}\eta`).
The same terms are the log-weights of the index of the first vertex in the face, which is what
the exact sampler :func:`sample` draws.  Log-probabilities use ``log σ(x) = -softplus(-x)`` with a
stable softplus; nothing takes ``log(sigmoid)`` or ``log(1 - p)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from mixedarray import random as _random
from mixedarray._backend import array_namespace, compute_dtype, device, is_floating, library_name

__all__ = [
    "cross_entropy",
    "entropy",
    "kl_divergence",
    "log_normalizer",
    "log_prob",
    "marginals",
    "mode",
    "sample",
    "size_distribution",
]

Array = Any


# ---------------------------------------------------------------------------------------------
# Plumbing.


def _prepare(xp: ModuleType, eta: Array, name: str) -> tuple[Array, Any]:
    """``(eta in its compute dtype, result dtype)``; checks that the last axis is non-empty."""
    if eta.ndim < 1 or eta.shape[-1] is None or eta.shape[-1] < 1:
        raise ValueError(
            f"{name} must have at least one axis with K >= 1 faces' logits on the last axis, "
            f"got shape {tuple(eta.shape)}"
        )
    work = compute_dtype(xp, eta.dtype, name=name)
    out = eta.dtype if is_floating(xp, eta.dtype) else work
    return (eta if eta.dtype == work else xp.astype(eta, work)), out


def _finish(xp: ModuleType, x: Array, dtype: Any) -> Array:
    if x.dtype != dtype:
        x = xp.astype(x, dtype)
    if library_name(x) == "numpy":  # NumPy reductions return scalars for 0-d results
        x = xp.asarray(x)
    return x


def _softplus(xp: ModuleType, x: Array) -> Array:
    """``log(1 + e^x)``, stable for every ``x`` and with NaN-free gradients ("double where")."""
    positive = x > 0
    zero = xp.zeros_like(x)
    x_pos = xp.where(positive, x, zero)
    x_neg = xp.where(positive, zero, x)
    return xp.where(positive, x_pos + xp.log1p(xp.exp(-x_pos)), xp.log1p(xp.exp(x_neg)))


def _log_sigmoid(xp: ModuleType, x: Array) -> Array:
    return -_softplus(xp, -x)


def _log_softmax(xp: ModuleType, x: Array) -> tuple[Array, Array]:
    """``(x − logsumexp(x), logsumexp(x))`` over the last axis (keepdims), max-shifted.

    The shift is subtracted before the log-sum is, so ``log_softmax`` keeps its relative
    accuracy when every entry is large (``(t − top) − log s`` rather than ``t − (top + log s)``).
    """
    top = xp.max(x, axis=-1, keepdims=True)
    top = xp.where(xp.isfinite(top), top, xp.zeros_like(top))
    shifted = x - top
    log_sum = xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
    return shifted - log_sum, top + log_sum


def _first_one(xp: ModuleType, eta: Array) -> tuple[Array, Array, Array]:
    """``(log π, log(1 − e^{−S}), softplus(η))`` for the first vertex ``J`` of the face.

    With ``t_k = log σ(η_k) − Σ_{j<k} softplus(η_j)``, ``exp(t_k) = p_k Π_{j<k} (1 − p_j)`` is
    the probability that ``k`` is the first vertex of an (unconditioned) independent-Bernoulli
    draw; the ``t_k`` log-sum to ``log(1 − e^{−S})`` and ``log π = log_softmax(t)`` is the law of
    ``J`` given a non-empty face.  ``log π`` has shape ``batch + (K,)``, the others
    ``batch + (1,)`` and ``batch + (K,)``.
    """
    sp = _softplus(xp, eta)
    before = xp.cumulative_sum(-sp, axis=-1, include_initial=True)[..., :-1]
    log_pi, log_nonempty = _log_softmax(xp, before + _log_sigmoid(xp, eta))
    return log_pi, log_nonempty, sp


def _log_normalizer_parts(xp: ModuleType, eta: Array) -> tuple[Array, Array]:
    """``(A(η), log(1 − e^{−S}))``, shapes ``batch`` and ``batch + (1,)``."""
    _, log_nonempty, sp = _first_one(xp, eta)
    return xp.sum(sp, axis=-1) + log_nonempty[..., 0], log_nonempty


def _marginals(xp: ModuleType, eta: Array) -> Array:
    _, log_nonempty = _log_normalizer_parts(xp, eta)
    return xp.exp(_log_sigmoid(xp, eta) - log_nonempty)


def _after_first(xp: ModuleType, pi: Array, per_vertex: Array) -> Array:
    """``Σ_j π_j Σ_{k>j} c_k``: the expectation over ``J`` of a sum over the vertices after it."""
    reverse = xp.flip(per_vertex, axis=-1)
    after = xp.flip(xp.cumulative_sum(reverse, axis=-1, include_initial=True)[..., :-1], axis=-1)
    keep = pi > 0
    safe = xp.where(keep, after, xp.zeros_like(after))
    return xp.sum(xp.where(keep, pi * safe, xp.zeros_like(pi * safe)), axis=-1)


def _cross(xp: ModuleType, p: Array, q: Array | None, *, relative: bool) -> Array:
    """Cross-entropy (``relative=False``) or KL (``relative=True``) of the faces, by the chain rule.

    ``F`` is ``J`` (its first vertex) followed by independent Bernoullis after ``J``, under
    ``P`` and ``Q`` alike, so ``H(P, Q) = H(π^P, π^Q) + E_{J∼π^P} Σ_{k>J} H(Bern p_k, Bern q_k)``,
    and the same for KL: sums of non-negative terms, free of the cancellation of
    ``A(η_q) − η_q·m_p`` when ``|η|`` is large.  ``q=None`` means ``q = p`` (the entropy).
    """
    log_pi_p, _, sp_p = _first_one(xp, p)
    pi_p = xp.exp(log_pi_p)
    eta_q = p if q is None else q
    sp_q = _softplus(xp, eta_q)  # −log(1 − q_k)
    spm_q = _softplus(xp, -eta_q)  # −log q_k
    prob = xp.exp(-_softplus(xp, -p))  # p_k
    stay = xp.exp(-sp_p)  # 1 − p_k
    log_pi_q = log_pi_p if q is None else _first_one(xp, q)[0]
    zero = xp.zeros_like(pi_p)

    def weighted(weight: Array, value: Array) -> Array:
        # weight * value with 0 * inf = 0: vertices with logit -inf (p_k = 0) or +inf
        # (1 - p_k = 0) contribute nothing, instead of NaN.
        # The "double where" keeps the gradients of the other entries free of NaN.
        keep = weight > 0
        safe = xp.where(keep, value, xp.zeros_like(value))
        return xp.where(keep, weight * safe, xp.zeros_like(weight * safe))

    if relative:
        head = xp.sum(weighted(pi_p, log_pi_p - log_pi_q), axis=-1)
        spm_p = _softplus(xp, -p)
        per_vertex = weighted(prob, spm_q - spm_p) + weighted(stay, sp_q - sp_p)
    else:
        head = -xp.sum(weighted(pi_p, log_pi_q + zero), axis=-1)
        per_vertex = weighted(prob, spm_q) + weighted(stay, sp_q)
    total = head + _after_first(xp, pi_p, per_vertex)
    return xp.where(total > 0, total, xp.zeros_like(total))


# ---------------------------------------------------------------------------------------------
# Public functions.


def log_normalizer(eta: Array) -> Array:
    r"""Log-partition function :math:`A(\eta) = \log(\prod_k (1 + e^{\eta_k}) - 1)`.

    Equal to :math:`S + \log(1 - e^{-S})` with :math:`S = \sum_k \operatorname{softplus}(\eta_k)`,
    computed as ``S + logsumexp_k(log σ(η_k) − Σ_{j<k} softplus(η_j))`` (see the module notes):
    finite for every finite ``eta``, including all entries far below zero.

    Parameters
    ----------
    eta : array
        Face logits, shape ``batch + (K,)``, ``K >= 1``.

    Returns
    -------
    array
        ``A(η)``, shape ``batch``, in ``eta``'s floating dtype.
    """
    xp = array_namespace(eta)
    x, out = _prepare(xp, eta, "eta")
    return _finish(xp, _log_normalizer_parts(xp, x)[0], out)


def marginals(eta: Array) -> Array:
    r"""Inclusion probabilities :math:`m_k = P(k \in F) = \sigma(\eta_k) / (1 - e^{-S})`.

    Also the gradient :math:`\nabla_\eta A(\eta)`, and the mean of the face mask.

    Parameters
    ----------
    eta : array
        Face logits, shape ``batch + (K,)``.

    Returns
    -------
    array
        Shape ``batch + (K,)``, entries in ``(0, 1]``, in ``eta``'s floating dtype.
    """
    xp = array_namespace(eta)
    x, out = _prepare(xp, eta, "eta")
    return _finish(xp, _marginals(xp, x), out)


def log_prob(eta: Array, mask: Array) -> Array:
    r"""Log-probability of a face, :math:`\log P_F(f) = \eta \cdot f - A(\eta)`.

    Parameters
    ----------
    eta : array
        Face logits, shape ``batch + (K,)``.
    mask : array of bool
        Faces, shape ``... + (K,)`` broadcastable against ``eta``; the empty mask (all False)
        has probability 0 and gives ``-inf``.

    Returns
    -------
    array
        Shape ``broadcast(mask.shape, eta.shape)[:-1]``, in ``eta``'s floating dtype.

    Raises
    ------
    TypeError
        If ``mask`` is not boolean or comes from another library than ``eta``.
    ValueError
        If the last axes of ``mask`` and ``eta`` differ.
    """
    xp = array_namespace(eta, mask)
    x, out = _prepare(xp, eta, "eta")
    if mask.dtype != xp.bool:
        raise TypeError(f"mask must be a boolean array, got dtype {mask.dtype}")
    if mask.ndim < 1 or mask.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"mask must have K = {x.shape[-1]} entries on its last axis (as eta), "
            f"got shape {tuple(mask.shape)}"
        )
    a = _log_normalizer_parts(xp, x)[0]
    energy = xp.sum(xp.where(mask, x, xp.zeros_like(x)), axis=-1)
    value = energy - a
    nonempty = xp.any(mask, axis=-1)
    result = xp.where(nonempty, value, xp.full_like(value, -float("inf")))
    return _finish(xp, result, out)


def entropy(eta: Array) -> Array:
    r"""Shannon entropy of the face, :math:`H(F) = A(\eta) - \eta \cdot m` (nats, ``>= 0``).

    Computed by the chain rule over the first vertex ``J`` of the face,
    :math:`H(F) = H(J) + E_J \sum_{k > J} h(\sigma(\eta_k))` (``h`` the binary entropy): a sum of
    non-negative terms, accurate also where ``A`` and ``η·m`` are large and nearly equal.

    Parameters
    ----------
    eta : array
        Face logits, shape ``batch + (K,)``.

    Returns
    -------
    array
        Shape ``batch``, in ``eta``'s floating dtype.
    """
    xp = array_namespace(eta)
    x, out = _prepare(xp, eta, "eta")
    return _finish(xp, _cross(xp, x, None, relative=False), out)


def _pair(eta_p: Array, eta_q: Array) -> tuple[ModuleType, Array, Array, Any]:
    xp = array_namespace(eta_p, eta_q)
    p, out_p = _prepare(xp, eta_p, "eta_p")
    q, out_q = _prepare(xp, eta_q, "eta_q")
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"eta_p and eta_q must have the same number K of faces' logits on the last axis, "
            f"got shapes {tuple(eta_p.shape)} and {tuple(eta_q.shape)}"
        )
    dtype = xp.result_type(p, q)
    p = p if p.dtype == dtype else xp.astype(p, dtype)
    q = q if q.dtype == dtype else xp.astype(q, dtype)
    return xp, p, q, xp.result_type(out_p, out_q)


def cross_entropy(eta_p: Array, eta_q: Array) -> Array:
    r"""Cross-entropy :math:`H(P_F, Q_F) = A(\eta_q) - \eta_q \cdot m_p` (nats).

    Computed by the chain rule over the first vertex, as :func:`entropy`.

    Parameters
    ----------
    eta_p, eta_q : array
        Face logits of ``P`` and ``Q``, shapes ``... + (K,)`` broadcastable together.

    Returns
    -------
    array
        Shape ``broadcast(eta_p.shape, eta_q.shape)[:-1]``.
    """
    xp, p, q, out = _pair(eta_p, eta_q)
    return _finish(xp, _cross(xp, p, q, relative=False), out)


def kl_divergence(eta_p: Array, eta_q: Array) -> Array:
    r"""KL divergence :math:`KL(P_F \| Q_F) = (\eta_p - \eta_q) \cdot m_p - A(\eta_p) + A(\eta_q)`.

    Computed by the chain rule over the first vertex ``J``,
    :math:`KL(\pi^P \| \pi^Q) + E_{J \sim \pi^P} \sum_{k > J} KL(\text{Bern}\,p_k \|
    \text{Bern}\,q_k)`.  Exactly 0 for ``eta_p == eta_q``; rounding below zero is clipped to 0.

    Parameters
    ----------
    eta_p, eta_q : array
        Face logits of ``P`` and ``Q``, shapes ``... + (K,)`` broadcastable together.

    Returns
    -------
    array
        Shape ``broadcast(eta_p.shape, eta_q.shape)[:-1]``, ``>= 0``.
    """
    xp, p, q, out = _pair(eta_p, eta_q)
    return _finish(xp, _cross(xp, p, q, relative=True), out)


def mode(eta: Array) -> Array:
    r"""Most probable face: :math:`f_k = 1[\eta_k > 0]`, or, if no :math:`\eta_k > 0`, the single
    vertex :math:`\arg\max_k \eta_k` (the first one on ties).

    Parameters
    ----------
    eta : array
        Face logits, shape ``batch + (K,)``.

    Returns
    -------
    array of bool
        Shape ``batch + (K,)``, never empty.
    """
    xp = array_namespace(eta)
    x, _ = _prepare(xp, eta, "eta")
    positive = x > 0
    best = xp.argmax(x, axis=-1, keepdims=True)
    vertex = xp.arange(x.shape[-1], device=device(x)) == best
    return xp.where(xp.any(positive, axis=-1, keepdims=True), positive, vertex)


def size_distribution(eta: Array) -> Array:
    r"""Distribution of the face size, :math:`P(|F| = n)` for :math:`n = 1, \dots, K`.

    :math:`|F|` is Poisson-binomial conditioned on :math:`|F| \ge 1`.  Computed by the
    :math:`O(K^2)` recursion :math:`q_n \leftarrow q_n (1 - p_k) + q_{n-1} p_k` in log space
    (``K`` vectorised steps; after step ``k`` only sizes ``0..k`` are kept, so no ``-inf`` ever
    appears), then normalised over ``n >= 1``.

    Parameters
    ----------
    eta : array
        Face logits, shape ``batch + (K,)``.

    Returns
    -------
    array
        Shape ``batch + (K,)``: entry ``n - 1`` is ``P(|F| = n)``; sums to 1.
    """
    xp = array_namespace(eta)
    x, out = _prepare(xp, eta, "eta")
    log_p = _log_sigmoid(xp, x)
    log_q = -_softplus(xp, x)  # log(1 - p)
    # After the first vertex: log q_0 = log(1 - p_0), log q_1 = log p_0.
    q = xp.concat([log_q[..., 0:1], log_p[..., 0:1]], axis=-1)
    for k in range(1, x.shape[-1]):
        stay, grow = log_q[..., k : k + 1], log_p[..., k : k + 1]
        middle = xp.logaddexp(q[..., 1:] + stay, q[..., :-1] + grow)
        q = xp.concat([q[..., 0:1] + stay, middle, q[..., -1:] + grow], axis=-1)
    sizes = q[..., 1:]
    return _finish(xp, xp.exp(_log_softmax(xp, sizes)[0]), out)


def sample(eta: Array, rng: Any, sample_shape: int | Sequence[int] = ()) -> Array:
    r"""Exact draws of faces by the parallel *first-one* sampler (paper notes §7 (b)).

    The first vertex :math:`J` of the face is drawn from its categorical law,
    :math:`\log P(J = k) = \log\sigma(\eta_k) - \sum_{j<k}\operatorname{softplus}(\eta_j)
    - \log(1 - e^{-S})`, by Gumbel-max; then :math:`f_j = 0` for :math:`j < J`,
    :math:`f_J = 1` and :math:`f_j \sim \text{Bernoulli}(\sigma(\eta_j))` independently for
    :math:`j > J` (drawn as :math:`\log U_j < \log\sigma(\eta_j)`).  No rejection: exact and
    of fixed cost for every ``eta``, also when all logits are far below zero.

    Parameters
    ----------
    eta : array
        Face logits, shape ``batch + (K,)``.
    rng : generator, JAX key or int
        The caller's generator, as accepted by :mod:`mixedarray.random`.
    sample_shape : int or tuple of int
        Leading shape of independent draws.

    Returns
    -------
    array of bool
        Face masks of shape ``sample_shape + batch + (K,)``, in ``eta``'s library and on its
        device; every mask is non-empty.
    """
    xp = array_namespace(eta)
    x, _ = _prepare(xp, eta, "eta")
    if isinstance(sample_shape, int):
        sample_shape = (sample_shape,)
    shape = (*tuple(sample_shape), *tuple(x.shape))
    log_weights = _first_one(xp, x)[0]
    rng_first, rng_rest = _random.split(rng, 2, like=x)
    noise = _random.gumbel(rng_first, shape, like=x, dtype=x.dtype)
    first = xp.argmax(log_weights + noise, axis=-1, keepdims=True)
    u = _random.uniform(rng_rest, shape, like=x, dtype=x.dtype)
    heads = xp.log(u) < _log_sigmoid(xp, x)
    index = xp.arange(x.shape[-1], device=device(x))
    return xp.logical_or(index == first, xp.logical_and(index > first, heads))
