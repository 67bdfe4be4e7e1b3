"""Independent NumPy float64 reference for the derivative tests of the framework adapters.

First principles (paper-notes §5): bisection on τ for α-entmax (α = 1: softmax, α = 2:
sparsemax), the closed-form Jacobian built by hand, and test points kept away from the kinks.
"""

from __future__ import annotations

import numpy as np

MARGIN = 1e-4  # |z_i - τ| at test points, in score units



def reference(z, alpha):
    """α-entmax of ``z`` on the last axis (α = 1 softmax, α = 2 sparsemax) and its margin.

    ``alpha`` broadcasts against ``z.shape[:-1] + (1,)``.  The margin is the smallest
    ``|z_i - τ_z|`` of each row in score units (``inf`` for softmax, which has no kink).
    """
    z = np.asarray(z, dtype=np.float64)
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (*z.shape[:-1], 1))
    shifted = z - z.max(axis=-1, keepdims=True)
    if np.all(alpha == 1):
        e = np.exp(shifted)
        return e / e.sum(axis=-1, keepdims=True), np.full(z.shape[:-1], np.inf)
    x, power = (alpha - 1) * shifted, 1 / (alpha - 1)
    low, high = -np.ones_like(alpha), np.zeros_like(alpha)  # τ ∈ [max x - 1, max x]
    for _ in range(200):
        mid = (low + high) / 2
        above = np.sum(np.maximum(x - mid, 0) ** power, axis=-1, keepdims=True) >= 1
        low, high = np.where(above, mid, low), np.where(above, high, mid)
    y = np.maximum(x - low, 0) ** power
    margin = np.min(np.abs(x - low) / (alpha - 1), axis=-1)
    return y / y.sum(axis=-1, keepdims=True), margin


def jacobian(y, alpha):
    """Closed-form Jacobian ``diag(s) - s sᵀ/Σs`` with ``s = y^(2-α)`` on the support, one row."""
    s = np.where(y > 0, np.abs(y) ** (2 - alpha), 0.0)
    return np.diag(s) - np.outer(s, s) / s.sum()


def draw(rng, shape, alpha):
    """Standard normal scores whose every row keeps ``MARGIN`` from its threshold."""
    for _ in range(1000):
        z = rng.normal(size=shape)
        if np.all(reference(z, alpha)[1] >= MARGIN):
            return z
    raise AssertionError("could not draw a test point with the margin")  # pragma: no cover
