"""``python -m mixedarray demo``: the same functions on every installed array library.

Runs on NumPy alone; every other installed library (array-api-strict, PyTorch, JAX, CuPy with
a GPU) is added to the tour, and its results are compared with NumPy's.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

import mixedarray as ma

PROJECTIONS: list[tuple[str, Callable[[Any], Any]]] = [
    ("sparsemax", ma.sparsemax),
    ("entmax15", ma.entmax15),
    ("entmax α=1.25", lambda z: ma.entmax(z, alpha=1.25)),
    ("softmax", ma.softmax),
]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if hasattr(x, "get"):
        return x.get()
    if isinstance(x, (np.ndarray, np.generic, float)):
        return np.asarray(x)
    return np.asarray(np.from_dlpack(x))


def _backends() -> list[tuple[str, Callable[[np.ndarray], Any]]]:
    found: list[tuple[str, Callable[[np.ndarray], Any]]] = [("numpy", lambda a: a)]
    if importlib.util.find_spec("array_api_strict"):
        import array_api_strict

        found.append(("array-api-strict", array_api_strict.asarray))
    if importlib.util.find_spec("torch"):
        import torch

        found.append(("torch", torch.from_numpy))
        if torch.cuda.is_available():
            found.append(("torch cuda", lambda a: torch.from_numpy(a).cuda()))
    if importlib.util.find_spec("jax"):
        import jax

        jax.config.update("jax_enable_x64", True)
        found.append(("jax", jax.numpy.asarray))
    if importlib.util.find_spec("cupy"):
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() > 0:
                found.append(("cupy", cupy.asarray))
        except Exception:  # no driver or no device: leave CuPy out of the tour
            pass
    return found


def _gradient_line(name: str, z: np.ndarray) -> str | None:
    row = z[0]
    weights = np.arange(row.size, dtype=row.dtype)
    if name == "torch":
        import torch

        t = torch.from_numpy(row.copy()).requires_grad_()
        (ma.sparsemax(t) * torch.from_numpy(weights)).sum().backward()
        grad = t.grad.numpy() + 0.0  # no negative zeros in the printout
    elif name == "jax":
        import jax
        import jax.numpy as jnp

        grad = np.asarray(jax.grad(lambda x: jnp.sum(ma.sparsemax(x) * weights))(jnp.asarray(row)))
    else:
        return None
    return f"  d/dz Σ_k k·sparsemax(z)_k, first row: {np.array2string(grad, precision=3)}"


def _distributions(convert: Callable[[np.ndarray], Any]) -> list[tuple[str, Any, Any]]:
    """(label, distribution, KL reference) on one library: a K = 2 bit and K = 4 examples."""
    like = convert(np.zeros(1))
    bit = ma.GaussianSparsemax(convert(np.array([-0.4, 0.0])), convert(np.full(2, 0.99)))
    return [
        ("GaussianSparsemax K=2", bit, ma.MaxEntMixed(2, like=like)),
        (
            "GaussianSparsemax K=4",
            ma.GaussianSparsemax(convert(np.array([0.3, 0.0, -0.2, 0.5])), 0.5),
            ma.MaxEntMixed(4, like=like),
        ),
        ("MaxEntMixed K=4", ma.MaxEntMixed(4, like=like), ma.MaxEntMixed(4, 1, like=like)),
        (
            "MixedDirichlet K=4",
            ma.MixedDirichlet(
                convert(np.array([0.5, -1.0, 2.0, 0.0])), convert(np.array([0.7, 1.5, 2.0, 0.3]))
            ),
            ma.MaxEntMixed(4, like=like),
        ),
        ("HardConcrete", ma.HardConcrete(convert(np.array(0.3))), ma.MaxEntMixed(2, like=like)),
        (
            "KDHardConcrete K=3",
            ma.KDHardConcrete(convert(np.array([0.2, -0.3, 0.1])), 0.7),
            ma.MaxEntMixed(3, like=like),
        ),
        (
            "GumbelSoftmax K=3",
            ma.GumbelSoftmax(convert(np.array([0.2, -0.3, 0.1])), 0.7),
            ma.MaxEntMixed(3, like=like),
        ),
        (
            "NonEmptyBernoulli K=4",
            ma.NonEmptyBernoulli(convert(np.array([0.5, -1.0, 2.0, 0.0]))),
            ma.NonEmptyBernoulli(convert(np.zeros(4))),
        ),
    ]


def _face_shares(sample: np.ndarray) -> str:
    """Shares of samples on vertices, edges and higher faces."""
    positive = sample if sample.dtype == bool else sample > 0
    dims = positive.sum(axis=-1) - 1
    return " ".join(
        f"{label} {np.mean(test(dims)):6.1%}"
        for label, test in (
            ("vertex", lambda d: d == 0),
            ("edge", lambda d: d == 1),
            ("higher", lambda d: d >= 2),
        )
    )


def _estimate_line(name: str, exact: Any, estimate: Any) -> str:
    value, stderr = float(_to_numpy(estimate.value)), float(_to_numpy(estimate.stderr))
    shown = "   (none)" if exact is None else f"{float(_to_numpy(exact)):9.4f}"
    return f"{name} exact {shown}  MC {value:9.4f} ± {stderr:.4f}"


def _distribution_tour(backends: list[tuple[str, Callable[[np.ndarray], Any]]], seed: int) -> None:
    print("\nmixed distributions: samples, faces they land on, entropy and KL (nats)")
    n = 20_000
    for name, convert in backends:
        if name == "cupy" or name.endswith("cuda"):
            continue  # the CPU tour is enough for the demo; the GPU path is the same code
        print(f"  on {name}:")
        for label, d, reference in _distributions(convert):
            y = _to_numpy(d.sample(seed, (n,)))
            print(f"    {label:<22} {_face_shares(y)}")
            kl_name = "KL to " + type(reference).__name__
            for what, compute in (
                (
                    "H",
                    lambda method, rng, d=d: ma.entropy(
                        d, method=method, rng=rng, num_samples=n, return_stderr=True
                    ),
                ),
                (
                    kl_name,
                    lambda method, rng, d=d, r=reference: ma.kl_divergence(
                        d, r, method=method, rng=rng, num_samples=n, return_stderr=True
                    ),
                ),
            ):
                print(f"    {'':<22} {_information_line(what, compute, seed)}")


def _information_line(what: str, compute: Callable[[str, int], Any], seed: int) -> str:
    try:
        exact = compute("exact", None).value
    except NotImplementedError:
        exact = None
    try:
        return _estimate_line(what, exact, compute("mc", seed + 1))
    except NotImplementedError:
        return f"{what}: no tractable density (sampling only)"


def run(seed: int = 0) -> None:
    """Print the projections and the mixed distributions on every installed array library."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(3, 6))
    z[2, 4:] = -np.inf  # masked entries
    print("mixedarray", ma.__version__, "— one implementation, every array library\n")
    print("scores z (3 rows, K = 6; the last row masks two entries with -inf):")
    print(np.array2string(z, precision=2), "\n")
    backends = _backends()
    print("installed array libraries:", ", ".join(name for name, _ in backends), "\n")
    reference = {label: fn(z) for label, fn in PROJECTIONS}
    for label, _ in PROJECTIONS:
        y = reference[label]
        nonzeros = (y > 0).sum(axis=-1)
        print(
            f"{label}: first row {np.array2string(y[0], precision=3)}, "
            f"non-zeros per row {nonzeros.tolist()}, row sums {np.round(y.sum(-1), 12).tolist()}"
        )
    print()
    for name, convert in backends:
        x = convert(z)
        worst = 0.0
        for label, fn in PROJECTIONS:
            y = fn(x)
            worst = max(worst, float(np.max(np.abs(_to_numpy(y) - reference[label]))))
        kind = f"{type(y).__module__}.{type(y).__name__}"
        print(f"{name:>16}: returns {kind}; max |difference from numpy| = {worst:.1e}")
        line = _gradient_line(name, z)
        if line:
            print(line)
    _distribution_tour(backends, seed)
