r"""Direct-sum information theory: entropy, cross-entropy, KL and code length (paper-notes §4).

With densities w.r.t. the direct-sum measure :math:`\mu_\oplus`,

* :math:`H_\oplus(p) = -\int p \log p \, d\mu_\oplus = H(F) + \sum_f P_F(f)\, h_f(Y \mid F = f)`,
* :math:`H_\oplus(p, q) = -\int p \log q \, d\mu_\oplus`,
  :math:`\mathrm{KL}_\oplus(p \| q) = H_\oplus(p, q) - H_\oplus(p) \ge 0`,
* the code length at precision N bits, :math:`L_N = H_\oplus/\ln 2 + N\,E[\dim F]` bits.

Every function takes ``method``: ``"exact"`` (a closed form or an enumeration; raises
``NotImplementedError`` naming the Monte Carlo estimator when there is none), ``"mc"``
(Monte Carlo with ``rng`` and ``num_samples``) or ``"auto"`` (exact when possible, else Monte
Carlo).  Values have the distributions' batch shape; ``return_stderr=True`` returns an
:class:`~mixedarray.montecarlo.Estimate` whose ``stderr`` is 0 for exact values.

Gradients.  An exact value (``method="exact"``, or ``"auto"`` where a closed form or an
enumeration exists) is differentiable and its gradient is exact: train with it.  A Monte Carlo
estimate is unbiased for the value only.  ``method="mc"`` draws with ``sample()``, so its
gradient is not an estimate of the gradient at all; and the pathwise gradient of ``−log p(y)``
at ``y = d.rsample(...)`` is biased for sample-and-project distributions such as
Gaussian-Sparsemax, because ``log p`` jumps between a density and a point mass at face
boundaries and reparameterisation ignores those boundary terms (K = 2, μ = 0.3, s = 0.7: exact
∂H⊕/∂μ = 0.2135, expected pathwise gradient 0.1742; paper-notes §6).  For unbiased gradients
of expectations, see :mod:`mixedarray.gradients`.

Exact forms come from the distributions' ``entropy_exact``, ``cross_entropy_exact`` and
``kl_divergence_exact`` methods, and from the pairs registered here (anything against
:class:`~mixedarray.MaxEntMixed`, whose log density depends on the face size alone).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from mixedarray import _backend, faces, montecarlo, random
from mixedarray.distributions import MaxEntMixed
from mixedarray.montecarlo import Estimate, expectation

__all__ = ["code_length", "cross_entropy", "entropy", "kl_divergence"]

Array = Any
_METHODS = ("auto", "exact", "mc")


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


def _exact_or_none(compute: Callable[[], Array]) -> Array | None:
    try:
        return compute()
    except NotImplementedError:
        return None


def _result(d: Any, value: Array | Estimate, return_stderr: bool) -> Array | Estimate:
    if isinstance(value, Estimate):
        return value if return_stderr else value.value
    return Estimate(value, d._xp.zeros_like(value)) if return_stderr else value


MonteCarlo = Callable[..., Estimate]  # (rng, num_samples, *, chunk_size, progress) -> Estimate


def _plain(d: Any, integrand: Callable[[Array], Array], *scored: Any) -> MonteCarlo:
    """The Monte Carlo estimator ``mean of integrand(Y)``, ``Y ~ d``.

    ``integrand`` evaluates the ``log_prob`` of the distributions ``scored``: by default, a
    chunk holds as many draws as keep their work arrays near ``montecarlo``'s chunk budget
    (Gaussian-Sparsemax's works on K × Gauss–Hermite nodes elements per draw).
    """
    width = max([d.num_vertices] + [s._log_prob_width for s in scored])
    members = max(1, math.prod(d.batch_shape))
    default_chunk = max(1, montecarlo._CHUNK_ELEMENTS // (members * width))

    def estimate(
        rng: Any, num_samples: int, chunk_size: int | None = None, **options: Any
    ) -> Estimate:
        chunk_size = default_chunk if chunk_size is None else chunk_size
        return expectation(integrand, d, rng, num_samples, chunk_size=chunk_size, **options)

    return estimate


def _fused_entropy(d: Any) -> bool:
    """Whether the fused CUDA kernel estimates ``d``'s entropy (GaussianSparsemax on a GPU)."""
    if _backend.library_name(d._like) not in ("torch", "cupy", "jax"):
        return False  # decided without importing anything
    from mixedarray._native import cuda_entropy

    return cuda_entropy.applicable(d)


def _fused_or_plain(d: Any, integrand: Callable[[Array], Array]) -> MonteCarlo:
    """The entropy's Monte Carlo estimator: the fused kernel where it applies, else ``_plain``.

    Decided when the estimate is asked for, so an exact value (``method="auto"``) imports
    nothing.
    """
    plain = _plain(d, integrand, d)

    def estimate(rng: Any, num_samples: int, **options: Any) -> Estimate:
        if _fused_entropy(d):
            from mixedarray._native import cuda_entropy

            fused = cuda_entropy.entropy_estimate(d, rng, num_samples, **options)
            if fused is not None:  # None: the kernel declined (a traced JAX key)
                return fused
        return plain(rng, num_samples, **options)

    return estimate


def _rao_blackwellised(
    exact_head: Callable[[], Array], integrand: Callable[[Array], Array], faces_of: Any
) -> MonteCarlo:
    """``exact_head() + mean of integrand(F)``, ``F ~ faces_of``: Monte Carlo only over faces."""

    def estimate(rng: Any, num_samples: int, **options: Any) -> Estimate:
        inner = expectation(integrand, faces_of, rng, num_samples, **options)
        return Estimate(exact_head() + inner.value, inner.stderr)

    return estimate


def _resolve(
    what: str,
    d: Any,
    exact: Callable[[], Array] | None,
    monte_carlo: MonteCarlo,
    method: str,
    rng: Any,
    num_samples: int | None,
    return_stderr: bool,
    options: dict[str, Any],
) -> Array | Estimate:
    _check_method(method)
    if method != "mc" and exact is not None:
        value = _exact_or_none(exact)
        if value is not None:
            return _result(d, value, return_stderr)
    if method == "exact":
        raise NotImplementedError(
            f"no exact {what} for {type(d).__name__} here; use the Monte Carlo estimator: "
            f"method='mc' (or 'auto') with rng and num_samples"
        )
    # rng=None is torch's global generator (as torch.distributions uses); elsewhere it is missing.
    if num_samples is None or (rng is None and not random.has_global_generator(d._like)):
        reason = "method='mc'" if method == "mc" else f"no exact {what} exists here"
        raise ValueError(
            f"{reason}: Monte Carlo needs rng (the framework's generator, a key or an int "
            "seed; None is torch's global generator) and num_samples"
        )
    return _result(d, monte_carlo(rng, num_samples, **options), return_stderr)


def _mean_dim(d: Any) -> Array:
    """``E[dim F]`` in closed form, where the distribution gives its face sizes."""
    xp = d._xp
    if hasattr(d, "size_probs"):
        probs = d.size_probs()
    elif hasattr(d, "face_distribution"):
        probs = d.face_distribution.size_probs()
    elif d.num_vertices == 2:
        vertices = xp.eye(2, dtype=xp.bool, device=d.device)  # built on the device: no host copy
        vertices = xp.reshape(vertices, (2,) + (1,) * len(d.batch_shape) + (2,))
        mass = xp.sum(xp.exp(d.face_log_prob(vertices)), axis=0)
        return 1 - mass
    else:
        raise NotImplementedError(f"no closed-form face sizes for {type(d).__name__}")
    k = xp.arange(d.num_vertices, dtype=probs.dtype, device=d.device)
    return xp.sum(probs * k, axis=-1)


def entropy(
    d: Any,
    *,
    method: str = "auto",
    rng: Any = None,
    num_samples: int | None = None,
    return_stderr: bool = False,
    chunk_size: int | None = None,
    progress: bool = False,
) -> Array | Estimate:
    r"""Direct-sum entropy :math:`H_\oplus(d) = -E_d[\log p(Y)]` in nats (can be negative).

    For distributions that give the entropy of each face in closed form (MixedDirichlet), the
    Monte Carlo estimate is Rao–Blackwellised: exact ``H(F)`` plus an average of ``h_F`` over
    sampled faces, which has a lower variance than ``−log p(Y)``.

    A GaussianSparsemax on torch CUDA tensors, CuPy arrays or eager JAX GPU arrays
    (float32/float64, K ≤ 128, no autograd graph to keep) estimates by Monte Carlo —
    ``method="mc"``, or ``"auto"`` for K > 2, where no closed form exists — with a fused kernel
    (:mod:`mixedarray._native.cuda_entropy`): one launch per chunk draws, projects and scores
    ``log p(Y)`` (the same formula, Gauss–Hermite rule and Newton steps as ``log_prob``) and
    sums on the device, with no array of draws in memory.  Same estimator, another stream of
    random numbers.

    Parameters
    ----------
    d : Distribution
        Any distribution of :mod:`mixedarray.distributions`.
    method : {"auto", "exact", "mc"}, default "auto"
        Exact where a closed form or an enumeration exists (``"auto"``), always (``"exact"``,
        else ``NotImplementedError``), or Monte Carlo (``"mc"``).
    rng : generator, key or int, optional
        The caller's framework's generator for Monte Carlo (:mod:`mixedarray.random`); ``None``
        is torch's global generator.
    num_samples : int, optional
        Monte Carlo draws per batch member (≥ 2); needed whenever Monte Carlo runs.
    return_stderr : bool, default False
        Return an :class:`~mixedarray.montecarlo.Estimate` (value and standard error; the
        error is 0 for exact values) instead of the value alone.
    chunk_size : int, optional
        Monte Carlo draws per chunk: memory is bounded by one chunk, whatever ``num_samples``
        (default about 4 million elements per chunk; the fused kernel: about 2**28 / (K ×
        members) draws per launch).  Sums accumulate in float64 on the device.
    progress : bool, default False
        Show a ``tqdm`` progress bar over the chunks.

    Returns
    -------
    array or Estimate
        Shape ``batch_shape``, in ``d``'s library, dtype and device (nothing is read back).
    """
    if hasattr(d, "conditional_entropy"):
        faces_of = d.face_distribution
        monte_carlo = _rao_blackwellised(faces_of.entropy_exact, d.conditional_entropy, faces_of)
    else:
        monte_carlo = _fused_or_plain(d, lambda y: -d.log_prob(y))
    exact = getattr(d, "entropy_exact", None)
    options = {"chunk_size": chunk_size, "progress": progress}
    return _resolve(
        "entropy", d, exact, monte_carlo, method, rng, num_samples, return_stderr, options
    )


def _cross_entropy_exact(p: Any, q: Any) -> Array:
    if isinstance(q, MaxEntMixed):
        # log q(y) = N (|supp y| − 1) ln 2 − log Z: only E_p[dim F] is needed.
        return q._log_normalizer - q.bits * math.log(2) * _mean_dim(p)
    method = getattr(p, "cross_entropy_exact", None)
    if method is None or type(q) is not type(p):
        raise NotImplementedError
    return method(q)


def _kl_exact(p: Any, q: Any) -> Array:
    if type(q) is type(p) and hasattr(p, "kl_divergence_exact"):
        return p.kl_divergence_exact(q)
    entropy_exact = getattr(p, "entropy_exact", None)
    if entropy_exact is None:
        raise NotImplementedError
    return _cross_entropy_exact(p, q) - entropy_exact()


def _check_pair(p: Any, q: Any) -> None:
    if p.num_vertices != q.num_vertices:
        raise ValueError(f"p has K = {p.num_vertices} vertices but q has K = {q.num_vertices}")
    libraries = _backend.library_name(p._like), _backend.library_name(q._like)
    if libraries[0] != libraries[1]:
        raise TypeError(
            f"p and q come from different array libraries: {libraries[0]} and {libraries[1]}"
        )


def cross_entropy(
    p: Any,
    q: Any,
    *,
    method: str = "auto",
    rng: Any = None,
    num_samples: int | None = None,
    return_stderr: bool = False,
    chunk_size: int | None = None,
    progress: bool = False,
) -> Array | Estimate:
    r"""Direct-sum cross-entropy :math:`H_\oplus(p, q) = -E_p[\log q(Y)]` in nats.

    Parameters are those of :func:`entropy`, with ``p`` the distribution drawn from.
    """
    _check_pair(p, q)
    return _resolve(
        "cross-entropy",
        p,
        lambda: _cross_entropy_exact(p, q),
        _plain(p, lambda y: -q.log_prob(y), q),
        method,
        rng,
        num_samples,
        return_stderr,
        {"chunk_size": chunk_size, "progress": progress},
    )


def kl_divergence(
    p: Any,
    q: Any,
    *,
    method: str = "auto",
    rng: Any = None,
    num_samples: int | None = None,
    return_stderr: bool = False,
    chunk_size: int | None = None,
    progress: bool = False,
) -> Array | Estimate:
    r"""Direct-sum KL divergence, :math:`E_p[\log p(Y) - \log q(Y)] \ge 0`.

    It is ``+inf`` when q gives zero mass to a face that p charges; a Monte Carlo estimate then
    returns ``inf`` as soon as one sample lands there.

    Parameters are those of :func:`entropy`, with ``p`` the distribution drawn from.
    """
    _check_pair(p, q)
    if type(q) is type(p) and hasattr(p, "conditional_kl_divergence"):
        faces_of = p.face_distribution
        monte_carlo = _rao_blackwellised(
            lambda: faces_of.kl_divergence_exact(q.face_distribution),
            lambda masks: p.conditional_kl_divergence(q, masks),
            faces_of,
        )
    else:
        monte_carlo = _plain(p, lambda y: p.log_prob(y) - q.log_prob(y), p, q)
    return _resolve(
        "KL divergence",
        p,
        lambda: _kl_exact(p, q),
        monte_carlo,
        method,
        rng,
        num_samples,
        return_stderr,
        {"chunk_size": chunk_size, "progress": progress},
    )


def code_length(
    d: Any,
    bits: float,
    *,
    method: str = "auto",
    rng: Any = None,
    num_samples: int | None = None,
    return_stderr: bool = False,
    chunk_size: int | None = None,
    progress: bool = False,
) -> Array | Estimate:
    r"""Code length in bits at precision N: :math:`L_N = H_\oplus/\ln 2 + N\,E[\dim F]`.

    Free coordinates quantised to cells of width :math:`2^{-N}`; exact as N grows
    (paper-notes §4).

    ``bits`` is N ≥ 0; the other parameters are those of :func:`entropy`.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, float)) or not bits >= 0:
        raise ValueError(f"bits must be a number >= 0, got {bits!r}")

    def exact() -> Array:
        return d.entropy_exact() / math.log(2) + bits * _mean_dim(d)

    def integrand(y: Array) -> Array:
        return -d.log_prob(y) / math.log(2) + bits * d._xp.astype(faces.dim(y), d.dtype)

    has_exact = hasattr(d, "entropy_exact")
    return _resolve(
        "code length",
        d,
        exact if has_exact else None,
        _plain(d, integrand, d),
        method,
        rng,
        num_samples,
        return_stderr,
        {"chunk_size": chunk_size, "progress": progress},
    )
