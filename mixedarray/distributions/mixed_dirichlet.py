r"""``MixedDirichlet``, the intrinsic mixed distribution: a random face, then a Dirichlet on it.

.. math:: p(y) = P_F(f)\,\mathrm{Dir}(y_f; \alpha_f), \qquad f = \operatorname{supp} y,

w.r.t. the direct-sum measure (paper-notes §2, §7).  The face ``F`` follows
:class:`~mixedarray.distributions.nonempty_bernoulli.NonEmptyBernoulli` (independent
Bernoulli(σ(η_k)) per vertex, conditioned on a non-empty face; closed forms in
:mod:`.face_bernoulli`); given ``F = f`` the point is ``Dir(α_f)`` on the face, in free
coordinates (its standard density), and exactly 0 off the face.

Exact information (paper-notes §4, §7):

.. math:: H_\oplus = H(F) + \sum_f P_F(f)\,h(\mathrm{Dir}(\alpha_f)), \qquad
          \mathrm{KL}_\oplus(p\|q) = \mathrm{KL}(P_F\|Q_F)
          + \sum_f P_F(f)\,\mathrm{KL}(\mathrm{Dir}(\alpha_f)\|\mathrm{Dir}(\beta_f)).

The sum over faces is exact in two ways: for *symmetric* concentrations (equal within each row)
the per-face term depends on ``|f|`` only and the sum is ``Σ_n P(|F| = n)·value_n`` (an
``O(K²)`` recursion, any K); otherwise the ``2^K − 1`` faces are enumerated in chunks (K ≤ 20).
The enumeration splits the vertices into two halves: every per-face quantity is a sum over the
face's vertices, so it is an outer sum of two tables of ``2^{K/2}`` half-faces, and each chunk
costs ``O(faces)`` rather than ``O(K·faces)`` — no Python loop over faces.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from mixedarray import _backend, _special, random
from mixedarray._backend import array_namespace
from mixedarray.distributions import face_bernoulli
from mixedarray.distributions.base import Distribution
from mixedarray.distributions.nonempty_bernoulli import NonEmptyBernoulli

__all__ = ["MixedDirichlet"]

Array = Any

#: Largest K for which the faces are enumerated (asymmetric concentrations).
MAX_ENUMERATED_K = 20

#: Elements (batch rows × faces) per chunk of the enumeration: bounds its memory.
_CHUNK_ELEMENTS = 2**18


class MixedDirichlet(Distribution):
    r"""Mixed Dirichlet: ``F ~ NonEmptyBernoulli(face_logits)``, then ``Y_F ~ Dir(α_F)``.

    Parameters
    ----------
    face_logits : array, shape ``batch + (K,)``
        η, the face logits: vertex k is in the face with odds :math:`e^{\eta_k}` before the
        conditioning on a non-empty face; ``-inf`` excludes a vertex.  NaN is rejected under
        validation.
    concentration : array, broadcastable with ``face_logits``
        α > 0, the Dirichlet concentrations of the vertices (finite).
    validate_args : bool or None
        Check ``concentration > 0`` and finite, ``face_logits`` not NaN (and points in
        ``log_prob``) where that costs no device sync; see
        :class:`~mixedarray.distributions.base.Distribution`.

    Notes
    -----
    The parameters are broadcast together; float16/bfloat16 parameters are stored (and
    computed) in float32, float64 stays float64, integers use the library's default floating
    dtype.

    ``log_prob(y) = log P_F(f) + lgamma(α_0) − Σ_f lgamma(α_i) + Σ_f (α_i − 1) log y_i`` with
    ``f = supp y`` and ``α_0 = Σ_f α_i`` (the Dirichlet term is 0 at a vertex).

    ``rsample`` is pathwise w.r.t. ``concentration`` only (through the implicit
    reparameterisation of the Gamma draws on PyTorch and JAX).  The face is discrete and has
    no pathwise gradient: ``face_logits`` get none from ``rsample``.  Differentiate
    ``E[g(Y)]`` w.r.t. ``face_logits`` with the score function, ``∇_η log P_F(f) = f − m``
    (``m = self.face_distribution.marginals()``): :func:`mixedarray.expectation_surrogate`
    (:mod:`mixedarray.gradients`) builds the unbiased estimator, pathwise for ``Y | F`` plus
    ``(g(y) − b)·∇_η face_log_prob(supp y)`` with a leave-one-out or self-critic baseline.

    Sampling works in log space, ``log G = log G' + log(U)/α`` with ``G' ~ Gamma(α + 1)`` and
    ``U ~ U(0, 1)`` (so ``G ~ Gamma(α)``), ``Y_f = softmax(log G_f)``, with on-face entries
    clamped to at least the dtype's smallest normal number: even for tiny α in float32 the
    support of every sample is exactly the drawn face (plain Gamma draws underflow to 0 and
    would silently move ``y`` to a smaller face).
    """

    parameter_names = ("face_logits", "concentration")
    parameter_event_ndims = (1, 1)
    has_rsample = True
    has_discrete_face = True

    def __init__(
        self,
        face_logits: Array,
        concentration: Array,
        *,
        validate_args: bool | None = None,
    ) -> None:
        xp = array_namespace(face_logits, concentration)
        for name, x in (("face_logits", face_logits), ("concentration", concentration)):
            if len(x.shape) == 0:
                raise ValueError(f"{name} must have at least one axis (the K vertices)")
        if face_logits.shape[-1] == 0:
            raise ValueError("face_logits must have K >= 1 entries on its last axis")
        dtype = xp.result_type(
            _backend.compute_dtype(xp, face_logits.dtype, name="face_logits"),
            _backend.compute_dtype(xp, concentration.dtype, name="concentration"),
        )
        try:
            _backend.broadcast_shapes(tuple(face_logits.shape), tuple(concentration.shape))
        except ValueError:
            raise ValueError(
                f"concentration of shape {tuple(concentration.shape)} does not broadcast "
                f"against face_logits of shape {tuple(face_logits.shape)}"
            ) from None
        face_logits = face_logits if face_logits.dtype == dtype else xp.astype(face_logits, dtype)
        if concentration.dtype != dtype:
            concentration = xp.astype(concentration, dtype)
        if tuple(face_logits.shape) != tuple(concentration.shape):
            face_logits, concentration = xp.broadcast_arrays(face_logits, concentration)
        if face_logits.shape[-1] == 0:
            raise ValueError("face_logits must have K >= 1 entries on its last axis")
        self.face_logits = face_logits
        self.concentration = concentration
        super().__init__(
            xp=xp,
            like=face_logits,
            batch_shape=tuple(face_logits.shape[:-1]),
            num_vertices=face_logits.shape[-1],
            validate_args=validate_args,
        )
        if self._checks_values():
            if bool(xp.any(xp.isnan(face_logits))):
                raise ValueError("face_logits contains NaN")
            if not bool(xp.all(xp.isfinite(concentration) & (concentration > 0))):
                raise ValueError("concentration must be positive and finite")

    # -- face distribution ----------------------------------------------------------------------

    @property
    def face_distribution(self) -> NonEmptyBernoulli:
        """The law of the face ``F = supp Y``: ``NonEmptyBernoulli(face_logits)``."""
        return NonEmptyBernoulli(self.face_logits, validate_args=False)

    # -- sampling -------------------------------------------------------------------------------

    def _draw(
        self, rng: Any, sample_shape: tuple[int, ...], face_logits: Array, concentration: Array
    ) -> Array:
        xp = self._xp
        shape = (*sample_shape, *self.batch_shape, self.num_vertices)
        rng_face, rng_gamma, rng_uniform = random.split(rng, 3, like=face_logits)
        mask = face_bernoulli.sample(face_logits, rng_face, sample_shape)
        info = xp.finfo(self.dtype)
        tiny = float(info.smallest_normal)
        # G = G' U^{1/α} ~ Gamma(α) with G' ~ Gamma(α + 1): G' (shape ≥ 1) does not underflow,
        # and log U / α is finite however small α is.  Both factors are differentiable in α.
        boosted = random.gamma(rng_gamma, concentration + 1, shape)
        log_u = xp.log(random.uniform(rng_uniform, shape, like=concentration))
        log_g = xp.log(xp.clip(boosted, min=tiny)) + log_u / concentration
        log_g = xp.clip(log_g, min=-float(info.max))
        zero = xp.zeros_like(log_g)
        top = xp.max(xp.where(mask, log_g, xp.full_like(log_g, -math.inf)), axis=-1, keepdims=True)
        # Softmax over the face, "double where": off-face entries never reach exp.
        shifted = xp.where(mask, log_g - top, zero)
        weights = xp.where(mask, xp.exp(shifted), zero)
        y = weights / xp.sum(weights, axis=-1, keepdims=True)
        return xp.where(mask, xp.clip(y, min=tiny), zero)

    def _sample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        return self._draw(
            rng,
            sample_shape,
            _backend.stop_gradient(self.face_logits),
            _backend.stop_gradient(self.concentration),
        )

    def _rsample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        # The face is drawn without gradient (discrete); the point on it is pathwise in α.
        return self._draw(
            rng, sample_shape, _backend.stop_gradient(self.face_logits), self.concentration
        )

    # -- densities ------------------------------------------------------------------------------

    def _log_prob(self, y: Array) -> Array:
        xp = self._xp
        mask = y > 0
        face = face_bernoulli.log_prob(self.face_logits, mask)
        # log y in y's own dtype (a tiny entry must not underflow before its log is taken).
        log_y = xp.log(xp.where(mask, y, xp.ones_like(y)))
        if log_y.dtype != self.dtype:
            log_y = xp.astype(log_y, self.dtype)
        alpha = self.concentration
        zero = xp.zeros_like(log_y)
        alpha_on = xp.where(mask, alpha, zero)
        alpha_0 = xp.sum(alpha_on, axis=-1)
        size = xp.sum(xp.astype(mask, self.dtype), axis=-1)
        lg = xp.where(mask, _special.lgamma(xp.where(mask, alpha, xp.ones_like(alpha_on))), zero)
        power = xp.where(mask, (alpha - 1) * log_y, zero)
        safe_alpha_0 = xp.where(size > 0, alpha_0, xp.ones_like(alpha_0))
        dirichlet = _special.lgamma(safe_alpha_0) - xp.sum(lg, axis=-1) + xp.sum(power, axis=-1)
        dirichlet = xp.where(size > 1, dirichlet, xp.zeros_like(dirichlet))
        return face + dirichlet

    def _face_log_prob(self, mask: Array) -> Array:
        return face_bernoulli.log_prob(self.face_logits, mask)

    # -- exact information ----------------------------------------------------------------------

    def entropy_exact(self, *, symmetric: bool | None = None) -> Array:
        r"""Direct-sum entropy :math:`H_\oplus = H(F) + \sum_f P_F(f)\,h(\mathrm{Dir}(\alpha_f))`.

        ``h = Σ_f lgamma(α_i) − lgamma(α_0) + (α_0 − k)ψ(α_0) − Σ_f (α_i − 1)ψ(α_i)`` (free
        coordinates; 0 on a vertex).

        Parameters
        ----------
        symmetric : bool or None
            Which exact route to take.  ``None`` (default): the ``O(K²)`` size recursion when
            every row's concentrations are equal — checked on the host where values are
            readable without a device sync and the concentration carries no gradient (see
            below) — else enumeration of the faces.  ``True``: the recursion, trusting that
            the rows are symmetric (the mean concentration of each row is used; under
            ``jax.jit`` this is the way to get it).  ``False``: enumeration.

        Returns
        -------
        array
            Shape ``batch_shape`` (nats; may be negative).

        Raises
        ------
        NotImplementedError
            Asymmetric concentrations with K > 20: estimate by Monte Carlo instead
            (``mixedarray.entropy(d, method="mc", rng=..., num_samples=...)``, or exact
            ``H(F)`` plus a Monte Carlo average over sampled faces of the closed-form ``h``).

        Notes
        -----
        The symmetric route's value is exact; its gradient w.r.t. ``concentration`` is exact
        for the part linear in the faces' vertices but, for the ``α_0`` terms, only along the
        symmetric direction (it uses the row mean).  That is why the automatic choice takes it
        only for a concentration that does not require a gradient.
        """
        xp = self._xp
        alpha = self.concentration
        eta = self.face_logits
        head = face_bernoulli.entropy(eta)

        def per_vertex(a: Array, b: Array) -> Array:
            del b
            return _special.lgamma(a) - (a - 1) * _special.digamma(a)

        def per_total(a0: Array, b0: Array, k: Array) -> Array:
            del b0
            return -_special.lgamma(a0) + (a0 - k) * _special.digamma(a0)

        rest = self._face_expectation(
            xp, eta, alpha, alpha, per_vertex, per_total, symmetric, "entropy"
        )
        return head + rest

    def conditional_entropy(self, mask: Array) -> Array:
        r"""``h(Dir(α_f))`` of the faces ``mask`` (free coordinates; 0 on a vertex).

        ``h = Σ_f lgamma(α_i) − lgamma(α_0) + (α_0 − k)ψ(α_0) − Σ_f (α_i − 1)ψ(α_i)``; with
        :meth:`face_distribution` it gives the Rao–Blackwellised estimator
        ``H⊕ = H(F) + E_F[h(Dir(α_F))]`` (exact H(F), Monte Carlo only over faces).
        """
        xp = self._xp
        alpha = self.concentration
        zero = xp.zeros_like(alpha)
        inside = xp.where(mask, alpha, zero)
        total = xp.sum(inside, axis=-1)
        k = xp.sum(xp.astype(mask, alpha.dtype), axis=-1)
        per_vertex = _special.lgamma(alpha) - (alpha - 1) * _special.digamma(alpha)
        safe_total = xp.where(k > 0, total, xp.ones_like(total))
        h = xp.sum(xp.where(mask, per_vertex, zero), axis=-1) - _special.lgamma(safe_total)
        h = h + (safe_total - k) * _special.digamma(safe_total)
        return xp.where(k > 1, h, xp.zeros_like(h))

    def conditional_kl_divergence(self, other: MixedDirichlet, mask: Array) -> Array:
        r"""``KL(Dir(α_f) ‖ Dir(β_f))`` on the faces ``mask`` (0 on a vertex).

        ``lgamma(α_0) − Σ_f lgamma(α_i) − lgamma(β_0) + Σ_f lgamma(β_i)
        + Σ_f (α_i − β_i)(ψ(α_i) − ψ(α_0))``; with the exact face KL it gives the
        Rao–Blackwellised estimator ``KL⊕ = KL(P_F‖Q_F) + E_F[KL(Dir(α_F)‖Dir(β_F))]``.
        """
        xp = self._xp
        alpha, beta = self.concentration, other.concentration
        zero = xp.zeros_like(alpha * beta)
        k = xp.sum(xp.astype(mask, zero.dtype), axis=-1)

        def total(c: Array) -> Array:
            summed = xp.sum(xp.where(mask, c, zero), axis=-1)
            return xp.where(k > 0, summed, xp.ones_like(summed))

        a0, b0 = total(alpha), total(beta)
        terms = (
            _special.lgamma(beta)
            - _special.lgamma(alpha)
            + (alpha - beta) * (_special.digamma(alpha) - _special.digamma(a0[..., None]))
        )
        value = (
            _special.lgamma(a0) - _special.lgamma(b0) + xp.sum(xp.where(mask, terms, zero), axis=-1)
        )
        return xp.where(k > 1, value, xp.zeros_like(value))

    def cross_entropy_exact(self, other: MixedDirichlet, *, symmetric: bool | None = None) -> Array:
        r"""Direct-sum cross-entropy :math:`H_\oplus(p, q) = -E_p \log q(Y)` (nats).

        ``H(P_F, Q_F) + Σ_f P_F(f) H(Dir(α_f), Dir(β_f))`` with
        ``H(Dir α, Dir β) = Σ_f lgamma(β_i) − lgamma(β_0) − Σ_f (β_i − 1)ψ(α_i)
        + (β_0 − k)ψ(α_0)``.  ``symmetric`` as in :meth:`entropy_exact` (both distributions'
        concentrations must be symmetric for the recursion).  Shape: the broadcast of both
        batch shapes.
        """
        xp, eta_p, alpha, eta_q, beta = self._pair(other)
        head = face_bernoulli.cross_entropy(eta_p, eta_q)

        def per_vertex(a: Array, b: Array) -> Array:
            return _special.lgamma(b) - (b - 1) * _special.digamma(a)

        def per_total(a0: Array, b0: Array, k: Array) -> Array:
            return -_special.lgamma(b0) + (b0 - k) * _special.digamma(a0)

        rest = self._face_expectation(
            xp, eta_p, alpha, beta, per_vertex, per_total, symmetric, "cross_entropy"
        )
        return head + rest

    def kl_divergence_exact(self, other: MixedDirichlet, *, symmetric: bool | None = None) -> Array:
        r"""Direct-sum KL divergence :math:`\mathrm{KL}_\oplus(p \| q)` (nats, ``≥ 0``).

        ``KL(P_F‖Q_F) + Σ_f P_F(f) KL(Dir(α_f)‖Dir(β_f))`` with ``KL(Dir α‖Dir β) =
        lgamma(α_0) − Σ lgamma(α_i) − lgamma(β_0) + Σ lgamma(β_i) + Σ (α_i − β_i)(ψ(α_i) −
        ψ(α_0))``.  ``symmetric`` as in :meth:`entropy_exact`.  Rounding below 0 is clipped.
        """
        xp, eta_p, alpha, eta_q, beta = self._pair(other)
        head = face_bernoulli.kl_divergence(eta_p, eta_q)

        def per_vertex(a: Array, b: Array) -> Array:
            return -_special.lgamma(a) + _special.lgamma(b) + (a - b) * _special.digamma(a)

        def per_total(a0: Array, b0: Array, k: Array) -> Array:
            del k
            return _special.lgamma(a0) - _special.lgamma(b0) - (a0 - b0) * _special.digamma(a0)

        rest = self._face_expectation(
            xp, eta_p, alpha, beta, per_vertex, per_total, symmetric, "kl_divergence"
        )
        total = head + rest
        return xp.where(total > 0, total, xp.zeros_like(total))

    # -- helpers --------------------------------------------------------------------------------

    def _pair(self, other: Any) -> tuple[ModuleType, Array, Array, Array, Array]:
        if not isinstance(other, MixedDirichlet):
            raise TypeError(
                f"other must be a MixedDirichlet, got {type(other).__name__}; for other "
                "distributions use mixedarray.kl_divergence / cross_entropy (Monte Carlo)"
            )
        if _backend.library_name(other._like) != _backend.library_name(self._like):
            raise TypeError(
                f"other's parameters are {_backend.library_name(other._like)} arrays but this "
                f"distribution's are {_backend.library_name(self._like)} arrays"
            )
        if other.num_vertices != self.num_vertices:
            raise ValueError(
                f"other has K = {other.num_vertices} vertices, this distribution K = "
                f"{self.num_vertices}"
            )
        _backend.broadcast_shapes(self.batch_shape, other.batch_shape)
        xp = self._xp
        dtype = xp.result_type(self.dtype, other.dtype)
        arrays = [
            x if x.dtype == dtype else xp.astype(x, dtype)
            for x in (self.face_logits, self.concentration, other.face_logits, other.concentration)
        ]
        eta_p, alpha, eta_q, beta = xp.broadcast_arrays(*arrays)
        return xp, eta_p, alpha, eta_q, beta

    def _use_symmetric(
        self, xp: ModuleType, alpha: Array, beta: Array, symmetric: bool | None, what: str
    ) -> bool:
        K = self.num_vertices
        if symmetric is not None:
            if not symmetric and K > MAX_ENUMERATED_K:
                raise NotImplementedError(_too_large(what, K))
            return bool(symmetric)
        differentiable = any(bool(getattr(x, "requires_grad", False)) for x in (alpha, beta))
        checkable = self._checks_values(alpha, beta) or _backend.values_are_checkable(alpha, beta)
        if checkable and not (differentiable and K <= MAX_ENUMERATED_K):
            equal = xp.logical_and(xp.all(alpha == alpha[..., :1]), xp.all(beta == beta[..., :1]))
            if bool(equal):
                return True
        if K > MAX_ENUMERATED_K:
            raise NotImplementedError(_too_large(what, K))
        return False

    def _face_expectation(
        self,
        xp: ModuleType,
        eta: Array,
        alpha: Array,
        beta: Array,
        per_vertex: Any,
        per_total: Any,
        symmetric: bool | None,
        what: str,
    ) -> Array:
        """``Σ_f P_F(f)·v(f)``, ``v(f) = Σ_{i∈f} per_vertex(α_i, β_i) + per_total(α_0, β_0, k)``
        for faces with k ≥ 2 vertices (``v = 0`` on vertices)."""
        if self._use_symmetric(xp, alpha, beta, symmetric, what):
            return _symmetric_expectation(xp, eta, alpha, beta, per_vertex, per_total)
        return _enumerated_expectation(xp, eta, alpha, beta, per_vertex, per_total)


# ---------------------------------------------------------------------------------------------
# The two exact routes for Σ_f P_F(f)·v(f).


def _symmetric_expectation(
    xp: ModuleType, eta: Array, alpha: Array, beta: Array, per_vertex: Any, per_total: Any
) -> Array:
    """Rows with equal concentrations: ``v`` depends on ``k = |f|`` only.

    ``Σ_f P(f) Σ_{i∈f} c_i = Σ_i m_i c_i`` (exact for any α, with exact gradients), minus the
    vertices' share ``Σ_i P(F = {i}) c_i`` (``v = 0`` on a vertex), plus the ``α_0`` part
    ``Σ_{n≥2} P(|F| = n)·per_total(n a, n b, n)`` with ``a``, ``b`` the row means.
    """
    K = eta.shape[-1]
    dtype = alpha.dtype
    device = _backend.device(alpha)
    sizes = face_bernoulli.size_distribution(eta)  # P(|F| = n), n = 1..K
    marginals = face_bernoulli.marginals(eta)
    vertex_probs = xp.exp(eta - face_bernoulli.log_normalizer(eta)[..., None])  # P(F = {i})
    a = xp.mean(alpha, axis=-1, keepdims=True)
    b = xp.mean(beta, axis=-1, keepdims=True)
    n = xp.arange(1, K + 1, dtype=dtype, device=device)
    c = per_vertex(alpha, beta)
    linear = xp.sum((marginals - vertex_probs) * c, axis=-1)
    totals = per_total(n * a, n * b, n)
    return linear + xp.sum(sizes[..., 1:] * totals[..., 1:], axis=-1)


def _half_faces(xp: ModuleType, k: int, device: Any) -> Array:
    """All ``2**k`` subsets of ``k`` vertices (the empty one first), bool ``(2**k, k)``."""
    codes = xp.arange(2**k, dtype=xp.int32, device=device)
    powers = _backend.powers_of_two(xp, k, dtype=xp.int32, device=device)
    return (codes[:, None] // powers) % 2 == 1


def _half_sums(xp: ModuleType, masks: Array, values: list[Array]) -> list[Array]:
    """``Σ_{i∈f} x_i`` for each half-face ``f`` (rows of ``masks``), shape ``batch + (2**k,)``.

    ``where`` rather than a matrix product, so that ``-inf`` logits give ``-inf``, not NaN.
    """
    out = []
    for x in values:
        expanded = x[..., None, :]
        out.append(xp.sum(xp.where(masks, expanded, xp.zeros_like(expanded)), axis=-1))
    return out


def _enumerated_expectation(
    xp: ModuleType, eta: Array, alpha: Array, beta: Array, per_vertex: Any, per_total: Any
) -> Array:
    """Every non-empty face, as an outer sum over two halves of the vertices, in chunks."""
    K = eta.shape[-1]
    dtype = alpha.dtype
    device = _backend.device(alpha)
    low_k = K // 2
    high_k = K - low_k
    ones = xp.ones_like(alpha)
    per_vertex_values = [eta, alpha, beta, per_vertex(alpha, beta), ones]
    low_masks = _half_faces(xp, low_k, device)
    high_masks = _half_faces(xp, high_k, device)
    low = _half_sums(xp, low_masks, [x[..., :low_k] for x in per_vertex_values])
    high = _half_sums(xp, high_masks, [x[..., low_k:] for x in per_vertex_values])
    log_normalizer = face_bernoulli.log_normalizer(eta)[..., None, None]
    batch = math.prod(tuple(eta.shape[:-1]))
    rows = max(1, _CHUNK_ELEMENTS // (max(batch, 1) * 2**low_k))
    total = xp.zeros(tuple(eta.shape[:-1]), dtype=dtype, device=device)
    for start in range(0, 2**high_k, rows):
        stop = min(start + rows, 2**high_k)
        # Outer sums: axis -2 the low half-face, axis -1 the high half-faces of this chunk.
        energy, a0, b0, linear, k = (
            lo[..., :, None] + hi[..., None, start:stop] for lo, hi in zip(low, high, strict=True)
        )
        several = k > 1
        safe_a0 = xp.where(several, a0, xp.ones_like(a0))
        safe_b0 = xp.where(several, b0, xp.ones_like(b0))
        value = linear + per_total(safe_a0, safe_b0, k)
        value = xp.where(several, value, xp.zeros_like(value))
        # P_F(f); the empty pair (k = 0) gets exp(−A), harmless: its value is 0.
        weight = xp.exp(energy - log_normalizer)
        total = total + xp.sum(xp.sum(weight * value, axis=-1), axis=-1)
    return total


def _too_large(what: str, K: int) -> str:
    return (
        f"exact {what} of a MixedDirichlet with asymmetric concentrations enumerates the "
        f"2**K - 1 faces and is limited to K <= {MAX_ENUMERATED_K} (got K = {K}); use the "
        f"Monte Carlo estimator instead (mixedarray.{what}(..., method='mc', rng=..., "
        "num_samples=...)), or exact face terms plus a Monte Carlo average over sampled faces "
        "of the closed-form Dirichlet term"
    )
