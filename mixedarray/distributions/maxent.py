r"""The maximum-entropy mixed distribution on the simplex at a precision of N bits.

At precision N (free coordinates quantised to cells of width :math:`2^{-N}`) the code length of a
mixed variable is :math:`H_\oplus/\ln 2 + N\,E[\dim F]` bits (paper-notes §4).  Its maximiser is
uniform within each face, with

.. math::

    P(F = f) \propto 2^{N \dim f} / (\dim f)!, \qquad
    P(|F| = k) \propto \binom{K}{k}\, 2^{N(k-1)} / (k-1)!,

and the maximum is :math:`\log Z`, :math:`Z = \sum_{k=1}^K \binom{K}{k} 2^{N(k-1)}/(k-1)!`
(nats).  At N = 0 the density is the constant :math:`1/\mu_\oplus(\Delta)` and
:math:`H_\oplus = \log \mu_\oplus(\Delta)` (5.0902 nats for K = 10).

The authors' code (probabll/dists.pt ``MaxEntropyFaces``) drops the :math:`\binom{K}{k}` factor;
that prior is *not* the maximum-entropy distribution (4.56 nats instead of 5.09 for K = 10).
"""

from __future__ import annotations

import math
from typing import Any

from mixedarray import _backend, _special, random
from mixedarray._backend import array_namespace
from mixedarray.distributions.base import Distribution, cached_property

__all__ = ["MaxEntMixed"]

Array = Any


def _log_size_weights(num_vertices: int, bits: float) -> list[float]:
    """``log C(K, k) + N (k − 1) ln 2 − log (k − 1)!`` for k = 1..K (host constants)."""
    return [
        math.lgamma(num_vertices + 1)
        - math.lgamma(k + 1)
        - math.lgamma(num_vertices - k + 1)
        + bits * (k - 1) * math.log(2)
        - math.lgamma(k)
        for k in range(1, num_vertices + 1)
    ]


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


