r"""Unbiased gradients of expectations over mixed distributions: score-function surrogates.

Two estimators of :math:`\nabla_\theta\, E_{q_\theta}[r(Y)]` exist, and a mixed distribution may
need both (paper-notes §6, §7):

* **Pathwise** (reparameterised): ``y = d.rsample(rng)`` is a differentiable function of the
  parameters, and ``mean(r(y))`` is differentiated through it.  Low variance; unbiased when
  ``r`` is continuous (Lipschitz) in ``y`` along the sampling path.  It is what
  :class:`~mixedarray.GaussianSparsemax`, :class:`~mixedarray.HardConcrete` and the relaxed
  baselines offer: there the face is reached pathwise (a projection or a clip of continuous
  noise), so no score term is needed.
* **Score function** (REINFORCE): for a variable drawn *without* a gradient — a discrete one
  above all —

  .. math:: \nabla_\theta E_q[r(F)] = E_q[(r(F) - b)\,\nabla_\theta \log q_\theta(F)]

  for any baseline ``b`` independent of the draw ``F``.  Unbiased for any ``r``; its variance
  is what the baseline is for.

:class:`~mixedarray.MixedDirichlet` needs both: ``rsample`` draws the face
:math:`F \sim P_F` with no gradient (it is discrete) and then ``Y | F`` pathwise through the
Gamma draws, so the concentration gets a pathwise gradient but ``face_logits`` get none.
The unbiased estimate is

.. math:: \nabla E[r(Y)] \approx \frac{1}{S}\sum_s \Bigl[\nabla r(y_s)
          + (r(y_s) - b_s)\,\nabla \log P_F(\operatorname{supp} y_s)\Bigr],

scoring the face alone: scoring the full ``log_prob(y) = log P_F(f) + log Dir(y_f; α_f)``
on top of the pathwise draw would count the gradient of ``Y | F`` twice.
:func:`expectation_surrogate` builds it; :func:`score_function_surrogate` is the building
block for a hand-written estimator (any log-probability of draws made without gradient).

Both return a *surrogate objective*: an array whose value is the Monte Carlo estimate of the
expectation (log it, add it to a loss) and whose gradient, under ``torch.autograd`` or
``jax.grad``, is the unbiased gradient estimate.  On NumPy, CuPy and array-api-strict only the
value has a meaning.

Caveat (paper-notes §6).  The pathwise gradient of a Monte Carlo estimate of an *entropy or
KL* of a sample-and-project distribution (Gaussian-Sparsemax) is biased, although its value is
not: ``log p(y)`` jumps between a density and a point mass at face boundaries, and
reparameterisation ignores the boundary terms (K = 2, μ = 0.3, s = 0.7: the exact
∂H⊕/∂μ = 0.2135, the expected reparameterised gradient 0.1742).  The same holds for any ``r``
that jumps at face boundaries under a pathwise sampler.  Where closed forms exist use them:
``mixedarray.entropy(d, method="exact")``, ``mixedarray.kl_divergence(p, q)``.

References: Williams (1992) for the score function; Rennie et al. (2017) and the authors'
Mixed Dirichlet VAE for the self-critic baseline (reward of an independent re-draw); Kool,
van Hoof and Welling (2019) for the leave-one-out baseline ("REINFORCE with S samples").
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Literal

from mixedarray import _backend, faces
from mixedarray._backend import array_namespace

__all__ = ["expectation_surrogate", "score_function_surrogate"]

Array = Any
Baseline = Literal["leave-one-out", "self-critic"] | None
Score = Literal["auto", "face", "log_prob"] | None

_BASELINES = ("leave-one-out", "self-critic", None)
_SCORES = ("auto", "face", "log_prob", None)




def _check_baseline(baseline: Any) -> None:
    if baseline not in _BASELINES:
        raise ValueError(
            f"baseline must be one of 'leave-one-out', 'self-critic' or None, got {baseline!r}"
        )


def _score_term(
    xp: Any, log_prob: Array, reward: Array, baseline_value: Array | None, axis: int, loo: bool
) -> Array:
    """Zero in value; gradient ``mean_s (r_s − b_s) ∇ log q(f_s)`` along ``axis``."""
    num = log_prob.shape[axis]
    reward = _backend.stop_gradient(reward)
    if loo:
        # r_s − mean_{s'≠s} r_{s'} = S/(S−1)·(r_s − mean_{s'} r_{s'})
        mean = xp.mean(reward, axis=axis, keepdims=True)
        advantage = (reward - mean) * (num / (num - 1))
    elif baseline_value is not None:
        advantage = reward - _backend.stop_gradient(baseline_value)
    else:
        advantage = reward
    score = xp.mean(advantage * log_prob, axis=axis)
    return score - _backend.stop_gradient(score)


def score_function_surrogate(
    log_prob: Array,
    reward: Array,
    *,
    baseline: Baseline = "leave-one-out",
    baseline_reward: Array | None = None,
    axis: int = 0,
) -> Array:
    r"""Surrogate objective for the score-function (REINFORCE) gradient of ``E_q[r(F)]``.

    With S draws :math:`f_1..f_S` of ``q`` along ``axis`` (made without a gradient),
    ``log_prob[s] = log q_θ(f_s)`` (differentiable in θ) and ``reward[s] = r(f_s)``, the result
    has

    .. math:: \text{value} = \frac1S \sum_s r_s, \qquad
              \text{gradient} = \frac1S \sum_s \nabla r_s
              + \frac1S \sum_s (r_s - b_s)\,\nabla_\theta \log q_\theta(f_s),

    built as ``mean(r) + (g − stop_gradient(g))`` with ``g = mean((stop(r) − stop(b))·log q)``.
    The second sum is the score-function estimate, unbiased for any baseline ``b_s`` that is
    independent of ``f_s``:

    * ``"leave-one-out"``: :math:`b_s = \frac{1}{S-1}\sum_{s'\neq s} r_{s'}` (needs S ≥ 2).
      Equivalently the sum is :math:`\frac{1}{S-1}\sum_s (r_s - \bar r)\nabla\log q(f_s)`:
      subtracting the plain mean :math:`\bar r` (which contains :math:`r_s` itself) and
      averaging over S would shrink the estimate by :math:`(S-1)/S` — a biased estimator.
    * ``"self-critic"``: :math:`b_s` = ``baseline_reward``, the reward of independent re-draws.
    * ``None``: :math:`b_s = 0`.

    The first sum is the gradient the rewards carry themselves — zero if ``reward`` is a
    constant, and otherwise exactly the term that makes the total an unbiased estimate of
    :math:`\nabla E_q[r_\theta(F)]` (a reward with parameters of its own, or the pathwise part
    of a partly reparameterised draw).  In the score term the reward is a constant.

    Parameters
    ----------
    log_prob : array
        ``log q(f_s)`` of the S draws, differentiable w.r.t. the parameters; S along ``axis``.
    reward : array, same shape as ``log_prob``
        ``r(f_s)``.
    baseline : {"leave-one-out", "self-critic", None}, default "leave-one-out"
        The control variate ``b_s``, as above.
    baseline_reward : array, optional
        Required with ``baseline="self-critic"`` (and only there): rewards of draws independent
        of the S draws, shaped like ``reward`` (one per draw) or like ``reward`` without
        ``axis`` (one shared baseline).  Treated as a constant.
    axis : int, default 0
        The axis of the S draws.

    Returns
    -------
    array
        Shape of ``reward`` without ``axis``; its value is the mean reward.

    Raises
    ------
    ValueError
        Shapes that disagree, an unknown ``baseline``, fewer than 2 draws with
        ``"leave-one-out"``, ``baseline_reward`` missing for (or given without)
        ``"self-critic"``, an ``axis`` out of range.
    TypeError
        Arrays of different libraries, or a reward that is not real floating.
    """
    _check_baseline(baseline)
    arrays = [log_prob, reward] + ([] if baseline_reward is None else [baseline_reward])
    xp = array_namespace(*arrays)
    shape = tuple(reward.shape)
    if tuple(log_prob.shape) != shape:
        raise ValueError(
            f"log_prob and reward must have the same shape, got {tuple(log_prob.shape)} and {shape}"
        )
    for name, x in (("log_prob", log_prob), ("reward", reward)):
        if not _backend.is_floating(xp, x.dtype):
            raise TypeError(f"{name} must be a real floating array, got dtype {x.dtype}")
    if not shape:
        raise ValueError("reward must have at least one axis (the S draws)")
    axis = operator.index(axis)
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"axis {axis} is out of range for reward of shape {shape}")
    axis %= len(shape)
    num = shape[axis]
    if baseline == "leave-one-out" and num < 2:
        raise ValueError(
            f"baseline='leave-one-out' needs at least 2 draws along axis {axis}, got {num}; "
            "use baseline='self-critic' or None"
        )
    if num < 1:
        raise ValueError(f"reward has no draws along axis {axis} (shape {shape})")
    if baseline == "self-critic":
        if baseline_reward is None:
            raise ValueError(
                "baseline='self-critic' needs baseline_reward, the rewards of independent re-draws"
            )
        reduced = shape[:axis] + shape[axis + 1 :]
        given = tuple(baseline_reward.shape)
        if given == reduced:
            baseline_reward = xp.expand_dims(baseline_reward, axis=axis)
        elif given != shape:
            raise ValueError(
                f"baseline_reward must have the shape of reward {shape} or of reward without "
                f"axis {axis} {reduced}, got {given}"
            )
    elif baseline_reward is not None:
        raise ValueError(
            f"baseline_reward is used only with baseline='self-critic', got baseline={baseline!r}"
        )
    term = _score_term(xp, log_prob, reward, baseline_reward, axis, loo=baseline == "leave-one-out")
    return xp.mean(reward, axis=axis) + term


def _resolve_score(d: Any, score: Any) -> Any:
    if score not in _SCORES:
        raise ValueError(f"score must be one of 'auto', 'face', 'log_prob' or None, got {score!r}")
    if score == "auto":
        # A face drawn as a discrete variable gets no pathwise gradient: score it.
        if d.has_rsample and d.has_discrete_face:
            return "face"
        return None if d.has_rsample else "log_prob"
    if score in ("face", None) and not d.has_rsample:
        raise ValueError(
            f"score={score!r} needs a pathwise sampler, and {type(d).__name__} has none; use "
            "score='log_prob' (or 'auto')"
        )
    return score


def expectation_surrogate(
    fn: Callable[[Array], Array],
    d: Any,
    rng: Any,
    num_samples: int,
    *,
    baseline: Baseline = "leave-one-out",
    score: Score = "auto",
) -> Array:
    r"""Surrogate objective for :math:`E_{Y\sim d}[\mathrm{fn}(Y)]` with an unbiased gradient.

    Draws S = ``num_samples`` points and returns an array of shape ``d.batch_shape`` whose
    value is :math:`\frac1S\sum_s \mathrm{fn}(y_s)` and whose gradient (torch, JAX) is an
    unbiased estimate of :math:`\nabla E_d[\mathrm{fn}(Y)]`, w.r.t. the distribution's
    parameters and any parameters of ``fn``:

    .. math:: \frac1S\sum_s \Bigl[\nabla\,\mathrm{fn}(y_s)
              + (r_s - b_s)\,\nabla \log q(\text{scored part of } y_s)\Bigr],
              \qquad r_s = \mathrm{fn}(y_s) \text{ (a constant in the score term)}.

    Parameters
    ----------
    fn : callable
        Maps points of shape ``(n,) + batch_shape + (K,)`` to values of shape
        ``(n,) + batch_shape`` (as for :func:`mixedarray.expectation`).  May carry parameters
        of its own (a decoder); they get their ordinary gradient.
    d : Distribution
        The distribution to draw from.
    rng : generator, key or int
        The caller's framework's generator (see :mod:`mixedarray.random`).
    num_samples : int
        S, the draws averaged (≥ 2 for the leave-one-out baseline, ≥ 1 otherwise).
    baseline : {"leave-one-out", "self-critic", None}, default "leave-one-out"
        The control variate of the score term (see :func:`score_function_surrogate`).
        ``"self-critic"`` draws S more points, independent of the first S, and uses the mean
        of ``fn`` over them (no gradient) as a shared baseline: one extra batch of ``fn``.
        Ignored when there is no score term (``score=None``).
    score : {"auto", "face", "log_prob", None}, default "auto"
        What the score term differentiates, i.e. which part of the draw has no pathwise
        gradient:

        * ``"face"``: ``y = d.rsample(...)`` (pathwise for ``Y | F``) and the face is scored,
          ``log P_F(supp y) = d.face_log_prob(faces.support(y))``.  Right for samplers that
          draw the face without a gradient and the point on it pathwise
          (:class:`~mixedarray.MixedDirichlet`).
        * ``"log_prob"``: ``y = d.sample(...)`` (no pathwise gradient) and ``d.log_prob(y)``
          is scored: plain REINFORCE, valid for every distribution with a density w.r.t. the
          direct-sum measure (which does not depend on the parameters), usually with more
          variance than a pathwise gradient.
        * ``None``: ``y = d.rsample(...)`` and no score term (fully pathwise samplers, e.g.
          Gaussian-Sparsemax, with ``fn`` continuous in ``y``; see the module's caveat).
        * ``"auto"``: ``"face"`` where ``rsample`` draws the face as a discrete variable
          (``d.has_discrete_face``: ``MixedDirichlet``), ``None`` for other distributions
          with a pathwise sampler, ``"log_prob"`` for those without one
          (:class:`~mixedarray.NonEmptyBernoulli`, whose points are masks).

    Returns
    -------
    array
        Shape ``d.batch_shape``, in ``d``'s library and device.

    Raises
    ------
    ValueError
        ``num_samples`` not an int ≥ 1 (≥ 2 for leave-one-out), an unknown ``baseline`` or
        ``score``, ``score`` needing ``rsample`` where ``d`` has none, or ``fn`` returning the
        wrong shape.

    Notes
    -----
    Scoring ``d.log_prob(y)`` of a *pathwise* draw (``rsample``) instead of the face counts
    the gradient of ``Y | F`` twice and is biased; so is a baseline that contains the draw's
    own reward (see :func:`score_function_surrogate`).
    """
    _check_baseline(baseline)
    score = _resolve_score(d, score)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if baseline == "leave-one-out" and num_samples < 2:
        raise ValueError(
            f"baseline='leave-one-out' needs num_samples >= 2, got {num_samples}; use "
            "baseline='self-critic' or None"
        )
    num = num_samples
    batch = tuple(d.batch_shape)
    draws = 2 if baseline == "self-critic" and score is not None else 1
    shape = (draws * num,)
    y = d.sample(rng, shape) if score == "log_prob" else d.rsample(rng, shape)
    xp = array_namespace(y)
    values = fn(y)
    want = (draws * num, *batch)
    if tuple(getattr(values, "shape", ())) != want:
        raise ValueError(
            f"fn must map points of shape {tuple(y.shape)} to values of shape {want} "
            f"(num_samples + batch_shape), got {tuple(getattr(values, 'shape', ()))}"
        )
    baseline_reward = None
    if draws == 2:
        baseline_reward = xp.mean(_backend.stop_gradient(values[num:, ...]), axis=0)
        values, y = values[:num, ...], y[:num, ...]
    if score is None:
        return xp.mean(values, axis=0)
    log_prob = d.face_log_prob(faces.support(y)) if score == "face" else d.log_prob(y)
    return score_function_surrogate(
        log_prob, values, baseline=baseline, baseline_reward=baseline_reward, axis=0
    )
