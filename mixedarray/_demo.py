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
    return np.asarray(np.from_dlpack(x)) if not isinstance(x, np.ndarray) else x


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
        grad = t.grad.numpy()
    elif name == "jax":
        import jax
        import jax.numpy as jnp

        grad = np.asarray(jax.grad(lambda x: jnp.sum(ma.sparsemax(x) * weights))(jnp.asarray(row)))
    else:
        return None
    return f"  d/dz Σ_k k·sparsemax(z)_k, first row: {np.array2string(grad, precision=3)}"


def run(seed: int = 0) -> None:
    """Print the projections of a few score rows on every installed array library."""
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
