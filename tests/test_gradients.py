"""Score-function surrogates (mixedarray.gradients): unbiased gradients, checked statistically.

The reference is exact and independent of the code under test: ``E[g(Y)]`` for a Mixed
Dirichlet with K = 3 is a sum over the 7 faces of ``P_F(f)·E_Dir(α_f)[g]`` in closed form
(NumPy float64), differentiated by central differences.  The estimators' gradients (torch
autograd, ``jax.grad``) over R independent replicates must match it within 4.5 standard errors
per coordinate, with a standard error under 10 % of each coordinate; planted wrong estimators
(double counting the pathwise gradient, a baseline containing the draw's own reward) must fail
the same check.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import mixedarray as ma
from mixedarray import _backend
from mixedarray._backend import array_namespace
from mixedarray.gradients import expectation_surrogate, score_function_surrogate
from tests.helpers import allow_host_transfers, from_numpy, library_of, to_numpy

ETA = np.array([0.3, -0.5, 1.1])  # face logits
ALPHA = np.array([0.7, 1.5, 2.0])  # concentrations
C = np.array([1.0, -2.0, 3.0])  # g(y) = Σ c_k y_k² + Σ_{k∈supp y} d_k + OFFSET
D = np.array([-0.5, 0.8, 0.2])
OFFSET = 2.0  # moves the mean reward away from 0, so that baselines matter
S = 4  # draws per replicate
REPLICATES = {"torch": 20_000, "jax": 5_000}  # JAX's Gamma derivative is slow on CPU
Z_MAX = 4.5


# ---------------------------------------------------------------------------------------------
# Exact reference: enumeration of the faces, closed-form Dirichlet moments, central differences.


def _faces(k: int) -> list[np.ndarray]:
    return [np.array(f, bool) for f in itertools.product([False, True], repeat=k) if any(f)]


def exact_expectation(eta: np.ndarray, alpha: np.ndarray) -> float:
    """``E[g(Y)] = Σ_f P_F(f)·(Σ_{i∈f} c_i E[y_i²] + d_i) + OFFSET``.

    ``P_F(f) ∝ Π σ(η_k)^{f_k}(1 − σ(η_k))^{1−f_k} ∝ exp(η·f)`` over the non-empty faces, and on
    the face ``E[y_i²] = α_i(α_i + 1)/(α_0(α_0 + 1))`` (1 at a vertex).
    """
    faces = _faces(len(eta))
    energies = np.array([eta[f].sum() for f in faces])
    probs = np.exp(energies - energies.max())
    probs /= probs.sum()
    total = 0.0
    for p, f in zip(probs, faces, strict=True):
        a, a0 = alpha[f], alpha[f].sum()
        total += p * np.sum(C[f] * a * (a + 1) / (a0 * (a0 + 1)) + D[f])
    return total + OFFSET


def exact_gradient(fun: Callable[..., float], *params: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central differences of ``fun(*params)`` w.r.t. every entry, concatenated."""
    flat = np.concatenate(params)
    sizes = np.cumsum([len(p) for p in params])[:-1]
    out = np.empty_like(flat)
    for i in range(len(flat)):
        step = np.zeros_like(flat)
        step[i] = h
        plus, minus = np.split(flat + step, sizes), np.split(flat - step, sizes)
        out[i] = (fun(*plus) - fun(*minus)) / (2 * h)
    return out


EXACT = exact_gradient(exact_expectation, ETA, ALPHA)  # (∂/∂η, ∂/∂α), 6 entries


def g(y: Any) -> Any:
    """The objective, on any backend: ``Σ c_k y_k² + Σ_{k: y_k>0} d_k + OFFSET``."""
    xp = array_namespace(y)
    device = _backend.device(y)
    with allow_host_transfers():  # the test's own constants (a pageable copy on torch-CUDA)
        c = xp.asarray(C.tolist(), dtype=y.dtype, device=device)
        d = xp.asarray(D.tolist(), dtype=y.dtype, device=device)
    on_face = xp.where(y > 0, d, xp.zeros_like(y))
    return xp.sum(c * y**2 + on_face, axis=-1) + OFFSET


def max_z(samples: np.ndarray, exact: np.ndarray) -> float:
    """Largest ``|mean − exact| / stderr`` over coordinates of per-replicate gradients.

    Asserts first that each standard error is under 10 % of the exact value, so that the check
    has the power to reject a wrong estimator.
    """
    mean = samples.mean(axis=0)
    stderr = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    assert np.all(stderr < 0.1 * np.abs(exact)), (stderr, exact)
    return float(np.max(np.abs(mean - exact) / stderr))


