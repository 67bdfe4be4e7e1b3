"""PyTorch citizenship: distributions built from tensors are ``torch.distributions.Distribution``s.

They have ``support``, ``arg_constraints``, ``has_rsample``, ``torch.Size`` shapes, torch's
``expand`` semantics, ``sample(sample_shape)`` with torch's global generator (and the mixedarray
form ``sample(generator, shape)``), ``entropy()``, and ``torch.distributions.kl_divergence`` for
every pair with an exact KL — all delegating to the one implementation — and they compile with
``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import copy
import math
import pickle
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mixedarray as ma  # noqa: E402

D = torch.distributions
C = torch.distributions.constraints

LOC = [[0.5, -0.2, 0.1], [0.0, 1.0, -1.0]]
ALPHA = [[1.5, 0.5, 2.0], [0.7, 0.7, 0.7]]
TAU = [0.5, 0.8]


def t(x):
    return torch.tensor(x, dtype=torch.float64)


class Case:
    def __init__(self, params, build, entropy):
        self.params = params  # name -> nested lists
        self.build = build  # dict of tensors -> distribution
        self.entropy = entropy  # "exact", "mc" or None (no density: no estimator)

    def tensors(self, requires_grad=False):
        return {k: t(v).requires_grad_(requires_grad) for k, v in self.params.items()}

    def make(self, requires_grad=False):
        return self.build(self.tensors(requires_grad))


CASES = {
    "GaussianSparsemax": Case(
        {"loc": LOC, "scale": [[0.7] * 3] * 2},
        lambda p: ma.GaussianSparsemax(p["loc"], p["scale"], num_nodes=16),
        "mc",
    ),
    "GaussianSparsemax-K2": Case(
        {"loc": [r[:2] for r in LOC], "scale": [[0.7] * 2] * 2},
        lambda p: ma.GaussianSparsemax(p["loc"], p["scale"]),
        "exact",
    ),
    "MixedDirichlet": Case(
        {"face_logits": LOC, "concentration": ALPHA},
        lambda p: ma.MixedDirichlet(p["face_logits"], p["concentration"]),
        "exact",
    ),
    "NonEmptyBernoulli": Case(
        {"face_logits": LOC}, lambda p: ma.NonEmptyBernoulli(p["face_logits"]), "exact"
    ),
    "MaxEntMixed": Case(
        {"like": LOC}, lambda p: ma.MaxEntMixed(3, 2.0, like=p["like"], batch_shape=(2,)), "exact"
    ),
    "HardConcrete": Case(
        {"logits": [0.3, -1.0], "temperature": TAU, "low": [-0.1, -0.2], "high": [1.1, 1.05]},
        lambda p: ma.HardConcrete(p["logits"], p["temperature"], p["low"], p["high"]),
        "exact",
    ),
    "KDHardConcrete": Case(
        {"logits": LOC, "temperature": TAU, "scale": [1.2, 1.5]},
        lambda p: ma.KDHardConcrete(p["logits"], p["temperature"], p["scale"]),
        None,
    ),
    "KDHardConcrete-K2": Case(
        {"logits": [r[:2] for r in LOC], "temperature": TAU, "scale": [1.2, 1.5]},
        lambda p: ma.KDHardConcrete(p["logits"], p["temperature"], p["scale"]),
        "exact",
    ),
    "GumbelSoftmax": Case(
        {"logits": LOC, "temperature": TAU},
        lambda p: ma.GumbelSoftmax(p["logits"], p["temperature"]),
        "mc",
    ),
    "GumbelSoftmax-hard": Case(
        {"logits": LOC, "temperature": TAU},
        lambda p: ma.GumbelSoftmax(p["logits"], p["temperature"], hard=True),
        "mc",
    ),
}
NAMES = list(CASES)
WITH_DENSITY = [n for n in NAMES if CASES[n].entropy is not None]

POINTS = {
    2: [[[0.3, 0.7]], [[0.0, 1.0]], [[1.0, 0.0]]],
    3: [[[0.2, 0.3, 0.5]], [[0.0, 0.4, 0.6]], [[1.0, 0.0, 0.0]]],
}


def _points(d):
    """Fixed points (3, 1, K) at which every density is finite (masks for NonEmptyBernoulli)."""
    y = t(POINTS[d.num_vertices])
    if isinstance(d, ma.NonEmptyBernoulli):
        return y > 0
    if isinstance(d, ma.GumbelSoftmax) and not d.hard:
        return t([[[0.2, 0.3, 0.5]], [[0.1, 0.4, 0.5]], [[0.7, 0.2, 0.1]]])
    if isinstance(d, ma.GumbelSoftmax):
        return t(np.eye(3)[:, None, :].tolist())
    return y


def _close(a, b, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(
        torch.as_tensor(a).detach(), torch.as_tensor(b).detach(), rtol=rtol, atol=atol
    )


# ---------------------------------------------------------------------------------------------
# The torch.distributions.Distribution interface


@pytest.mark.parametrize("name", NAMES)
def test_is_a_torch_distribution_with_support_and_shapes(name):
    d = CASES[name].make()
    assert isinstance(d, D.Distribution)
    assert type(d).__module__ == "mixedarray.torch"
    assert isinstance(d, getattr(ma, type(d).__name__))  # and still the mixedarray class
    assert type(d.batch_shape) is torch.Size and d.batch_shape == torch.Size([2])
    assert type(d.event_shape) is torch.Size and d.event_shape == torch.Size([d.num_vertices])
    assert d.has_rsample is (not isinstance(d, ma.NonEmptyBernoulli))
    torch.manual_seed(0)
    y = d.sample((50,))
    if isinstance(d, ma.NonEmptyBernoulli):
        assert d.support.event_dim == 1
        assert y.dtype == torch.bool
        assert isinstance(d.support, C.independent) and d.support.base_constraint is C.boolean
    else:
        assert d.support is C.simplex
    assert d.support.check(y).all()
    assert y.shape == (50, 2, d.num_vertices)


def test_support_check_rejects_points_off_the_support():
    d = CASES["MixedDirichlet"].make()
    assert not d.support.check(t([0.5, 0.6, 0.1]))
    masks = CASES["NonEmptyBernoulli"].make().support
    assert not masks.check(t([[0.5, 1.0, 0.0]])).all()


@pytest.mark.parametrize("name", NAMES)
def test_arg_constraints_check_the_parameters(name):
    d = CASES[name].make()
    assert d.arg_constraints, "every distribution declares its parameters' constraints"
    for pname, constraint in d.arg_constraints.items():
        assert pname in d.parameter_names
        assert constraint.check(getattr(d, pname)).all(), pname


def test_arg_constraints_flag_bad_values():
    bad = [
        (ma.GaussianSparsemax(t(LOC), -t(ALPHA), validate_args=False), "scale"),
        (ma.MixedDirichlet(t(LOC), -t(ALPHA), validate_args=False), "concentration"),
        (ma.HardConcrete(t([0.3]), t([0.5]), t([0.2]), validate_args=False), "low"),
        (ma.KDHardConcrete(t(LOC), t(TAU), t([0.5, 2.0]), validate_args=False), "scale"),
        (ma.GumbelSoftmax(t(LOC), -t(TAU), validate_args=False), "temperature"),
    ]
    for d, pname in bad:
        assert not d.arg_constraints[pname].check(getattr(d, pname)).all(), (d, pname)


@pytest.mark.parametrize("name", NAMES)
def test_expand_has_torch_semantics(name):
    d = CASES[name].make()
    e = d.expand(torch.Size([4, 2]))
    assert type(e) is type(d)
    assert e.batch_shape == torch.Size([4, 2])
    assert e.event_shape == d.event_shape
    assert d.expand([4, 2], _instance=None).batch_shape == torch.Size([4, 2])
    torch.manual_seed(1)
    assert e.sample((3,)).shape == (3, 4, 2, d.num_vertices)
    with pytest.raises(ValueError, match="cannot be reached"):
        d.expand(torch.Size([3]))
    if CASES[name].entropy is not None:
        y = _points(d)
        lp = d.log_prob(y)
        _close(e.log_prob(y[:, None]), lp[:, None].expand(3, 4, 2))


@pytest.mark.parametrize("name", NAMES)
def test_independent_reinterprets_the_batch(name):
    d = CASES[name].make()
    joint = D.Independent(d, 1)
    assert joint.batch_shape == torch.Size([])
    assert joint.event_shape == torch.Size([2, d.num_vertices])
    torch.manual_seed(2)
    y = joint.sample((5,))
    assert y.shape == (5, 2, d.num_vertices)
    if CASES[name].entropy is not None:
        lp = joint.log_prob(y)
        assert lp.shape == (5,)
        _close(lp, d.log_prob(y).sum(-1))
    if CASES[name].entropy == "exact":
        _close(joint.entropy(), d.entropy().sum(-1))


# ---------------------------------------------------------------------------------------------
# Sampling: torch's global generator, and the mixedarray forms


@pytest.mark.parametrize("name", NAMES)
def test_sample_with_the_global_generator_is_reproducible(name):
    d = CASES[name].make()
    K = d.num_vertices
    torch.manual_seed(0)
    first = d.sample()
    again = d.sample()
    torch.manual_seed(0)
    _close(d.sample(), first)
    assert first.shape == (2, K)
    assert not torch.equal(first, again)  # the global generator advanced
    for call in (
        lambda: d.sample((4,)),
        lambda: d.sample(torch.Size([4])),
        lambda: d.sample(sample_shape=(4,)),
        lambda: d.sample(sample_shape=torch.Size([4])),
        lambda: d.sample(None, (4,)),
    ):
        torch.manual_seed(5)
        y = call()
        assert y.shape == (4, 2, K)
        torch.manual_seed(5)
        _close(d.sample((4,)), y)
    assert d.sample((2, 3)).shape == (2, 3, 2, K)


@pytest.mark.parametrize("name", NAMES)
def test_sample_with_a_generator_or_a_seed(name):
    d = CASES[name].make()

    def gen(seed):
        return torch.Generator().manual_seed(seed)

    _close(d.sample(gen(1), (3,)), d.sample(gen(1), (3,)))
    _close(d.sample(rng=gen(1), sample_shape=(3,)), d.sample(gen(1), (3,)))
    _close(d.sample(7, (3,)), d.sample(7, (3,)))
    assert not torch.equal(d.sample(gen(1), (3,)), d.sample(gen(2), (3,)))
    assert d.sample(gen(1)).shape == (2, d.num_vertices)
    with pytest.raises(TypeError):
        d.sample((3,), (3,))


@pytest.mark.parametrize("name", NAMES)
def test_rsample_is_pathwise(name):
    case = CASES[name]
    raw = case.tensors(requires_grad=True)
    d = case.build(raw)
    if not d.has_rsample:
        with pytest.raises(NotImplementedError, match="score-function"):
            d.rsample((3,))
        return
    torch.manual_seed(3)
    y = d.rsample((3,))
    torch.manual_seed(3)
    drawn = d.sample((3,))
    _close(y, drawn)
    assert not drawn.requires_grad
    if isinstance(d, ma.MaxEntMixed):  # no free parameters
        return
    weights = torch.arange(1.0, d.num_vertices + 1, dtype=torch.float64)
    (y * weights).sum().backward()
    # Gradients reach the tensors the distribution was built from.
    assert any(x.grad is not None and bool(x.grad.abs().sum() > 0) for x in raw.values())


# ---------------------------------------------------------------------------------------------
# Entropy and KL


@pytest.mark.parametrize("name", NAMES)
def test_entropy_method_is_the_exact_entropy(name):
    d = CASES[name].make()
    if CASES[name].entropy == "exact":
        _close(d.entropy(), ma.entropy(d, method="exact"))
        assert d.entropy().shape == d.batch_shape
    else:
        with pytest.raises(NotImplementedError):
            d.entropy()


def _md(eta, alpha):
    return ma.MixedDirichlet(t(eta), t(alpha))


def _kl_pairs():
    """(label, p, q): every kind of registered pair."""
    eta_q = [[0.1, 0.3, -0.4], [1.0, -0.5, 0.2]]
    alpha_q = [[1.0, 2.0, 0.8], [1.2, 1.2, 1.2]]
    two = CASES["GaussianSparsemax-K2"]
    return [
        ("MixedDirichlet", _md(LOC, ALPHA), _md(eta_q, alpha_q)),
        ("NonEmptyBernoulli", ma.NonEmptyBernoulli(t(LOC)), ma.NonEmptyBernoulli(t(eta_q))),
        ("MixedDirichlet-MaxEnt", _md(LOC, ALPHA), ma.MaxEntMixed(3, 1.0, like=t(LOC))),
        (
            "MaxEnt-MaxEnt",
            ma.MaxEntMixed(3, 2.0, like=t(LOC), batch_shape=(2,)),
            ma.MaxEntMixed(3, 0.0, like=t(LOC)),
        ),
        ("GaussianSparsemax-MaxEnt", two.make(), ma.MaxEntMixed(2, like=t(LOC))),
        ("HardConcrete-MaxEnt", CASES["HardConcrete"].make(), ma.MaxEntMixed(2, like=t(LOC))),
        (
            "KDHardConcrete-MaxEnt",
            CASES["KDHardConcrete-K2"].make(),
            ma.MaxEntMixed(2, 1.0, like=t(LOC)),
        ),
    ]


KL_LABELS = [label for label, _, _ in _kl_pairs()]


@pytest.mark.parametrize("label", KL_LABELS)
def test_torch_kl_divergence_is_the_exact_kl(label):
    _, p, q = next(pair for pair in _kl_pairs() if pair[0] == label)
    kl = D.kl_divergence(p, q)
    _close(kl, ma.kl_divergence(p, q, method="exact"))
    assert kl.shape == p.batch_shape
    assert torch.all(kl >= 0)
    assert torch.all(kl > 1e-6)  # these pairs differ
    if type(p) is type(q):
        _close(D.kl_divergence(p, p), torch.zeros(p.batch_shape, dtype=torch.float64))


def _face_kl(p, q):
    """KL by enumerating the faces: exact when both laws are uniform within faces (or are
    face laws themselves)."""
    faces = ma.faces.enumerate(p.num_vertices, like=p._like)[:, None, :]
    lp, lq = p.face_log_prob(faces), q.face_log_prob(faces)
    return torch.sum(torch.exp(lp) * (lp - lq), dim=0)


def test_kl_of_face_laws_by_enumeration():
    _, p, q = _kl_pairs()[1]
    _close(D.kl_divergence(p, q), _face_kl(p, q), rtol=1e-9)
    _, p, q = _kl_pairs()[3]  # MaxEntMixed: uniform on every face, so KL = KL of the faces
    _close(D.kl_divergence(p, q), _face_kl(p, q), rtol=1e-9)


@pytest.mark.parametrize(
    "label",
    [
        "MixedDirichlet",
        "MixedDirichlet-MaxEnt",
        "GaussianSparsemax-MaxEnt",
        "HardConcrete-MaxEnt",
        "KDHardConcrete-MaxEnt",
    ],
)
def test_kl_against_a_monte_carlo_average_of_log_ratios(label):
    """``E_p[log p(Y) − log q(Y)]`` from samples and the densities, within 5 standard errors
    (an estimate independent of the exact routes)."""
    _, p, q = next(pair for pair in _kl_pairs() if pair[0] == label)
    torch.manual_seed(11)
    y = p.sample((20000,))
    ratio = p.log_prob(y) - q.log_prob(y)
    mean, stderr = ratio.mean(0), ratio.std(0) / math.sqrt(len(ratio))
    assert torch.all(stderr < 0.1 * mean.abs() + 1e-3)
    assert torch.all((D.kl_divergence(p, q) - mean).abs() < 5 * stderr + 1e-12), (mean, stderr)
    # Negative control: a planted error of 10 standard errors is detected.
    assert torch.all((D.kl_divergence(p, q) + 10 * stderr - mean).abs() >= 5 * stderr)


def test_hard_concrete_kl_to_the_uniform_bit_is_log3_minus_entropy():
    _, p, q = _kl_pairs()[5]
    _close(D.kl_divergence(p, q), math.log(3) - p.entropy())


def test_pairs_without_an_exact_kl_raise_not_implemented():
    gs3, gumbel = CASES["GaussianSparsemax"].make(), CASES["GumbelSoftmax"].make()
    md, neb = CASES["MixedDirichlet"].make(), CASES["NonEmptyBernoulli"].make()
    hc, kd3 = CASES["HardConcrete"].make(), CASES["KDHardConcrete"].make()
    maxent3 = ma.MaxEntMixed(3, like=t(LOC))
    unregistered = [
        (gumbel, gumbel),
        (gs3, gs3),
        (hc, hc),
        (maxent3, md),
        (md, neb),
        (md, D.Dirichlet(t(ALPHA))),
        (gumbel, maxent3),
    ]
    registered_without_closed_form = [(gs3, maxent3), (kd3, maxent3)]
    for p, q in unregistered + registered_without_closed_form:
        with pytest.raises(NotImplementedError):
            D.kl_divergence(p, q)


# ---------------------------------------------------------------------------------------------
# Pickling and copies


class UserMixedDirichlet(ma.MixedDirichlet):
    """A user's subclass: its torch twin pickles too."""


