r"""Relaxed baselines: Gumbel-Softmax (Concrete), its straight-through variant, K-D Hard Concrete.

**Gumbel-Softmax / Concrete** (Jang et al. 2017; Maddison et al. 2017):
:math:`Y = \operatorname{softmax}((\ell + G)/\tau)`, :math:`G_k` iid standard Gumbel.  All its
mass lies in the relative interior of the simplex, where its density w.r.t. the free coordinates
(the direct-sum measure on the full face, paper-notes §2, §8) is

.. math::

    \log p(y) = \log\Gamma(K) + (K-1)\log\tau + \sum_k (\ell_k - (\tau+1)\log y_k)
                - K \operatorname{logsumexp}_k(\ell_k - \tau\log y_k).

**Straight-through** (``hard=True``): the forward value is the vertex
:math:`e_{\arg\max(\ell + G)}` and the gradient is that of the relaxed sample, written
``y_hard + (y_soft − stop_gradient(y_soft))`` (the same gradient as the usual ``y_hard −
stop_gradient(y_soft) + y_soft``, but the forward value is exactly one-hot).  The law of the
forward value is the categorical :math:`\operatorname{softmax}(\ell)` on the vertices (the
Gumbel-max trick), so ``log_prob(e_i) = log softmax(ℓ)_i`` and ``-inf`` off the vertices.

**K-D Hard Concrete** (the authors' baseline): :math:`Y = \operatorname{sparsemax}(\lambda\cdot
\mathrm{GS}_\tau(\ell))` with a stretch λ > 1.  For K = 2 it is exactly
:class:`~mixedarray.distributions.hard_concrete.HardConcrete` with :math:`\log\alpha = \ell_1 -
\ell_2`, :math:`\beta = \tau`, :math:`(\gamma, \zeta) = (-(\lambda-1)/2, (\lambda+1)/2)`; for
K > 2 it has no tractable density.
"""

from __future__ import annotations

import math
from typing import Any

from mixedarray import _backend, random
from mixedarray._backend import array_namespace
from mixedarray.distributions.base import Distribution, cached_property
from mixedarray.distributions.hard_concrete import HardConcrete, as_parameter
from mixedarray.projections import softmax, sparsemax

__all__ = ["GumbelSoftmax", "KDHardConcrete"]

Array = Any


def _logsumexp(xp: Any, z: Array) -> Array:
    """``logsumexp`` over the last axis (rows must have a finite maximum)."""
    top = xp.max(z, axis=-1, keepdims=True)
    return xp.log(xp.sum(xp.exp(z - top), axis=-1)) + top[..., 0]


def _check_logits(xp: Any, logits: Array) -> None:
    if bool(xp.any(xp.isnan(logits))):
        raise ValueError("logits contains NaN")
    if bool(xp.any(logits == math.inf)):
        raise ValueError("logits contains +inf")
    if logits.shape[-1] and not bool(xp.all(xp.any(logits > -math.inf, axis=-1))):
        raise ValueError("logits has a row of all -inf (no vertex has positive probability)")


def _prepare(
    logits: Array, temperature: Array | float, validate_args: bool | None
) -> tuple[Any, Array, Array]:
    """Common checks: ``(xp, logits, temperature)`` broadcast to ``batch + (K,)`` / ``batch``."""
    xp = array_namespace(logits, temperature)
    if isinstance(logits, (bool, int, float)) or len(logits.shape) == 0:
        raise ValueError("logits must be an array with at least one axis (the K vertices)")
    if logits.shape[-1] < 1:
        raise ValueError("logits must have K >= 1 entries on its last axis")
    is_number = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if is_number and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    dtype = _backend.compute_dtype(xp, logits.dtype, name="logits")
    logits = logits if logits.dtype == dtype else xp.astype(logits, dtype)
    temperature = as_parameter(xp, temperature, logits, dtype, "temperature")
    batch = _backend.broadcast_shapes(tuple(logits.shape[:-1]), tuple(temperature.shape))
    return (
        xp,
        xp.broadcast_to(logits, (*batch, logits.shape[-1])),
        xp.broadcast_to(temperature, batch),
    )