def test_reference_gradient_is_not_degenerate():
    """Every coordinate of the target is well away from 0 (the 10 % rule is meaningful)."""
    assert np.all(np.abs(EXACT) > 0.2)
    # Central differences of a smooth closed form: stable under a change of step.
    np.testing.assert_allclose(
        exact_gradient(exact_expectation, ETA, ALPHA, h=1e-4), EXACT, rtol=1e-6
    )


# ---------------------------------------------------------------------------------------------
# Estimators under test, and planted wrong ones, all written with the public API.


def _leave_one_out(d: Any, rng: Any) -> Any:
    return expectation_surrogate(g, d, rng, S)


def _self_critic(d: Any, rng: Any) -> Any:
    return expectation_surrogate(g, d, rng, S, baseline="self-critic")


def _no_baseline(d: Any, rng: Any) -> Any:
    return expectation_surrogate(g, d, rng, S, baseline=None)


def _pure_reinforce(d: Any, rng: Any) -> Any:
    """No pathwise gradient at all: ``d.sample`` and the full ``d.log_prob`` scored."""
    return expectation_surrogate(g, d, rng, S, score="log_prob")


def _double_counted(d: Any, rng: Any) -> Any:
    """WRONG: a pathwise draw, and the full log density (not the face's) scored."""
    y = d.rsample(rng, (S,))
    return score_function_surrogate(d.log_prob(y), g(y))


def _own_reward_baseline(d: Any, rng: Any) -> Any:
    """WRONG: b_s = the mean of all S rewards, the draw's own included (shrinks by (S−1)/S)."""
    y = d.rsample(rng, (S,))
    r = g(y)
    xp = array_namespace(r)
    return score_function_surrogate(
        d.face_log_prob(ma.faces.support(y)),
        r,
        baseline="self-critic",
        baseline_reward=xp.mean(r, axis=0),
    )


CORRECT = {
    "leave-one-out": _leave_one_out,
    "self-critic": _self_critic,
    "no-baseline": _no_baseline,
    "pure-reinforce": _pure_reinforce,
}
WRONG = {"double-counted": _double_counted, "own-reward-baseline": _own_reward_baseline}


def _jax() -> Any:
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)  # as the conftest does
    return jax


def per_replicate_gradients(
    library: str,
    make: Callable[..., Any],
    params: tuple[np.ndarray, ...],
    estimator: Callable[[Any, Any], Any],
    replicates: int,
    seed: int,
) -> np.ndarray:
    """Per-replicate gradients ``(replicates, Σ len(params))`` of ``estimator(make(*params))``.

    The replicates are a batch of identical distributions: the gradient w.r.t. row r of the
    ``(replicates, K)`` parameters is replicate r's estimate (rows do not interact).
    """
    if library == "torch":
        torch = pytest.importorskip("torch")
        leaves = [
            torch.tensor(p).expand(replicates, len(p)).clone().requires_grad_() for p in params
        ]
        surrogate = estimator(make(*leaves), torch.Generator().manual_seed(seed))
        assert tuple(surrogate.shape) == (replicates,)
        surrogate.sum().backward()
        grads = [leaf.grad.numpy() for leaf in leaves]
    else:
        jax = _jax()
        leaves = [
            jax.numpy.broadcast_to(jax.numpy.asarray(p), (replicates, len(p))) for p in params
        ]

        def objective(*leaves: Any) -> Any:
            return jax.numpy.sum(estimator(make(*leaves), jax.random.key(seed)))

        grads = jax.grad(objective, argnums=tuple(range(len(leaves))))(*leaves)
        grads = [np.asarray(x) for x in grads]
    return np.concatenate(grads, axis=-1)


@functools.cache
def gradient_samples(library: str, name: str) -> tuple[np.ndarray, float]:
    """Per-replicate gradients (R, 6) of the Mixed Dirichlet estimator ``name``, and seconds."""
    start = time.perf_counter()
    samples = per_replicate_gradients(
        library,
        ma.MixedDirichlet,
        (ETA, ALPHA),
        {**CORRECT, **WRONG}[name],
        REPLICATES[library],
        seed=0,
    )
    return samples, time.perf_counter() - start


LIBRARIES = ["torch", "jax"]


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("name", list(CORRECT))
def test_gradient_is_unbiased(library, name):
    samples, _ = gradient_samples(library, name)
    assert np.all(np.isfinite(samples))
    assert max_z(samples, EXACT) < Z_MAX


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("name", list(WRONG))
def test_planted_wrong_gradient_is_rejected(library, name):
    samples, _ = gradient_samples(library, name)
    assert max_z(samples, EXACT) > 2 * Z_MAX


