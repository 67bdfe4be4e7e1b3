r"""``NonEmptyBernoulli``: the face distribution of the Mixed Dirichlet, as a distribution on masks.

Independent Bernoulli(σ(η_k)) draws per vertex, conditioned on at least one success:
:math:`P_F(f) = \exp(\eta \cdot f - A(\eta))` over non-empty boolean masks f.  The closed forms
and the exact parallel sampler are in :mod:`.face_bernoulli`; this class gives them the
distribution interface (events are boolean masks of shape ``batch + (K,)``).
"""

from __future__ import annotations

from typing import Any

from mixedarray import _backend
from mixedarray._backend import array_namespace
from mixedarray.distributions import face_bernoulli
from mixedarray.distributions.base import Distribution

__all__ = ["NonEmptyBernoulli"]

Array = Any


class NonEmptyBernoulli(Distribution):
    r"""Independent Bernoullis on the K vertices, conditioned on a non-empty face.

    Parameters
    ----------
    face_logits : array, shape ``batch + (K,)``
        η; vertex k is in the face with marginal odds :math:`e^{\eta_k}` before conditioning.
        ``-inf`` excludes a vertex; NaN is rejected under validation.
    validate_args : bool or None
        See :class:`~mixedarray.distributions.base.Distribution`.

    Notes
    -----
    Events are boolean masks: ``sample`` returns masks, ``log_prob(mask)`` (= ``face_log_prob``)
    is :math:`\eta\cdot f - A(\eta)` (−inf for the empty mask).  There is no pathwise gradient
    (the events are discrete); use a score-function estimator, with ``∇_η log P(f) = f − m``.
    """

    parameter_names = ("face_logits",)
    parameter_event_ndims = (1,)
    has_discrete_face = True

    def __init__(self, face_logits: Array, *, validate_args: bool | None = None) -> None:
        xp = array_namespace(face_logits)
        if len(face_logits.shape) == 0:
            raise ValueError("face_logits must have at least one axis (the K vertices)")
        if face_logits.shape[-1] == 0:
            raise ValueError("face_logits must have K >= 1 entries on its last axis")
        dtype = _backend.compute_dtype(xp, face_logits.dtype, name="face_logits")
        if face_logits.dtype != dtype and not _backend.is_floating(xp, face_logits.dtype):
            face_logits = xp.astype(face_logits, dtype)
        self.face_logits = face_logits
        super().__init__(
            xp=xp,
            like=face_logits,
            batch_shape=tuple(face_logits.shape[:-1]),
            num_vertices=face_logits.shape[-1],
            validate_args=validate_args,
        )
        if self._checks_values() and bool(xp.any(xp.isnan(face_logits))):
            raise ValueError("face_logits contains NaN")

    # -- closed forms ---------------------------------------------------------------------------

    def log_normalizer(self) -> Array:
        """A(η) = log(Π(1 + e^η) − 1), shape ``batch_shape``."""
        return face_bernoulli.log_normalizer(self.face_logits)

    def marginals(self) -> Array:
        """P(k ∈ F), shape ``batch_shape + (K,)``."""
        return face_bernoulli.marginals(self.face_logits)

    def mode(self) -> Array:
        """The most probable face: ``η > 0``, or the vertex ``argmax η`` if that is empty."""
        return face_bernoulli.mode(self.face_logits)

    def size_probs(self) -> Array:
        """``P(|F| = n)`` for n = 1..K, shape ``batch_shape + (K,)``."""
        return face_bernoulli.size_distribution(self.face_logits)

    def entropy_exact(self) -> Array:
        """Shannon entropy H(F) (nats), shape ``batch_shape``."""
        return face_bernoulli.entropy(self.face_logits)

    def cross_entropy_exact(self, other: NonEmptyBernoulli) -> Array:
        """H(P, Q) = −E_P log Q(F) (nats)."""
        return face_bernoulli.cross_entropy(self.face_logits, other.face_logits)

    def kl_divergence_exact(self, other: NonEmptyBernoulli) -> Array:
        """KL(P ‖ Q) (nats)."""
        return face_bernoulli.kl_divergence(self.face_logits, other.face_logits)

    # -- distribution API (events are masks) ----------------------------------------------------

    def log_prob(self, mask: Array) -> Array:
        """``log P(F = f)`` of boolean masks; the empty mask gives ``-inf``."""
        return self.face_log_prob(mask)

    def _face_log_prob(self, mask: Array) -> Array:
        return face_bernoulli.log_prob(self.face_logits, mask)

    def _sample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        return face_bernoulli.sample(self.face_logits, rng, sample_shape)