class GumbelSoftmax(Distribution):
    r"""Gumbel-Softmax (Concrete) ``softmax((ℓ + G)/τ)``; ``hard=True`` is straight-through.

    Parameters
    ----------
    logits : array, shape ``batch + (K,)``
        ℓ.  NaN, ``+inf`` and rows of all ``-inf`` are rejected under validation.
    temperature : float or array broadcastable to ``batch``
        τ > 0 (always checked for a Python float; for an array under validation).
    hard : bool, default False
        Straight-through: one-hot forward value, relaxed gradient.
    validate_args : bool or None
        See :class:`~mixedarray.distributions.base.Distribution`.

    Notes
    -----
    ``hard=False``: ``log_prob`` is the Concrete density (above) in ri Δ and ``-inf`` on every
    lower face (where the relaxed sample never lies in exact arithmetic; a sample whose softmax
    underflowed to an exact 0, possible for small τ, scores ``-inf``); ``face_log_prob`` is 0
    for the full face and ``-inf`` elsewhere.  ``hard=True``: the forward value is
    categorical(softmax ℓ) on the vertices; ``log_prob`` and ``face_log_prob`` are
    ``log softmax(ℓ)_i`` at vertex i and ``-inf`` elsewhere.
    """

    parameter_names = ("logits", "temperature")
    parameter_event_ndims = (1, 0)
    static_names = ("hard",)
    has_rsample = True

    def __init__(
        self,
        logits: Array,
        temperature: Array | float,
        hard: bool = False,
        *,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(hard, bool):
            raise TypeError(f"hard must be a bool, got {type(hard).__name__}")
        xp, logits, temperature = _prepare(logits, temperature, validate_args)
        self.logits, self.temperature, self.hard = logits, temperature, hard
        super().__init__(
            xp=xp,
            like=logits,
            batch_shape=tuple(temperature.shape),
            num_vertices=logits.shape[-1],
            validate_args=validate_args,
        )
        if self._checks_values():
            _check_logits(xp, logits)
            if not bool(xp.all(temperature > 0)):
                raise ValueError("temperature must be > 0")

    def log_softmax(self) -> Array:
        """``log softmax(ℓ)``, the vertex probabilities of the straight-through sample."""
        return self.logits - _logsumexp(self._xp, self.logits)[..., None]

    # -- distribution API -----------------------------------------------------------------------

    def _relaxed(self, rng: Any, sample_shape: tuple[int, ...]) -> tuple[Array, Array]:
        """``(ℓ + G, softmax((ℓ + G)/τ))``."""
        shape = (*sample_shape, *self.batch_shape, self.num_vertices)
        scores = self.logits + random.gumbel(rng, shape, like=self.logits)
        return scores, softmax(scores / self.temperature[..., None], validate_args=False)

    def _rsample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        xp = self._xp
        scores, soft = self._relaxed(rng, sample_shape)
        if not self.hard:
            return soft
        index = xp.argmax(scores, axis=-1, keepdims=True)
        vertices = xp.arange(self.num_vertices, device=self.device)
        one_hot = xp.astype(vertices == xp.astype(index, vertices.dtype), soft.dtype)
        # Forward: exactly one_hot (soft - soft == 0); gradient: that of the relaxed sample.
        return one_hot + (soft - _backend.stop_gradient(soft))

    def _sample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        return self._rsample(rng, sample_shape)

    def _vertex_log_prob(self, support: Array) -> Array:
        """``log softmax(ℓ)_i`` where ``support`` is the single vertex i, else ``-inf``."""
        xp = self._xp
        log_p = self.log_softmax()
        size = xp.sum(xp.astype(support, xp.int32), axis=-1)
        picked = xp.sum(xp.where(support, log_p, xp.zeros_like(log_p)), axis=-1)
        return xp.where(size == 1, picked, xp.full_like(picked, -math.inf))

    def _log_prob(self, y: Array) -> Array:
        xp = self._xp
        if self.hard:
            return self._vertex_log_prob(y > 0)
        K = self.num_vertices
        tau = self.temperature
        inside = xp.all(y > 0, axis=-1)
        safe = xp.where(inside[..., None], y, xp.full_like(y, 1.0 / K))
        log_y = xp.log(safe)
        constant = math.lgamma(K) + (K - 1) * xp.log(tau)
        value = (
            constant
            + xp.sum(self.logits - (tau[..., None] + 1) * log_y, axis=-1)
            - K * _logsumexp(xp, self.logits - tau[..., None] * log_y)
        )
        return xp.where(inside, value, xp.full_like(value, -math.inf))

    def _face_log_prob(self, mask: Array) -> Array:
        xp = self._xp
        if self.hard:
            return self._vertex_log_prob(mask)
        full = xp.all(mask, axis=-1)
        zero = xp.zeros_like(self.temperature)
        return xp.where(full, zero, xp.full_like(zero, -math.inf))


class KDHardConcrete(Distribution):
    r"""K-D Hard Concrete: ``sparsemax(scale · softmax((ℓ + G)/τ))``.

    Parameters
    ----------
    logits : array, shape ``batch + (K,)``
        ℓ of the underlying Gumbel-Softmax.
    temperature : float or array broadcastable to ``batch``
        τ > 0.
    scale : float or array broadcastable to ``batch``, default 1.2
        The stretch λ > 1 (λ ≤ 1 never leaves the interior of the simplex).  The authors'
        default is 1.2, which for K = 2 is the Hard Concrete stretch (−0.1, 1.1).
    validate_args : bool or None
        See :class:`~mixedarray.distributions.base.Distribution`.

    Notes
    -----
    ``rsample`` is pathwise (through the softmax and the sparsemax).  For K = 2, ``log_prob``,
    ``face_log_prob`` and ``entropy_exact`` are those of :meth:`as_hard_concrete`.  For K > 2
    there is no tractable density: they raise ``NotImplementedError``; estimate what you need
    by Monte Carlo from ``sample`` (e.g. face frequencies of ``faces.support(d.sample(rng,
    (n,)))``).
    """

    parameter_names = ("logits", "temperature", "scale")
    parameter_event_ndims = (1, 0, 0)
    has_rsample = True

    def __init__(
        self,
        logits: Array,
        temperature: Array | float,
        scale: Array | float = 1.2,
        *,
        validate_args: bool | None = None,
    ) -> None:
        if isinstance(scale, (int, float)) and not isinstance(scale, bool) and not scale > 1:
            raise ValueError(f"scale must be > 1 (λ ≤ 1 never leaves ri Δ), got {scale!r}")
        xp, logits, temperature = _prepare(logits, temperature, validate_args)
        scale = as_parameter(xp, scale, logits, logits.dtype, "scale")
        batch = _backend.broadcast_shapes(tuple(temperature.shape), tuple(scale.shape))
        K = logits.shape[-1]
        self.logits = xp.broadcast_to(logits, (*batch, K))
        self.temperature = xp.broadcast_to(temperature, batch)
        self.scale = xp.broadcast_to(scale, batch)
        super().__init__(
            xp=xp,
            like=self.logits,
            batch_shape=batch,
            num_vertices=K,
            validate_args=validate_args,
        )
        if self._checks_values():
            _check_logits(xp, self.logits)
            if not bool(xp.all(self.temperature > 0)):
                raise ValueError("temperature must be > 0")
            if not bool(xp.all(self.scale > 1)):
                raise ValueError("scale must be > 1 (λ ≤ 1 never leaves ri Δ)")

    @cached_property
    def _gumbel_softmax(self) -> GumbelSoftmax:
        return GumbelSoftmax(self.logits, self.temperature, validate_args=False)

    def as_hard_concrete(self) -> HardConcrete:
        """For K = 2: the equal :class:`HardConcrete` (log α = ℓ₁ − ℓ₂, β = τ, γ, ζ = ∓(λ∓1)/2)."""
        self._require_two("as_hard_concrete")
        # Slices, not integer indices: NumPy would turn a 0-d difference into a scalar.
        difference = self.logits[..., 0:1] - self.logits[..., 1:2]
        return HardConcrete(
            self._xp.reshape(difference, self.batch_shape),
            self.temperature,
            -(self.scale - 1) / 2,
            (self.scale + 1) / 2,
            validate_args=False,
        )

    def entropy_exact(self, **kwargs: Any) -> Array:
        """For K = 2: :meth:`HardConcrete.entropy_exact`; K > 2: ``NotImplementedError``."""
        self._require_two("entropy_exact")
        return self.as_hard_concrete().entropy_exact(**kwargs)

    def _require_two(self, what: str) -> None:
        if self.num_vertices != 2:
            raise NotImplementedError(
                f"KDHardConcrete.{what} is available only for K = 2 (where it is Hard "
                f"Concrete); for K = {self.num_vertices} there is no tractable density: "
                "estimate it by Monte Carlo from d.sample(rng, (n,)) (e.g. face frequencies "
                "of mixedarray.faces.support(sample))"
            )

    # -- distribution API -----------------------------------------------------------------------

    def _rsample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        soft = self._gumbel_softmax._rsample(rng, sample_shape)
        return sparsemax(self.scale[..., None] * soft, validate_args=False)

    def _sample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        return self._rsample(rng, sample_shape)

    def _log_prob(self, y: Array) -> Array:
        self._require_two("log_prob")
        return self.as_hard_concrete()._log_prob(y)

    def _face_log_prob(self, mask: Array) -> Array:
        self._require_two("face_log_prob")
        return self.as_hard_concrete()._face_log_prob(mask)