@pytest.mark.parametrize("library", LIBRARIES)
def test_baselines_reduce_the_variance_of_the_face_gradient(library):
    """With a reward far from 0, both baselines cut the variance of the ∂/∂η estimate.

    (∂/∂α is pathwise and does not depend on the baseline.)
    """
    plain = gradient_samples(library, "no-baseline")[0].var(axis=0)
    for name in ("leave-one-out", "self-critic"):
        variance = gradient_samples(library, name)[0].var(axis=0)
        assert np.all(variance[:3] < 0.8 * plain[:3]), (name, variance, plain)
        np.testing.assert_allclose(variance[3:], plain[3:], rtol=0.1)


@pytest.mark.parametrize("library", LIBRARIES)
def test_face_logits_get_no_gradient_without_the_score_term(library):
    """``score=None`` on a Mixed Dirichlet: the face is not reparameterised, ∂/∂η is 0."""
    if library == "torch":
        torch = pytest.importorskip("torch")
        eta = torch.tensor(ETA, requires_grad=True)
        alpha = torch.tensor(ALPHA, requires_grad=True)
        expectation_surrogate(g, ma.MixedDirichlet(eta, alpha), 0, 64, score=None).backward()
        assert alpha.grad is not None and bool(torch.all(alpha.grad != 0))
        grad = np.zeros(3) if eta.grad is None else eta.grad.numpy()
    else:
        jax = _jax()

        def objective(eta: Any) -> Any:
            d = ma.MixedDirichlet(eta, jax.numpy.asarray(ALPHA))
            return expectation_surrogate(g, d, 0, 64, score=None)

        grad = np.asarray(jax.grad(objective)(jax.numpy.asarray(ETA)))
    np.testing.assert_array_equal(grad, 0.0)


# ---------------------------------------------------------------------------------------------
# NonEmptyBernoulli (no pathwise sampler: pure score function on masks).

W = np.array([0.7, -1.2, 0.4, 0.9])
ETA4 = np.array([0.2, -0.6, 1.0, -1.5])


def exact_mask_expectation(eta: np.ndarray) -> float:
    """``E[Σ_k w_k f_k]`` under P_F(f) ∝ exp(η·f), by enumeration."""
    faces = _faces(len(eta))
    energies = np.array([eta[f].sum() for f in faces])
    probs = np.exp(energies - energies.max())
    return float(np.dot(probs / probs.sum(), [W[f].sum() for f in faces]))


def _mask_reward(mask: Any) -> Any:
    xp = array_namespace(mask)
    w = xp.asarray(W.tolist(), dtype=xp.float64, device=_backend.device(mask))
    return xp.sum(xp.where(mask, w, xp.zeros_like(w)), axis=-1)


def _masks_leave_one_out(d: Any, rng: Any) -> Any:
    return expectation_surrogate(_mask_reward, d, rng, S)  # auto: d.sample, d.log_prob


def _masks_own_reward_baseline(d: Any, rng: Any) -> Any:
    """WRONG: the draw's own reward in the baseline."""
    mask = d.sample(rng, (S,))
    r = _mask_reward(mask)
    xp = array_namespace(r)
    return score_function_surrogate(
        d.log_prob(mask), r, baseline="self-critic", baseline_reward=xp.mean(r, axis=0)
    )


@pytest.mark.parametrize("library", LIBRARIES)
def test_nonempty_bernoulli_gradient_is_unbiased(library):
    exact = exact_gradient(exact_mask_expectation, ETA4)
    right, wrong = (
        per_replicate_gradients(library, ma.NonEmptyBernoulli, (ETA4,), fn, 20_000, seed=1)
        for fn in (_masks_leave_one_out, _masks_own_reward_baseline)
    )
    assert max_z(right, exact) < Z_MAX
    assert max_z(wrong, exact) > 2 * Z_MAX


# ---------------------------------------------------------------------------------------------
# The formula itself, deterministically (torch autograd against an explicit loop).


