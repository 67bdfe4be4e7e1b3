r"""The face lattice of the simplex and the direct-sum base measure.

A non-empty face of :math:`\Delta_{K-1}` is a non-empty subset :math:`f \subseteq \{1..K\}`,
stored as a boolean mask over the last axis; it is the :math:`(|f|-1)`-simplex spanned by the
vertices in f.  Every point y of the simplex lies in the relative interior of exactly one face,
its support :math:`\{k : y_k > 0\}`.

The direct-sum measure :math:`\mu_\oplus` adds, over faces, the Lebesgue measure in
:math:`|f| - 1` free barycentric coordinates (counting measure on vertices).  Under it a face
with k vertices has volume :math:`1/(k-1)!` and the whole simplex
:math:`\sum_k \binom{K}{k}/(k-1)!` (paper-notes §2).

Enumeration order (documented, but nothing should depend on it): row ``c - 1`` of
:func:`enumerate` is the face with code :math:`c = \sum_k f_k 2^k`, ``c = 1 .. 2^K - 1``.
"""

from __future__ import annotations

from typing import Any

from mixedarray import _backend, _special
from mixedarray._backend import array_namespace

__all__ = ["dim", "enumerate", "log_volume", "size", "support"]

Array = Any

_MAX_ENUMERATED = 24  # 2**24 - 1 faces of K booleans: 400 MB; larger K is a clear error


def support(y: Array) -> Array:
    """The face of each point: the boolean mask ``y > 0`` over the last axis."""
    xp = array_namespace(y)
    return y > xp.zeros((), dtype=y.dtype, device=_backend.device(y))


def _as_mask(y_or_mask: Array) -> Array:
    xp = array_namespace(y_or_mask)
    return y_or_mask if y_or_mask.dtype == xp.bool else support(y_or_mask)


def _default_dtypes(xp: Any, x: Any) -> dict[str, Any]:
    return xp.__array_namespace_info__().default_dtypes(device=_backend.device(x))


def size(y_or_mask: Array) -> Array:
    """Number of vertices ``|f|`` of each face, in the library's default integer dtype."""
    xp = array_namespace(y_or_mask)
    mask = _as_mask(y_or_mask)
    return xp.sum(xp.astype(mask, _default_dtypes(xp, mask)["integral"]), axis=-1)


def dim(y_or_mask: Array) -> Array:
    """Dimension ``|f| − 1`` of each face (of a mask, or of the support of a point).

    The empty mask has dimension −1.
    """
    return size(y_or_mask) - 1


def log_volume(mask: Array) -> Array:
    r"""Log volume of each face under the direct-sum measure: :math:`-\log\Gamma(|f|)`.

    A vertex has volume 1 (log 0.), an edge 1, a triangle 1/2, a k-vertex face 1/(k−1)!.
    Floating result in the library's default dtype; the empty mask, which is not a face, gives
    ``-inf`` (volume 0).
    """
    xp = array_namespace(mask)
    if mask.dtype != xp.bool:
        raise TypeError(f"mask must be a boolean array, got dtype {mask.dtype}")
    k = xp.sum(xp.astype(mask, _default_dtypes(xp, mask)["real floating"]), axis=-1)
    return -_special.lgamma(k)


def enumerate(num_vertices: int, like: Array | None = None) -> Array:
    """Every non-empty face of the simplex with ``num_vertices`` vertices.

    Parameters
    ----------
    num_vertices : int
        K ≥ 1 (at most 24: 2**K − 1 rows).
    like : array, optional
        An array whose library and device the result takes; NumPy when omitted.

    Returns
    -------
    array of bool, shape (2**K − 1, K)
        Row ``c − 1`` is the face with code ``c = Σ_k f_k 2^k``.
    """
    if isinstance(num_vertices, bool) or not isinstance(num_vertices, int):
        raise TypeError(f"num_vertices must be an int, got {type(num_vertices).__name__}")
    if not 1 <= num_vertices <= _MAX_ENUMERATED:
        raise ValueError(
            f"num_vertices must be between 1 and {_MAX_ENUMERATED} to enumerate its "
            f"2**K - 1 faces, got {num_vertices}"
        )
    if like is None:
        import array_api_compat.numpy as xp

        like = xp.zeros(())
    xp = array_namespace(like)
    device = _backend.device(like)
    integer = xp.int64 if num_vertices > 30 else _default_dtypes(xp, like)["integral"]
    codes = xp.arange(1, 2**num_vertices, dtype=integer, device=device)
    powers = _backend.powers_of_two(xp, num_vertices, dtype=integer, device=device)
    return (codes[:, None] // powers) % 2 == 1
