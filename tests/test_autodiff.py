"""Automatic differentiation of every distribution's ``log_prob`` w.r.t. all its parameters.

For each distribution and each kind of point — a vertex, a point on an edge (a lower face), a
point in the relative interior, and a small batch mixing them — the log density as a function of
*every* array parameter (``lambda *params: Dist(*params).log_prob(y)``) is checked

1. on PyTorch by ``torch.autograd.gradcheck`` (reverse and forward mode, and the reverse-mode
   vjp under ``vmap``) and ``torch.autograd.gradgradcheck`` (reverse over reverse and forward
   over reverse), in float64, against finite differences;
2. on JAX by ``jax.test_util.check_grads(order=2, modes=("fwd", "rev"))``, in float64: JVPs and
   VJPs of first and second order against finite differences;
3. under ``torch.func.vmap`` / ``jax.vmap`` over a batch of parameters: values and gradients
   (``torch.func.grad`` / ``jax.grad`` inside the vmap) equal a Python loop over the batch.

Where ``log_prob`` is ``-inf`` for every parameter value (a Gumbel-Softmax puts no mass on lower
faces; its straight-through variant none off the vertices), finite differences are undefined;
there the tests assert the value ``-inf`` and first and second derivatives that are exactly 0
in every mode (no NaN leaking through a ``where``).  ``MaxEntMixed`` has no free parameter: its
``log_prob`` is checked to be a constant of its one array leaf (zero derivative, no NaN).

Tolerances.  Every ``log_prob`` here is a closed form except ``GaussianSparsemax`` with K = 3:
a Gauss–Hermite rule centred at the Laplace point ``(τ*, s*)``, a stop-gradient constant.
Autodiff differentiates the rule at a fixed centre; finite differences also move the centre;
the two differ by the derivative of the quadrature error, which the error table in
``gaussian_sparsemax_density.log_prob`` puts at ≤ 1e-16 on K = 3 edges and interiors at the
default 32 nodes.  Measured at this file's K = 3 points: the autodiff gradient at 32 nodes
equals the one at 128 nodes to 4e-16 and fourth-order central differences (step 1e-3) of the
32-node ``log_prob`` to 5e-12, the differences' own error.  That is far inside the checkers'
default tolerances, used throughout: torch's ``atol=1e-5, rtol=1e-3`` with step 1e-6 and JAX's
float64 ``atol=rtol=1e-5`` with step 1e-4, whose own truncation error (``eps²·|f⁽³⁾|/6`` ≲ 1e-7
for these O(1)-scaled smooth functions) is the binding term.  So one set of tolerances serves
every distribution, and the negative controls at the end show that they still catch a 1 %
error in a first or a second derivative.  ``vmap`` against a loop runs the same arithmetic, so
it is held to 1e-12 (observed: equal bit for bit).

Runtime.  The torch tests take ~12 s.  The JAX tests take most of the file's time, nearly all
of it XLA compiling the eager kernels of each primitive × shape × transformation (~400 for the
K = 3 Gaussian-Sparsemax's second-order checks alone); the JAX tests therefore use one set of
shapes per distribution (see :func:`_jax_function`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import mixedarray as ma

pytestmark = [
    # torch's forward-mode AD scripts its jvp decompositions on first use (upstream, harmless)
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
    # torch.func.vmap runs ops without a batching rule (aten::special_log_ndtr, in the
    # Gaussian-Sparsemax density) by its per-sample fallback: slower, not wrong, and the vmap
    # tests check the values (the message names the op after a colon, which a filter cannot
    # match, so this is the fallback warning of any op)
    pytest.mark.filterwarnings(
        "ignore:There is a performance drop because we have not yet implemented the batching "
        "rule:UserWarning"
    ),
]

# ---------------------------------------------------------------------------------------------
# The cases: every distribution, its parameters (one row, and a batch of 3 rows), its points.

VMAP_RTOL = VMAP_ATOL = 1e-12  # vmap vs loop: the same arithmetic (see the module docstring)
BATCH = 3


@dataclasses.dataclass(frozen=True)
class Case:
    """One distribution family: ``build(*params)``, parameters, and points by kind.

    ``params`` have batch shape ``()``; ``batch_params`` batch shape ``(BATCH,)`` (the "batch"
    point kind and the vmap tests use them).  ``points`` maps a kind to ``y`` (shape ``(K,)``,
    or ``(BATCH, K)`` for "batch"); ``minus_inf`` names the kinds where ``log_prob`` is -inf.
    """

    build: Callable[..., Any]
    params: tuple[Any, ...]
    batch_params: tuple[Any, ...]
    points: dict[str, Any]
    minus_inf: frozenset[str] = frozenset()


def _rows(*rows: Any) -> np.ndarray:
    return np.array(rows, dtype=np.float64)


K3_POINTS = {
    "vertex": _rows(1.0, 0.0, 0.0),
    "edge": _rows(0.3, 0.7, 0.0),
    "interior": _rows(0.2, 0.3, 0.5),
    # a vertex, an edge and an interior point, other than those above
    "batch": _rows([0.0, 0.0, 1.0], [0.0, 0.4, 0.6], [0.5, 0.25, 0.25]),
}
K2_POINTS = {
    "vertex": _rows(1.0, 0.0),  # e_1 (for Hard Concrete: the open gate)
    "other-vertex": _rows(0.0, 1.0),  # e_2 (the closed gate)
    "interior": _rows(0.3, 0.7),  # K = 2: the edge is the interior
    "batch": _rows([0.0, 1.0], [0.55, 0.45], [1.0, 0.0]),
}
MASKS = {  # NonEmptyBernoulli's events are faces
    "vertex": np.array([True, False, False]),
    "edge": np.array([True, True, False]),
    "interior": np.array([True, True, True]),
    "batch": np.array([[False, False, True], [False, True, True], [True, True, True]]),
}

LOC3 = _rows(0.3, -0.2, 0.5)
SCALE3 = _rows(0.8, 1.1, 0.6)
LOC3_BATCH = _rows([-0.4, 0.1, 0.9], [0.2, 0.6, -0.3], [0.0, -0.5, 0.4])
SCALE3_BATCH = _rows([0.7, 1.3, 0.5], [1.0, 0.9, 1.2], [0.6, 0.8, 1.5])
LOGITS3 = _rows(0.3, -0.5, 1.1)
LOGITS3_BATCH = _rows([-0.2, 0.8, 0.1], [1.2, -0.3, 0.4], [0.0, 0.5, -1.0])
TEMPERATURE = np.float64(0.7)
TEMPERATURE_BATCH = _rows(0.5, 0.9, 1.4)


def _scalar(x: float) -> np.ndarray:
    return np.array(x, dtype=np.float64)


CASES: dict[str, Case] = {
    "GaussianSparsemax-K3": Case(
        lambda loc, scale: ma.GaussianSparsemax(loc, scale),
        (LOC3, SCALE3),
        (LOC3_BATCH, SCALE3_BATCH),
        K3_POINTS,
    ),
    "GaussianSparsemax-K2": Case(
        lambda loc, scale: ma.GaussianSparsemax(loc, scale),
        (_rows(0.3, -0.2), _rows(0.8, 1.1)),
        (_rows([0.3, 0.1], [-0.2, 0.4], [0.9, -0.1]), _rows([0.8, 1.1], [0.5, 0.7], [1.2, 0.4])),
        K2_POINTS,
    ),
    "MixedDirichlet": Case(
        lambda face_logits, concentration: ma.MixedDirichlet(face_logits, concentration),
        (LOGITS3, _rows(0.7, 1.5, 2.0)),
        (LOGITS3_BATCH, _rows([0.5, 1.2, 3.0], [2.0, 0.8, 1.1], [1.5, 0.6, 0.9])),
        K3_POINTS,
    ),
    "NonEmptyBernoulli": Case(
        lambda face_logits: ma.NonEmptyBernoulli(face_logits),
        (LOGITS3,),
        (LOGITS3_BATCH,),
        MASKS,
    ),
    "HardConcrete": Case(
        lambda logits, temperature, low, high: ma.HardConcrete(logits, temperature, low, high),
        (_scalar(0.4), TEMPERATURE, _scalar(-0.2), _scalar(1.3)),
        (_rows(0.4, -0.6, 1.0), TEMPERATURE_BATCH, _rows(-0.1, -0.3, -0.2), _rows(1.1, 1.2, 1.4)),
        K2_POINTS,
    ),
    "KDHardConcrete": Case(  # log_prob exists for K = 2 only (it is Hard Concrete there)
        lambda logits, temperature, scale: ma.KDHardConcrete(logits, temperature, scale),
        (_rows(0.4, -0.3), TEMPERATURE, _scalar(1.4)),
        (_rows([0.4, -0.3], [-0.5, 0.2], [1.0, 0.1]), TEMPERATURE_BATCH, _rows(1.2, 1.6, 2.0)),
        K2_POINTS,
    ),
    "GumbelSoftmax": Case(
        lambda logits, temperature: ma.GumbelSoftmax(logits, temperature),
        (LOGITS3, TEMPERATURE),
        (LOGITS3_BATCH, TEMPERATURE_BATCH),
        # the density lives on the interior only: the batch is three interior points
        {
            **K3_POINTS,
            "batch": _rows([0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25]),
        },
        minus_inf=frozenset({"vertex", "edge"}),
    ),
    "GumbelSoftmax-hard": Case(
        lambda logits, temperature: ma.GumbelSoftmax(logits, temperature, hard=True),
        (LOGITS3, TEMPERATURE),
        (LOGITS3_BATCH, TEMPERATURE_BATCH),
        # the straight-through forward value lives on the vertices only: three vertices
        {**K3_POINTS, "batch": _rows([0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])},
        minus_inf=frozenset({"edge", "interior"}),
    ),
}

PAIRS = [(name, kind) for name, case in CASES.items() for kind in case.points]
FINITE = [(n, k) for n, k in PAIRS if k not in CASES[n].minus_inf]
MINUS_INF = [(n, k) for n, k in PAIRS if k in CASES[n].minus_inf]
SINGLE = [(n, k) for n, k in PAIRS if k != "batch"]  # the vmap tests batch the parameters


def _ids(pairs: list[tuple[str, str]]) -> list[str]:
    return [f"{name}-{kind}" for name, kind in pairs]


def _params(case: Case, kind: str) -> tuple[Any, ...]:
    return case.batch_params if kind == "batch" else case.params


# ---------------------------------------------------------------------------------------------
# Framework plumbing.


def _torch() -> Any:
    return pytest.importorskip("torch", reason="torch is not installed: torch autodiff untested")


def _jax() -> Any:
    jax = pytest.importorskip("jax", reason="jax is not installed: JAX autodiff untested")
    jax.config.update("jax_enable_x64", True)  # as tests/conftest.py does for the backends
    return jax


def _torch_function(case: Case, kind: str) -> tuple[Callable[..., Any], list[Any]]:
    """``(f, params)``: ``f(*params) = Dist(*params).log_prob(y)`` on float64 torch leaves."""
    torch = _torch()
    y = torch.from_numpy(case.points[kind])
    params = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in _params(case, kind)]
    return (lambda *p: case.build(*p).log_prob(y)), params


def _jax_function(case: Case, kind: str) -> tuple[Callable[..., Any], list[Any]]:
    """``(f, params)`` as :func:`_torch_function`, on float64 JAX arrays, always batched.

    Every kind uses ``batch_params`` (batch shape ``(BATCH,)``), the single point of a kind
    broadcast to ``(BATCH, K)``: JAX's eager mode compiles one kernel per primitive, shape and
    transformation, and that compilation is nearly all of the JAX tests' time, so one set of
    shapes per distribution keeps it to one compilation per family rather than two
    (the unbatched path runs on JAX in the vmap tests' loop, and is gradchecked on torch).
    ``check_grads`` evaluates its finite differences on NumPy arrays (it adds NumPy steps to the
    primals), so ``f`` makes its arguments JAX arrays first; on tracers that is the identity.
    """
    _jax()
    import jax.numpy as jnp

    y = case.points[kind]
    y = jnp.asarray(np.broadcast_to(y, (BATCH, y.shape[-1])))
    params = [jnp.asarray(p, dtype=jnp.float64) for p in case.batch_params]
    return (lambda *p: case.build(*(jnp.asarray(x) for x in p)).log_prob(y)), params


def _assert_all_zero(values: Any, what: str) -> None:
    for value in values:
        array = np.asarray(value)
        assert np.all(array == 0), f"{what}: expected exactly 0, got {array}"


# ---------------------------------------------------------------------------------------------
# 1. torch: gradcheck and gradgradcheck in float64.


@pytest.mark.parametrize(("name", "kind"), FINITE, ids=_ids(FINITE))
def test_torch_gradcheck(name: str, kind: str) -> None:
    torch = _torch()
    f, params = _torch_function(CASES[name], kind)
    assert torch.isfinite(f(*params)).all()
    # reverse mode, forward mode, and the reverse-mode vjp under vmap (check_batched_grad)
    assert torch.autograd.gradcheck(f, params, check_forward_ad=True, check_batched_grad=True)
    # reverse over reverse, and forward over reverse
    assert torch.autograd.gradgradcheck(f, params, check_fwd_over_rev=True)
    # forward over forward (which gradgradcheck lacks): the Hessian equals reverse over
    # reverse, just verified; the same derivative summed in another order, so to rounding
    argnums = tuple(range(len(params)))
    detached = [p.detach() for p in params]
    total = lambda *p: f(*p).sum()  # noqa: E731
    forward = torch.func.jacfwd(torch.func.jacfwd(total, argnums), argnums)(*detached)
    reverse = torch.func.jacrev(torch.func.jacrev(total, argnums), argnums)(*detached)
    for row_f, row_r in zip(forward, reverse, strict=True):
        for a, b in zip(row_f, row_r, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("name", "kind"), MINUS_INF, ids=_ids(MINUS_INF))
def test_torch_minus_inf_has_zero_derivatives(name: str, kind: str) -> None:
    """``log_prob = -inf`` for all parameters: every derivative is exactly 0 (no NaN)."""
    torch = _torch()
    f, params = _torch_function(CASES[name], kind)
    assert torch.all(f(*params) == -torch.inf)
    argnums = tuple(range(len(params)))
    detached = [p.detach() for p in params]
    modes = {"rev": torch.func.jacrev, "fwd": torch.func.jacfwd}
    for inner, jacobian in modes.items():
        _assert_all_zero(jacobian(f, argnums)(*detached), f"{inner} Jacobian")
        for outer, hessian in modes.items():
            second = hessian(jacobian(f, argnums), argnums)(*detached)
            _assert_all_zero([h for row in second for h in row], f"{outer} over {inner}")


# ---------------------------------------------------------------------------------------------
# 2. JAX: check_grads of orders 1 and 2, forward and reverse, in float64.


@pytest.mark.parametrize(("name", "kind"), FINITE, ids=_ids(FINITE))
def test_jax_check_grads(name: str, kind: str) -> None:
    _jax()
    from jax.test_util import check_grads

    f, params = _jax_function(CASES[name], kind)
    assert np.all(np.isfinite(np.asarray(f(*params))))
    check_grads(f, params, order=2, modes=("fwd", "rev"))


def _jax_derivatives(f: Callable[..., Any], params: list[Any]) -> list[Any]:
    """Every derivative ``check_grads(order=2, modes=("fwd", "rev"))`` takes — the JVP, the VJP,
    and each of them of each — along tangents and cotangents of ones, as a list of arrays.

    For functions without finite differences (constant -inf, or no parameter at all).  All-ones
    directions sum every entry of a Jacobian or Hessian with a nonzero weight, so a NaN or an
    infinity anywhere shows.  The compositions are those of ``check_grads``, so they reuse the
    kernels it compiled for the same shapes; ``jax.jacfwd``/``jacrev`` (vmapped) would compile a
    new set.
    """
    jax = _jax()
    import jax.numpy as jnp

    tangents = tuple(jnp.ones_like(p) for p in params)

    def fwd(g: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *p: jax.jvp(g, p, tangents)[1]

    def rev(g: Callable[..., Any]) -> Callable[..., Any]:
        def pulled(*p: Any) -> Any:
            out, pullback = jax.vjp(g, *p)
            return pullback(jax.tree_util.tree_map(jnp.ones_like, out))

        return pulled

    derivatives = [fwd(f), rev(f), fwd(fwd(f)), rev(fwd(f)), fwd(rev(f)), rev(rev(f))]
    return [leaf for d in derivatives for leaf in jax.tree_util.tree_leaves(d(*params))]


@pytest.mark.parametrize(("name", "kind"), MINUS_INF, ids=_ids(MINUS_INF))
def test_jax_minus_inf_has_zero_derivatives(name: str, kind: str) -> None:
    """``log_prob = -inf`` for all parameters: every derivative is exactly 0 (no NaN)."""
    f, params = _jax_function(CASES[name], kind)
    assert np.all(np.asarray(f(*params)) == -np.inf)
    _assert_all_zero(_jax_derivatives(f, params), "derivative of -inf")


# ---------------------------------------------------------------------------------------------
# 3. vmap over a batch of parameters equals a loop, for values and gradients.


def _assert_close(batched: Any, looped: list[Any]) -> None:
    np.testing.assert_allclose(
        np.asarray(batched),
        np.stack([np.asarray(v) for v in looped]),
        rtol=VMAP_RTOL,
        atol=VMAP_ATOL,
    )


@pytest.mark.parametrize(("name", "kind"), SINGLE, ids=_ids(SINGLE))
def test_torch_vmap_equals_loop(name: str, kind: str) -> None:
    torch = _torch()
    case = CASES[name]
    y = torch.from_numpy(case.points[kind])

    def f(*params: Any) -> Any:
        return case.build(*params).log_prob(y)

    batch = [torch.from_numpy(p) for p in case.batch_params]
    rows = [[p[i] for p in batch] for i in range(BATCH)]
    argnums = tuple(range(len(batch)))
    _assert_close(torch.func.vmap(f)(*batch), [f(*row) for row in rows])
    gradient = torch.func.grad(f, argnums)
    grads = torch.func.vmap(gradient)(*batch)
    looped = [gradient(*row) for row in rows]
    for j in argnums:
        _assert_close(grads[j], [g[j] for g in looped])
        if kind in case.minus_inf:
            _assert_all_zero([grads[j]], "gradient of -inf")


@pytest.mark.parametrize(("name", "kind"), SINGLE, ids=_ids(SINGLE))
def test_jax_vmap_equals_loop(name: str, kind: str) -> None:
    jax = _jax()
    import jax.numpy as jnp

    case = CASES[name]
    y = jnp.asarray(case.points[kind])

    def f(*params: Any) -> Any:
        return case.build(*params).log_prob(y)

    batch = [jnp.asarray(p) for p in case.batch_params]
    rows = [[p[i] for p in batch] for i in range(BATCH)]
    argnums = tuple(range(len(batch)))
    _assert_close(jax.vmap(f)(*batch), [f(*row) for row in rows])
    gradient = jax.grad(f, argnums)
    grads = jax.vmap(gradient)(*batch)
    looped = [gradient(*row) for row in rows]
    for j in argnums:
        _assert_close(grads[j], [g[j] for g in looped])
        if kind in case.minus_inf:
            _assert_all_zero([grads[j]], "gradient of -inf")


# ---------------------------------------------------------------------------------------------
# MaxEntMixed: no free parameters.  Its density is a function of K, bits and the face size only,
# so there is nothing to gradcheck (no xfail: there is no parameter to differentiate).  What
# must hold is that its one array leaf, log_size_probs (a function of K and bits, carried for
# dtype and device), does not enter log_prob: zero derivatives, no NaN, the closed-form value.


def _maxent_value(kind: str) -> np.ndarray:
    """``N (|supp y| − 1) ln 2 − log Z`` at N = 2 bits, K = 3, from first principles."""
    sizes = np.sum(K3_POINTS[kind] > 0, axis=-1)
    log_z = np.log(sum(np.exp(w) for w in _maxent_log_weights(3, 2.0)))
    return np.broadcast_to(2.0 * (sizes - 1) * np.log(2) - log_z, (BATCH,))


@pytest.mark.parametrize("kind", list(K3_POINTS))
def test_jax_maxent_log_prob_is_constant(kind: str) -> None:
    """Derivatives w.r.t. the pytree leaf of orders 1 and 2, forward and reverse, are 0."""
    jax = _jax()
    import jax.numpy as jnp

    y = jnp.asarray(K3_POINTS[kind])
    d = ma.MaxEntMixed(3, bits=2.0, like=jnp.zeros((), dtype=jnp.float64), batch_shape=(BATCH,))
    (leaf,), treedef = jax.tree_util.tree_flatten(d)

    def f(log_size_probs: Any) -> Any:
        return jax.tree_util.tree_unflatten(treedef, [log_size_probs]).log_prob(y)

    np.testing.assert_allclose(np.asarray(f(leaf)), _maxent_value(kind), rtol=1e-14)
    _assert_all_zero(_jax_derivatives(f, [leaf]), "derivative w.r.t. log_size_probs")


@pytest.mark.parametrize("kind", list(K3_POINTS))
def test_torch_maxent_log_prob_is_constant(kind: str) -> None:
    """Built ``like`` a tensor that requires grad, ``log_prob`` is a constant (no graph)."""
    torch = _torch()
    like = torch.zeros((), dtype=torch.float64, requires_grad=True)
    d = ma.MaxEntMixed(3, bits=2.0, like=like, batch_shape=(BATCH,))
    value = d.log_prob(torch.from_numpy(K3_POINTS[kind]))
    assert not value.requires_grad
    np.testing.assert_allclose(value.numpy(), _maxent_value(kind), rtol=1e-14)


def _maxent_log_weights(K: int, bits: float) -> list[float]:
    """``log C(K, k) + N (k − 1) ln 2 − log (k − 1)!``, k = 1..K, from first principles."""
    from math import comb, factorial, log

    return [
        log(comb(K, k)) + bits * (k - 1) * log(2) - log(factorial(k - 1)) for k in range(1, K + 1)
    ]


# ---------------------------------------------------------------------------------------------
# Negative controls: the checks above, at their tolerances, catch a 1 % error in a derivative.
# The planted errors leave the value unchanged: ``loc + c·(loc − sg(loc))^n`` equals ``loc``,
# with derivative ``1 + c`` (n = 1: every first derivative w.r.t. loc 1 % off) or ``1`` and
# second derivative ``2c`` (n = 2: first derivatives exact, the Hessian off by ``2c·∂f``).
# Finite differences move ``sg(loc)`` with ``loc`` and never see the planted term.  At the
# Gaussian-Sparsemax edge point, where the tolerance argument above is the tightest.

PLANTED = 0.01


@pytest.mark.parametrize("order", [1, 2])
def test_torch_checks_catch_a_planted_error(order: int) -> None:
    torch = _torch()
    from torch.autograd.gradcheck import GradcheckError

    f, params = _torch_function(CASES["GaussianSparsemax-K3"], "edge")

    def planted(loc: Any, scale: Any) -> Any:
        return f(loc + PLANTED * (loc - loc.detach()) ** order, scale)

    if order == 1:
        with pytest.raises(GradcheckError):
            torch.autograd.gradcheck(planted, params)
    else:
        assert torch.autograd.gradcheck(planted, params)
        with pytest.raises(GradcheckError):
            torch.autograd.gradgradcheck(planted, params)


@pytest.mark.parametrize("order", [1, 2])
def test_jax_checks_catch_a_planted_error(order: int) -> None:
    jax = _jax()
    from jax.test_util import check_grads

    f, params = _jax_function(CASES["GaussianSparsemax-K3"], "edge")

    def planted(loc: Any, scale: Any) -> Any:
        return f(loc + PLANTED * (loc - jax.lax.stop_gradient(loc)) ** order, scale)

    if order == 2:
        check_grads(planted, params, order=1, modes=("fwd", "rev"))
    with pytest.raises(AssertionError):
        check_grads(planted, params, order=order, modes=("fwd", "rev"))