class MaxEntMixed(Distribution):
    r"""Maximum-entropy mixed distribution on :math:`\Delta_{K-1}` at precision ``bits``.

    Parameters
    ----------
    K : int
        Number of vertices (≥ 1).
    bits : float, default 0
        Precision N ≥ 0 in bits; 0 gives the maximiser of :math:`H_\oplus` itself.
    like : array, optional
        An array whose library, device and floating dtype the distribution uses (NumPy
        float64 when omitted).
    batch_shape : tuple of int, default ()
        Shape of the batch (all members are the same distribution).
    validate_args : bool or None
        See :class:`~mixedarray.distributions.base.Distribution`.

    Notes
    -----
    ``log_prob(y) = N (|supp y| − 1) ln 2 − log Z``; ``face_log_prob(f) = N dim f ln 2 −
    log (dim f)! − log Z``.  Sampling draws the face size from :math:`P(|F| = k)`, a uniformly
    random face of that size (ranks of uniform keys), and a uniform point of that face
    (normalised exponentials: Dirichlet(1)).  There are no free parameters, so ``rsample`` is
    ``sample``; the array attribute ``log_size_probs`` (:math:`\log P(|F| = k)`, k = 1..K,
    shape ``batch_shape + (K,)``, a function of ``K`` and ``bits``) carries the dtype and
    device, and is the pytree leaf.
    """

    parameter_names = ("log_size_probs",)
    parameter_event_ndims = (1,)
    static_names = ("K", "bits")
    has_rsample = True

    def __init__(
        self,
        K: int,
        bits: float = 0,
        *,
        like: Array | None = None,
        batch_shape: tuple[int, ...] = (),
        validate_args: bool | None = None,
    ) -> None:
        if isinstance(K, bool) or not isinstance(K, int):
            raise TypeError(f"K must be an int, got {type(K).__name__}")
        if K < 1:
            raise ValueError(f"K must be at least 1, got {K}")
        if isinstance(bits, bool) or not isinstance(bits, (int, float)) or not bits >= 0:
            raise ValueError(f"bits must be a number >= 0, got {bits!r}")
        if like is None:
            import array_api_compat.numpy as np_xp

            like = np_xp.zeros((), dtype=np_xp.float64)
        xp = array_namespace(like)
        dtype = _backend.compute_dtype(xp, like.dtype, name="like")
        self.K = K
        self.bits = float(bits)
        log_weights = _log_size_weights(K, self.bits)
        log_size_probs = _backend.constant(
            xp,
            [w - self._log_normalizer for w in log_weights],
            dtype=dtype,
            device=_backend.device(like),
        )
        log_size_probs = xp.asarray(log_size_probs, copy=True)  # the constant may be cached
        # log P(|F| = k), k = 1..K: the one array "parameter" (a leaf of the pytree view).
        self.log_size_probs = xp.broadcast_to(log_size_probs, (*tuple(batch_shape), K))
        super().__init__(
            xp=xp,
            like=self.log_size_probs,
            batch_shape=tuple(batch_shape),
            num_vertices=K,
            validate_args=validate_args,
        )

    @cached_property
    def _log_normalizer(self) -> float:
        """``log Z = log Σ_k C(K, k) 2^{N(k−1)}``, a host constant of ``K`` and ``bits``."""
        return _logsumexp(_log_size_weights(self.K, self.bits))

    # -- closed forms ---------------------------------------------------------------------------

    def size_probs(self) -> Array:
        """``P(|F| = k)`` for k = 1..K, shape ``batch_shape + (K,)``."""
        xp = self._xp
        return xp.exp(self.log_size_probs)

    def mean_dim(self) -> Array:
        """``E[dim F] = Σ_k P(|F| = k)(k − 1)``, shape ``batch_shape``."""
        xp = self._xp
        k = xp.arange(self.K, dtype=self.dtype, device=self.device)
        return xp.sum(self.size_probs() * k, axis=-1)

    def entropy_exact(self) -> Array:
        """``H⊕ = log Z − N ln 2 · E[dim F]`` (nats), shape ``batch_shape``."""
        return self._log_normalizer - self.bits * math.log(2) * self.mean_dim()

    # -- distribution API -----------------------------------------------------------------------

    def _per_size(self, size: Array, include_volume: bool) -> Array:
        xp = self._xp
        k = xp.astype(size, self.dtype)
        value = self.bits * math.log(2) * (k - 1) - self._log_normalizer
        if include_volume:
            value = value - _special.lgamma(xp.where(k > 0, k, xp.ones_like(k)))
        empty = xp.full_like(value, -math.inf)
        value = xp.where(k > 0, value, empty)
        shape = tuple(value.shape)
        target = _backend.broadcast_shapes(shape, self.batch_shape)
        return xp.broadcast_to(value, target) if target != shape else value

    def _log_prob(self, y: Array) -> Array:
        xp = self._xp
        size = xp.sum(xp.astype(y > 0, self.dtype), axis=-1)
        return self._per_size(size, include_volume=False)

    def _face_log_prob(self, mask: Array) -> Array:
        xp = self._xp
        return self._per_size(xp.sum(xp.astype(mask, self.dtype), axis=-1), include_volume=True)

    def _sample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        xp, like = self._xp, self._like
        shape = (*sample_shape, *self.batch_shape, self.K)
        rng_size, rng_face, rng_point = random.split(rng, 3, like=like)
        scores = self.log_size_probs + random.gumbel(rng_size, shape, like=like)
        size = xp.argmax(scores, axis=-1, keepdims=True) + 1
        keys = random.uniform(rng_face, shape, like=like)
        ranks = xp.argsort(xp.argsort(keys, axis=-1), axis=-1)
        mask = ranks < xp.astype(size, ranks.dtype)
        weights = -xp.log(random.uniform(rng_point, shape, like=like))
        weights = xp.where(mask, weights, xp.zeros_like(weights))
        return weights / xp.sum(weights, axis=-1, keepdims=True)

    def _rsample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        return self._sample(rng, sample_shape)
