r"""Hard Concrete (Louizos et al., 2018) as a mixed distribution on the 1-simplex.

The point is :math:`(y, 1 - y)` (event shape ``(2,)``); the gate is ``y[..., 0]``.  With
location :math:`\log\alpha` (``logits``), temperature :math:`\beta` and stretch
:math:`(\gamma, \zeta)` (``low``, ``high``):

.. math::

    s = \sigma\big((\operatorname{logit} u + \log\alpha)/\beta\big),\quad u \sim U(0, 1),
    \qquad y = \operatorname{clip}(\gamma + (\zeta - \gamma)s, 0, 1).

The CDF of the Binary Concrete ``s`` is :math:`Q(x) = \sigma(\beta\operatorname{logit}(x) -
\log\alpha)`, so (paper-notes §8)

* :math:`P(y = 0) = \sigma(\beta\log(-\gamma/\zeta) - \log\alpha)`,
* :math:`P(y = 1) = \sigma(\log\alpha - \beta\log((1-\gamma)/(\zeta-1)))`,
* on the open edge, :math:`p(y) = q((y-\gamma)/(\zeta-\gamma))/(\zeta-\gamma)` with
  :math:`q(s) = \beta\,\sigma(x)\sigma(-x)/(s(1-s))`, :math:`x = \beta\operatorname{logit}(s) -
  \log\alpha` (the same function as :math:`\beta\alpha s^{-\beta-1}(1-s)^{-\beta-1}/(\alpha
  s^{-\beta} + (1-s)^{-\beta})^2`, written with log-sigmoids so that nothing is clamped).

``log_prob`` is the log density w.r.t. the direct-sum measure (counting measure on the two
vertices, Lebesgue measure of length 1 on the edge).  Everything is pure array-API code.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from mixedarray import _backend, _special, random
from mixedarray._backend import array_namespace
from mixedarray.distributions.base import Distribution

__all__ = ["HardConcrete", "log_sigmoid"]

Array = Any

#: Default composite Gauss–Legendre rule of :meth:`HardConcrete.entropy_exact`: panels × nodes.
ENTROPY_PANELS = 8
ENTROPY_NODES_PER_PANEL = 16


def log_sigmoid(xp: Any, x: Array) -> Array:
    """``log σ(x) = min(x, 0) − log1p(exp(−|x|))``: finite value and gradient for every finite x."""
    return xp.minimum(x, xp.zeros_like(x)) - xp.log1p(xp.exp(-xp.abs(x)))


@lru_cache(maxsize=8)
def _composite_legendre(panels: int, per_panel: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes in [0, 1] and weights (summing to 1) of a composite Gauss–Legendre rule (host)."""
    import numpy as np  # host constant table only; imported lazily

    x, w = np.polynomial.legendre.leggauss(per_panel)
    nodes = [(p + (xi + 1) / 2) / panels for p in range(panels) for xi in x]
    weights = [wi / (2 * panels) for _ in range(panels) for wi in w]
    return tuple(float(v) for v in nodes), tuple(float(v) for v in weights)