@pytest.mark.parametrize("baseline", ["leave-one-out", "self-critic", None])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gradient_formula(baseline, axis):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(3)
    num, batch = 5, 3
    theta = torch.randn(num, batch, dtype=torch.float64, generator=gen, requires_grad=True)
    reward = torch.randn(num, batch, dtype=torch.float64, generator=gen)
    other = torch.randn(num, batch, dtype=torch.float64, generator=gen)
    log_prob = torch.sin(theta)  # d log_prob / d theta = cos(theta)
    moved = (lambda x: x.movedim(0, axis)) if axis else (lambda x: x)
    kwargs = {"baseline_reward": moved(other)} if baseline == "self-critic" else {}
    out = score_function_surrogate(
        moved(log_prob), moved(reward), baseline=baseline, axis=axis, **kwargs
    )
    np.testing.assert_allclose(out.detach().numpy(), reward.mean(0).numpy(), rtol=1e-15)
    out.sum().backward()
    expected = np.zeros((num, batch))
    for s in range(num):
        if baseline == "leave-one-out":
            b = (reward.sum(0) - reward[s]) / (num - 1)
        elif baseline == "self-critic":
            b = other[s]
        else:
            b = 0.0
        expected[s] = ((reward[s] - b) * torch.cos(theta[s].detach())).numpy() / num
    np.testing.assert_allclose(theta.grad.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_reward_keeps_its_own_gradient():
    """A reward with parameters of its own adds ``mean ∇r`` (the total ∇E[r] stays unbiased)."""
    torch = pytest.importorskip("torch")
    w = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    theta = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64, requires_grad=True)
    features = torch.tensor([1.0, -1.0, 3.0], dtype=torch.float64)
    reward = w * features
    out = score_function_surrogate(theta * 1.0, reward, baseline=None)
    out.backward()
    assert float(w.grad) == pytest.approx(float(features.mean()))
    np.testing.assert_allclose(theta.grad.numpy(), (reward.detach() / 3).numpy())


def test_shared_self_critic_baseline_is_broadcast():
    torch = pytest.importorskip("torch")
    theta = torch.zeros(4, 2, dtype=torch.float64, requires_grad=True)
    reward = torch.arange(8, dtype=torch.float64).reshape(4, 2)
    shared = torch.tensor([1.0, 5.0], dtype=torch.float64)
    score_function_surrogate(
        theta, reward, baseline="self-critic", baseline_reward=shared
    ).sum().backward()
    np.testing.assert_allclose(theta.grad.numpy(), ((reward - shared) / 4).numpy())


# ---------------------------------------------------------------------------------------------
# Forward values on every backend, and framework behaviour.


def test_value_is_the_mean_reward(backend):
    rng = np.random.default_rng(0)
    log_prob = from_numpy(backend, rng.normal(size=(3, 5)))
    reward_np = rng.normal(size=(3, 5))
    reward = from_numpy(backend, reward_np)
    for kwargs, axis in (
        ({}, 0),
        ({"baseline": None}, 1),
        ({"baseline": "self-critic", "baseline_reward": from_numpy(backend, np.ones(3))}, 1),
    ):
        out = score_function_surrogate(log_prob, reward, axis=axis, **kwargs)
        assert _backend.library_name(out) == library_of(backend)
        np.testing.assert_allclose(to_numpy(out), reward_np.mean(axis), rtol=1e-14)


@pytest.mark.parametrize("baseline", ["leave-one-out", "self-critic", None])
def test_expectation_value_matches_the_exact_mean(backend, baseline):
    """The value is the sample mean of g (shape: the batch), which matches E[g] statistically."""
    num = 20_000
    eta = from_numpy(backend, np.stack([ETA, ETA]))
    d = ma.MixedDirichlet(eta, from_numpy(backend, np.stack([ALPHA, ALPHA])))
    value = expectation_surrogate(g, d, 5, num, baseline=baseline)
    assert _backend.library_name(value) == library_of(backend)
    assert tuple(value.shape) == (2,)
    value = to_numpy(value)
    draws = to_numpy(g(d.rsample(5, (num,))))  # the same draws (an int seed is reproducible)
    if baseline != "self-critic":
        np.testing.assert_allclose(value, draws.mean(axis=0), rtol=1e-12)
    stderr = draws.std(axis=0, ddof=1) / np.sqrt(num)
    exact = exact_expectation(ETA, ALPHA)
    assert np.all(stderr < 0.1 * abs(exact))
    assert np.all(np.abs(value - exact) < Z_MAX * stderr)


def test_pathwise_distributions_get_no_score_term():
    """``score='auto'`` on Gaussian-Sparsemax (fully pathwise): exactly the pathwise estimate."""
    torch = pytest.importorskip("torch")
    loc = torch.tensor([0.2, -0.1, 0.4], dtype=torch.float64, requires_grad=True)
    d = ma.GaussianSparsemax(loc, 0.5)
    fn = lambda y: (y**2).sum(-1)  # noqa: E731
    expectation_surrogate(fn, d, 7, 50).backward()
    auto = loc.grad.clone()
    loc.grad = None
    fn(d.rsample(7, (50,))).mean().backward()
    np.testing.assert_array_equal(auto.numpy(), loc.grad.numpy())


