r"""Gaussian-Sparsemax, the extrinsic mixed distribution: ``Y = sparsemax(Z)``, Z Gaussian.

Every face of the simplex has positive probability.  The density w.r.t. the direct-sum measure
is exact for every face and every K (:mod:`.gaussian_sparsemax_density`: a one-dimensional
integral over the threshold, computed in log space with a mode-centred Gauss–Hermite rule);
sampling is ``sparsemax(loc + scale ⊙ ε)`` and carries the pathwise gradient of the projection
(paper-notes §6).  Sampler and density describe the same distribution (the authors' K = 2 code
did not: it sampled with ``σ/√2`` and evaluated with ``σ``).
"""

from __future__ import annotations

import math
from typing import Any

from mixedarray import _backend, random
from mixedarray._backend import array_namespace
from mixedarray.distributions import gaussian_sparsemax_density as density
from mixedarray.distributions.base import Distribution
from mixedarray.projections import sparsemax

__all__ = ["GaussianSparsemax"]

Array = Any


class GaussianSparsemax(Distribution):
    r"""``Y = sparsemax(Z)`` with ``Z ~ N(loc, diag scale²)`` on the last axis.

    Parameters
    ----------
    loc : array, shape ``batch + (K,)``
        Mean of the scores Z.
    scale : array or float, broadcastable to ``loc``
        Standard deviation of the scores, > 0.
    num_nodes : int, default 32
        Gauss–Hermite nodes of the threshold integral in ``log_prob`` (see the error table in
        :func:`.gaussian_sparsemax_density.log_prob`).
    validate_args : bool or None
        Check ``scale > 0`` and finite parameters (and points in ``log_prob``) where that costs
        no device sync; see :class:`~mixedarray.distributions.base.Distribution`.

    Notes
    -----
    ``face_log_prob`` is exact for vertices (``P(Y = e_i) = P(Z_j ≤ Z_i − 1 ∀ j ≠ i)``) and for
    every face when K = 2.  Other faces have no closed form: under validation they raise
    ``NotImplementedError`` (estimate them by Monte Carlo, as the frequency of the face among
    ``faces.support(d.sample(rng, (n,)))``); without validation they are NaN.
    """

    parameter_names = ("loc", "scale")
    parameter_event_ndims = (1, 1)
    static_names = ("num_nodes",)
    has_rsample = True

    def __init__(
        self,
        loc: Array,
        scale: Array | float,
        *,
        num_nodes: int = 32,
        validate_args: bool | None = None,
    ) -> None:
        xp = array_namespace(loc, scale)
        if (
            isinstance(num_nodes, bool)
            or not isinstance(num_nodes, int)
            or not 2 <= num_nodes <= density.MAX_NODES
        ):
            raise ValueError(
                f"num_nodes must be an int from 2 to {density.MAX_NODES}, got {num_nodes!r}"
            )
        if len(loc.shape) == 0:
            raise ValueError("loc must have at least one axis (the K vertices), got a 0-d array")
        dtype = _backend.compute_dtype(xp, loc.dtype, name="loc")
        loc = loc if loc.dtype == dtype else xp.astype(loc, dtype)
        if isinstance(scale, (int, float)) and not isinstance(scale, bool):
            scale = xp.full_like(loc, float(scale))
        elif scale.dtype != dtype:
            scale = xp.astype(scale, dtype)
        try:
            _backend.broadcast_shapes(tuple(loc.shape), tuple(scale.shape))
        except ValueError:
            raise ValueError(
                f"scale of shape {tuple(scale.shape)} does not broadcast against loc of shape "
                f"{tuple(loc.shape)}"
            ) from None
        loc, scale = xp.broadcast_arrays(loc, scale)
        self.loc, self.scale, self.num_nodes = loc, scale, num_nodes
        super().__init__(
            xp=xp,
            like=loc,
            batch_shape=tuple(loc.shape[:-1]),
            num_vertices=loc.shape[-1],
            validate_args=validate_args,
        )
        if self._checks_values():
            if not bool(xp.all(xp.isfinite(loc))):
                raise ValueError("loc must be finite")
            if not bool(xp.all(xp.isfinite(scale) & (scale > 0))):
                raise ValueError("scale must be positive and finite")

    def entropy_exact(self) -> Array:
        """H⊕ in closed form for K = 2 (paper-notes §6); no closed form exists for K > 2."""
        if self.num_vertices != 2:
            raise NotImplementedError(
                "GaussianSparsemax has a closed-form entropy only for K = 2; use the Monte Carlo "
                "estimator (ma.entropy(d, method='mc', rng=..., num_samples=...))"
            )
        return density.entropy_k2(*density.bit_parameters(self.loc, self.scale))

    def _rsample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        shape = (*sample_shape, *self.batch_shape, self.num_vertices)
        noise = random.normal(rng, shape, like=self.loc)
        return sparsemax(self.loc + self.scale * noise, validate_args=False)

    def _sample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        return self._rsample(rng, sample_shape)

    @property
    def _log_prob_width(self) -> int:
        """K × nodes: the Gauss–Hermite rule evaluates Φ at every node for every vertex."""
        return self.num_vertices if self.num_vertices == 2 else self.num_vertices * self.num_nodes

    def _log_prob(self, y: Array) -> Array:
        if self.num_vertices == 2:  # closed form of the bit (paper-notes §6)
            mu, s = density.bit_parameters(self.loc, self.scale)
            return density.log_prob_k2(mu, s, y[..., 0])
        return density.log_prob(self.loc, self.scale, y, num_nodes=self.num_nodes)

    def _face_log_prob(self, mask: Array) -> Array:
        xp = self._xp
        size = xp.sum(xp.astype(mask, self.dtype), axis=-1, keepdims=True)
        if self._checks_values(mask) and self.num_vertices > 2 and bool(xp.any(size > 1)):
            raise NotImplementedError(
                "GaussianSparsemax.face_log_prob is exact only for vertices (and for K = 2); "
                "estimate the probability of a larger face by Monte Carlo, as its frequency "
                "among faces.support(d.sample(rng, (n,)))"
            )
        # At a vertex the density is the point mass: log P(Y = e_i) = log p(e_i).
        vertex = xp.where(mask, xp.ones_like(size), xp.zeros_like(size)) / xp.where(
            size > 0, size, xp.ones_like(size)
        )
        vertex = xp.where(size > 0, vertex, xp.full_like(vertex, 1.0 / self.num_vertices))
        log_vertex = self._log_prob(vertex)
        size = size[..., 0]
        if self.num_vertices == 2:
            log_vertex = xp.where(size == 2, self._log_edge_k2(), log_vertex)
        else:
            log_vertex = xp.where(size == 1, log_vertex, xp.full_like(log_vertex, math.nan))
        return xp.where(size > 0, log_vertex, xp.full_like(log_vertex, -math.inf))

    def _log_edge_k2(self) -> Array:
        """``log P(0 < Y₁ < 1) = log(1 − P(Y = e₁) − P(Y = e₂))`` for K = 2."""
        xp = self._xp
        mu, s = density.bit_parameters(self.loc, self.scale)
        zero, one = xp.zeros_like(mu), xp.ones_like(mu)
        p0 = xp.exp(density.log_prob_k2(mu, s, zero))
        p1 = xp.exp(density.log_prob_k2(mu, s, one))
        return xp.log1p(-(p0 + p1))