def as_parameter(xp: Any, value: Any, like: Array, dtype: Any, name: str) -> Array:
    """A float or array parameter as an array of ``like``'s library, in ``dtype``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or an array, got a bool")
    if isinstance(value, (int, float)):
        return xp.full((), float(value), dtype=dtype, device=_backend.device(like))
    if _backend.library_name(value) != _backend.library_name(like):
        raise TypeError(
            f"{name} is a {_backend.library_name(value)} array but logits is a "
            f"{_backend.library_name(like)} array"
        )
    if not (_backend.is_floating(xp, value.dtype) or xp.isdtype(value.dtype, "integral")):
        raise TypeError(f"{name} must be a real array, got dtype {value.dtype}")
    return value if value.dtype == dtype else xp.astype(value, dtype)


class HardConcrete(Distribution):
    r"""Hard Concrete gate ``y = clip(γ + (ζ − γ) s, 0, 1)`` on the 1-simplex, event ``(y, 1 − y)``.

    Parameters
    ----------
    logits : array
        :math:`\log\alpha`, the location; ``batch_shape`` is its shape broadcast with the other
        parameters.  ``±inf`` puts all mass on one vertex; NaN is rejected under validation.
    temperature : float or array, default 2/3
        :math:`\beta > 0`.
    low, high : float or array, default -0.1, 1.1
        The stretch :math:`\gamma < 0` and :math:`\zeta > 1`.
    validate_args : bool or None
        Check the parameter values (and points in ``log_prob``) where that costs no device sync;
        Python-float parameters are always checked.

    Notes
    -----
    Vertex ``e_1 = (1, 0)`` is the open gate ``y = 1``; ``e_2 = (0, 1)`` is the closed gate
    ``y = 0``.  ``face_log_prob`` gives ``log P(y = 1)``, ``log P(y = 0)`` and, for the full
    mask, the log interior mass :math:`\log(\sigma(x_1) - \sigma(x_0))` computed as
    :math:`\log\sigma(x_1) + \log\sigma(-x_0) + \log(1 - e^{x_0 - x_1})`.
    ``rsample`` is pathwise through ``u`` (the clip has zero gradient at the vertices).
    """

    parameter_names = ("logits", "temperature", "low", "high")
    parameter_event_ndims = (0, 0, 0, 0)
    has_rsample = True

    def __init__(
        self,
        logits: Array,
        temperature: Array | float = 2 / 3,
        low: Array | float = -0.1,
        high: Array | float = 1.1,
        *,
        validate_args: bool | None = None,
    ) -> None:
        xp = array_namespace(logits, temperature, low, high)
        if type(logits) in (bool, int, float):
            raise TypeError("logits must be an array")
        dtype = _backend.compute_dtype(xp, logits.dtype, name="logits")
        logits = logits if logits.dtype == dtype else xp.astype(logits, dtype)
        params = {"temperature": temperature, "low": low, "high": high}
        for name, value in params.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                bad = {
                    "temperature": not value > 0,
                    "low": not value < 0,
                    "high": not value > 1,
                }[name]
                if bad:
                    raise ValueError(_MESSAGES[name] + f", got {value!r}")
        arrays = {n: as_parameter(xp, v, logits, dtype, n) for n, v in params.items()}
        shape = _backend.broadcast_shapes(
            tuple(logits.shape), *(tuple(a.shape) for a in arrays.values())
        )
        self.logits = xp.broadcast_to(logits, shape)
        self.temperature = xp.broadcast_to(arrays["temperature"], shape)
        self.low = xp.broadcast_to(arrays["low"], shape)
        self.high = xp.broadcast_to(arrays["high"], shape)
        super().__init__(
            xp=xp,
            like=self.logits,
            batch_shape=shape,
            num_vertices=2,
            validate_args=validate_args,
        )
        if self._checks_values():
            if bool(xp.any(xp.isnan(self.logits))):
                raise ValueError("logits contains NaN")
            checks = {
                "temperature": self.temperature > 0,
                "low": self.low < 0,
                "high": self.high > 1,
            }
            for name, ok in checks.items():
                if not bool(xp.all(ok)):
                    raise ValueError(_MESSAGES[name])

    # -- closed forms ---------------------------------------------------------------------------

    def _edge_logits(self) -> tuple[Array, Array]:
        """``(t0, t1) = (log(−γ/ζ), log((1−γ)/(ζ−1)))``: logit(s) at y = 0 and y = 1."""
        xp = self._xp
        t0 = xp.log(-self.low) - xp.log(self.high)
        t1 = xp.log1p(-self.low) - xp.log(self.high - 1)
        return t0, t1

    def log_prob_zero(self) -> Array:
        """``log P(y = 0)`` (closed gate), shape ``batch_shape``."""
        t0, _ = self._edge_logits()
        return log_sigmoid(self._xp, self.temperature * t0 - self.logits)

    def log_prob_one(self) -> Array:
        """``log P(y = 1)`` (open gate), shape ``batch_shape``."""
        _, t1 = self._edge_logits()
        return log_sigmoid(self._xp, self.logits - self.temperature * t1)

    def log_prob_interior(self) -> Array:
        """``log P(0 < y < 1)``, shape ``batch_shape``."""
        xp = self._xp
        t0, t1 = self._edge_logits()
        x0 = self.temperature * t0 - self.logits
        x1 = self.temperature * t1 - self.logits
        gap = self.temperature * (t1 - t0)
        return log_sigmoid(xp, x1) + log_sigmoid(xp, -x0) + _special.log1mexp(gap)

    def _log_edge_density(self, t: Array) -> Array:
        """Log density on the open edge at the point whose Binary Concrete logit is ``t``."""
        xp = self._xp
        beta = self.temperature
        x = beta * t - self.logits
        return (
            log_sigmoid(xp, x)
            + log_sigmoid(xp, -x)
            + xp.log(beta)
            - log_sigmoid(xp, t)
            - log_sigmoid(xp, -t)
            - xp.log(self.high - self.low)
        )

    def entropy_exact(self, *, num_panels: int = ENTROPY_PANELS) -> Array:
        r"""``H⊕ = −P0 log P0 − P1 log P1 − ∫_0^1 p log p dy`` (nats), shape ``batch_shape``.

        The edge integral is taken in the Binary Concrete logit :math:`t = \operatorname{logit}
        s` over :math:`[t_0, t_1]`, where :math:`p\,dy = \beta\,\sigma(x)\sigma(-x)\,dt` with
        :math:`x = \beta t - \log\alpha` — an integrand analytic in a strip of half-width
        :math:`\pi/\beta` — by a composite Gauss–Legendre rule of ``num_panels`` equal panels ×
        ``ENTROPY_NODES_PER_PANEL = 16`` nodes.  Measured against ``scipy.integrate.quad``
        (epsabs 1e-14) over ``log α ∈ [−12, 12]`` and the default stretch, with the default 8
        panels (128 evaluations): largest absolute error 3e-16 for ``β ≤ 2``, 3e-15 at ``β = 5``,
        5e-11 at ``β = 10``, 2.5e-5 at ``β = 20``; with 64 panels below 1e-14 up to ``β = 20``.
        Raise ``num_panels`` roughly in proportion to β beyond β = 5.

        Parameters
        ----------
        num_panels : int, default 8
            Panels of the composite rule (a static choice: it fixes the array shapes).
        """
        xp = self._xp
        dtype, dev = self.dtype, self.device
        if isinstance(num_panels, bool) or not isinstance(num_panels, int) or num_panels < 1:
            raise ValueError(f"num_panels must be a positive int, got {num_panels!r}")
        nodes, weights = _composite_legendre(num_panels, ENTROPY_NODES_PER_PANEL)
        nodes_a = _backend.constant(xp, nodes, dtype=dtype, device=dev)
        weights_a = _backend.constant(xp, weights, dtype=dtype, device=dev)
        t0, t1 = self._edge_logits()
        width = (t1 - t0)[..., None]
        t = t0[..., None] + width * nodes_a
        beta = self.temperature[..., None]
        x = beta * t - self.logits[..., None]
        log_w = log_sigmoid(xp, x) + log_sigmoid(xp, -x)  # p dy = beta σ(x)σ(−x) dt
        log_p = (
            log_w
            + xp.log(beta)
            - log_sigmoid(xp, t)
            - log_sigmoid(xp, -t)
            - xp.log(self.high - self.low)[..., None]
        )
        mass = beta * width * weights_a * xp.exp(log_w)
        terms = mass * xp.where(mass > 0, log_p, xp.zeros_like(log_p))
        interior = xp.sum(terms, axis=-1)
        return _neg_xlogx(xp, self.log_prob_zero()) + _neg_xlogx(xp, self.log_prob_one()) - interior

    def kl_divergence_to_uniform_bit(self, *, num_panels: int = ENTROPY_PANELS) -> Array:
        """``KL⊕(p ‖ MaxEntMixed(2)) = log 3 − H⊕`` (nats), shape ``batch_shape``.

        ``MaxEntMixed(2)`` has the constant density 1/3 w.r.t. the direct-sum measure; the
        entropy is :meth:`entropy_exact` with ``num_panels``.
        """
        return math.log(3) - self.entropy_exact(num_panels=num_panels)

    # -- distribution API -----------------------------------------------------------------------

    def _rsample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        xp = self._xp
        u = random.uniform(rng, (*sample_shape, *self.batch_shape), like=self.logits)
        logit_u = xp.log(u) - xp.log1p(-u)
        s = xp.exp(log_sigmoid(xp, (logit_u + self.logits) / self.temperature))
        gate = xp.clip(self.low + (self.high - self.low) * s, 0.0, 1.0)
        return xp.stack([gate, 1 - gate], axis=-1)

    def _sample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        return self._rsample(rng, sample_shape)

    def _log_prob(self, y: Array) -> Array:
        xp = self._xp
        gate, rest = y[..., 0], y[..., 1]
        closed = gate == 0
        opened = rest == 0
        interior = xp.logical_not(xp.logical_or(closed, opened))
        safe = xp.where(interior, gate, xp.full_like(gate, 0.5))
        t = xp.log(safe - self.low) - xp.log(self.high - safe)
        edge = self._log_edge_density(t)
        vertex = xp.where(opened, self.log_prob_one(), self.log_prob_zero())
        return xp.where(interior, edge, vertex)

    def _face_log_prob(self, mask: Array) -> Array:
        xp = self._xp
        first, second = mask[..., 0], mask[..., 1]
        both = xp.logical_and(first, second)
        value = xp.where(
            both,
            self.log_prob_interior(),
            xp.where(first, self.log_prob_one(), self.log_prob_zero()),
        )
        empty = xp.logical_not(xp.logical_or(first, second))
        return xp.where(empty, xp.full_like(value, -math.inf), value)


def _neg_xlogx(xp: Any, log_p: Array) -> Array:
    """``−p log p`` from ``log p`` (0 where ``p = 0``)."""
    p = xp.exp(log_p)
    return -p * xp.where(p > 0, log_p, xp.zeros_like(log_p))


_MESSAGES = {
    "temperature": "temperature must be > 0",
    "low": "low (the stretch γ) must be < 0",
    "high": "high (the stretch ζ) must be > 1",
}