def test_under_jax_jit():
    """Traceable end to end; ∂/∂η is the leave-one-out score term ``mean (r − b)(f − m)``."""
    jax = _jax()

    def objective(eta: Any, alpha: Any, key: Any) -> Any:
        return expectation_surrogate(g, ma.MixedDirichlet(eta, alpha), key, S)

    @jax.jit
    def run(eta: Any, alpha: Any, key: Any) -> Any:
        value, grads = jax.value_and_grad(objective, argnums=(0, 1))(eta, alpha, key)
        return value, grads, ma.MixedDirichlet(eta, alpha).rsample(key, (S,))

    value, (grad_eta, grad_alpha), draws = run(
        jax.numpy.asarray(ETA), jax.numpy.asarray(ALPHA), jax.random.key(0)
    )
    draws = np.asarray(draws)
    rewards = g(draws)  # the same draws: same key, same shape
    np.testing.assert_allclose(float(value), rewards.mean(), rtol=1e-12)
    total = np.sum(np.logaddexp(0.0, ETA))  # paper-notes §7: m_k = σ(η_k)/(1 − e^{−S})
    marginals = 1 / (1 + np.exp(-ETA)) / (1 - np.exp(-total))
    baseline = (rewards.sum() - rewards) / (S - 1)
    expected = np.mean((rewards - baseline)[:, None] * ((draws > 0) - marginals), axis=0)
    np.testing.assert_allclose(np.asarray(grad_eta), expected, rtol=1e-10, atol=1e-14)
    assert np.all(np.isfinite(np.asarray(grad_alpha)))


# ---------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((np.zeros(3), np.zeros(4)), {}, ValueError, "log_prob and reward must have the same"),
        ((np.zeros(3), np.zeros(3)), {"baseline": "mean"}, ValueError, "baseline must be one of"),
        ((np.zeros(1), np.zeros(1)), {}, ValueError, "'leave-one-out' needs at least 2 draws"),
        (
            (np.zeros(3), np.zeros(3)),
            {"baseline": "self-critic"},
            ValueError,
            "needs baseline_reward",
        ),
        (
            (np.zeros(3), np.zeros(3)),
            {"baseline_reward": np.zeros(3)},
            ValueError,
            "baseline_reward is used only with baseline='self-critic'",
        ),
        (
            (np.zeros((3, 2)), np.zeros((3, 2))),
            {"baseline": "self-critic", "baseline_reward": np.zeros(3)},
            ValueError,
            r"baseline_reward must have the shape of reward \(3, 2\)",
        ),
        ((np.zeros(3), np.zeros(3)), {"axis": 1}, ValueError, "axis 1 is out of range"),
        ((np.zeros(()), np.zeros(())), {"baseline": None}, ValueError, "at least one axis"),
        ((np.zeros(3), np.zeros(3, dtype=int)), {}, TypeError, "reward must be a real floating"),
    ],
)
def test_score_function_surrogate_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        score_function_surrogate(*args, **kwargs)


def test_mixing_libraries_is_an_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError):
        score_function_surrogate(np.zeros(3), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 1}, "'leave-one-out' needs num_samples >= 2"),
        ({"num_samples": 0, "baseline": None}, "num_samples must be an int >= 1"),
        ({"num_samples": True}, "num_samples must be an int >= 1"),
        ({"num_samples": 4, "baseline": "greedy"}, "baseline must be one of"),
        ({"num_samples": 4, "score": "full"}, "score must be one of"),
    ],
)
def test_expectation_surrogate_errors(kwargs, match):
    d = ma.MixedDirichlet(ETA, ALPHA)
    with pytest.raises(ValueError, match=match):
        expectation_surrogate(g, d, 0, **kwargs)


def test_expectation_surrogate_checks_fn_and_the_sampler():
    d = ma.MixedDirichlet(ETA, ALPHA)
    with pytest.raises(ValueError, match=r"fn must map points of shape \(4, 3\)"):
        expectation_surrogate(lambda y: y, d, 0, 4)
    faces = ma.NonEmptyBernoulli(ETA)
    with pytest.raises(ValueError, match="needs a pathwise sampler"):
        expectation_surrogate(lambda m: m[..., 0] * 1.0, faces, 0, 4, score="face")
    value = expectation_surrogate(lambda m: m[..., 0] * 1.0, faces, 0, 4)  # auto: log_prob
    assert value.shape == ()


def test_public_exports():
    assert ma.score_function_surrogate is score_function_surrogate
    assert ma.expectation_surrogate is expectation_surrogate