@pytest.mark.parametrize("name", NAMES)
def test_pickle_and_deepcopy_keep_the_torch_class(name):
    d = CASES[name].make()
    for r in (pickle.loads(pickle.dumps(d)), copy.deepcopy(d)):
        assert type(r) is type(d)
        assert isinstance(r, D.Distribution)
        assert r.batch_shape == d.batch_shape
        for pname in d.parameter_names:
            _close(getattr(r, pname), getattr(d, pname), rtol=0, atol=0)
        if CASES[name].entropy is not None:
            _close(r.log_prob(_points(d)), d.log_prob(_points(d)), rtol=0, atol=0)


def test_pickle_a_user_subclass():
    d = UserMixedDirichlet(t(LOC), t(ALPHA))
    assert isinstance(d, D.Distribution) and isinstance(d, UserMixedDirichlet)
    r = pickle.loads(pickle.dumps(d))
    assert type(r) is type(d)
    _close(r.entropy(), d.entropy())


# ---------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True): every distribution, built inside the compiled function


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compile(fn, backend="aot_eager"):
    return torch.compile(fn, backend=backend, fullgraph=True, dynamic=False)


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_compile_log_prob(name, fresh_dynamo):
    case = CASES[name]
    raw = case.tensors()
    y = _points(case.make())

    def log_prob(raw, y):
        return case.build(raw).log_prob(y)

    _close(_compile(log_prob)(raw, y), log_prob(raw, y), rtol=1e-12)


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_compile_entropy(name, fresh_dynamo):
    case = CASES[name]
    raw = case.tensors()

    def entropy(raw):
        # rng=None: torch's global generator, used only where no exact entropy exists.
        return ma.entropy(case.build(raw), rng=None, num_samples=64, return_stderr=True)

    torch.manual_seed(4)
    compiled = _compile(entropy)(raw)
    torch.manual_seed(4)
    eager = entropy(raw)
    if case.entropy == "exact":
        _close(compiled.value, eager.value, rtol=1e-12)
        assert torch.all(compiled.stderr == 0)
    else:  # Monte Carlo with the same seed: aot_eager draws the same numbers
        assert torch.all(compiled.stderr > 0)
        _close(compiled.value, eager.value, rtol=1e-9)
        _close(compiled.stderr, eager.stderr, rtol=1e-6)


def test_compile_sample_of_a_sampling_only_distribution(fresh_dynamo):
    case = CASES["KDHardConcrete"]
    raw = case.tensors()

    def draw(raw):
        return case.build(raw).rsample((4,))

    torch.manual_seed(6)
    compiled = _compile(draw)(raw)
    torch.manual_seed(6)
    _close(compiled, draw(raw))


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="inductor needs a C++ compiler",
)
def test_compile_with_inductor_where_it_is_cheap(fresh_dynamo):
    case = CASES["HardConcrete"]
    raw = case.tensors()
    y = _points(case.make())

    def log_prob(raw, y):
        return case.build(raw).log_prob(y)

    _close(_compile(log_prob, backend="inductor")(raw, y), log_prob(raw, y), rtol=1e-9)
