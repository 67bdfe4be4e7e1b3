r"""Monte Carlo statistics of the random face :math:`F = \operatorname{supp} Y`.

For any distribution on the simplex, :func:`face_statistics` estimates

* the face-size law :math:`P(|F| = k)`, k = 1..K,
* the vertex marginals :math:`P(i \in F)`, i = 1..K,
* and, for K ≤ 20, the whole face table :math:`P(F = f)` over the :math:`2^K - 1` faces,

from ``num_samples`` draws in chunks of bounded memory, each chunk reduced on the device to
counts (accumulated in float64 where the library has it, exact up to :math:`2^{53}` draws), with
no host round trip: the results are arrays on the distribution's device, read by whoever uses
them.  Every estimate is a frequency :math:`\hat p` with standard error
:math:`\sqrt{\hat p(1 - \hat p)/(n - 1)}` (the sample standard deviation of the indicator over
:math:`\sqrt n`, as :func:`~mixedarray.montecarlo.expectation` reports).

Distributions whose face has its own sampler (MixedDirichlet's ``face_distribution``) draw the
faces alone; the others draw points and take their support.  A GaussianSparsemax on torch or
CuPy CUDA arrays (K ≤ 128, ``table=False``) takes a fused kernel instead
(:mod:`mixedarray._native.cuda_faces`): one launch per chunk draws, projects and counts, with
no array of draws in memory; its chunks default to 2**26 draws per batch member.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from mixedarray import _backend, faces, random
from mixedarray.montecarlo import Estimate, _accumulation_dtype, _chunk_sizes

__all__ = ["MAX_TABLE_K", "FaceStatistics", "face_statistics"]

Array = Any

MAX_TABLE_K = 20  # 2**20 - 1 faces: the largest table worth keeping per batch member


class FaceStatistics(NamedTuple):
    """Face frequencies with their standard errors (arrays on the distribution's device).

    Attributes
    ----------
    size_probs : Estimate
        :math:`P(|F| = k)` for k = 1..K, shape ``batch_shape + (K,)``.
    marginals : Estimate
        :math:`P(i \\in F)`, shape ``batch_shape + (K,)``.
    face_probs : Estimate or None
        :math:`P(F = f)` for every non-empty face in the order of
        :func:`mixedarray.faces.enumerate` (row ``c − 1`` is the face with code
        :math:`c = \\sum_k f_k 2^k`), shape ``batch_shape + (2**K − 1,)``; ``None`` unless
        ``table=True``.
    num_samples : int
        The number of draws behind every frequency.
    """

    size_probs: Estimate
    marginals: Estimate
    face_probs: Estimate | None
    num_samples: int


def _fused(d: Any, table: bool) -> bool:
    """Whether the fused CUDA kernel counts ``d``'s faces (GaussianSparsemax on torch/CuPy GPUs,
    or on eager JAX GPU arrays through DLPack)."""
    if _backend.library_name(d._like) not in ("torch", "cupy", "jax"):
        return False  # decided without importing anything
    from mixedarray._native import cuda_faces, fast_paths_enabled

    return fast_paths_enabled() and cuda_faces.applicable(d, table)


def _fused_counts(
    d: Any, rng: Any, num_samples: int, chunk_size: int | None, progress: bool
) -> tuple[Array, Array] | None:
    from mixedarray._native import cuda_faces

    return cuda_faces.face_counts(d, rng, num_samples, chunk_size, progress)


def _face_sampler(d: Any) -> Any:
    """What to draw from: the face law itself where there is one, else ``d``."""
    return getattr(d, "face_distribution", d)


def _table_counts(xp: Any, mask: Array, num_vertices: int, accumulate: Any) -> Array:
    """Counts of every face code 1..2^K − 1 over axis 0 of ``mask`` (shape n + batch + (K,))."""
    integer = xp.int64
    device = _backend.device(mask)
    powers = _backend.powers_of_two(xp, num_vertices, dtype=integer, device=device)
    codes = xp.sum(xp.astype(mask, integer) * powers, axis=-1)  # n + batch, in 1 .. 2^K − 1
    n = codes.shape[0]
    batch = tuple(codes.shape[1:])
    members = math.prod(batch)
    width = 2**num_vertices
    # One sorted list of (member, code) keys, then the boundaries of every possible key.
    offsets = xp.arange(members, dtype=integer, device=device) * width
    keys = xp.reshape(xp.reshape(codes, (n, members)) + offsets, (n * members,))
    keys = xp.sort(keys)
    edges = xp.arange(members * width + 1, dtype=integer, device=device)
    positions = xp.searchsorted(keys, edges, side="left")
    counts = xp.astype(positions[1:] - positions[:-1], accumulate)
    counts = xp.reshape(counts, (*batch, width))
    return counts[..., 1:]  # code 0, the empty face, never occurs


def _frequencies(xp: Any, counts: Array, n: int, dtype: Any) -> Estimate:
    p = counts / n
    stderr = xp.sqrt(xp.clip(p * (1 - p), min=0.0) / (n - 1))
    return Estimate(xp.astype(p, dtype), xp.astype(stderr, dtype))


def face_statistics(
    d: Any,
    rng: Any,
    num_samples: int,
    *,
    table: bool = False,
    chunk_size: int | None = None,
    progress: bool = False,
) -> FaceStatistics:
    r"""Monte Carlo face-size law, vertex marginals and (optionally) face table of ``d``.

    Parameters
    ----------
    d : Distribution
        Any distribution on the simplex (a NonEmptyBernoulli counts its own masks).
    rng : generator, key or int
        The caller's framework's generator (see :mod:`mixedarray.random`).
    num_samples : int
        Number of draws, ≥ 2.
    table : bool, default False
        Also estimate :math:`P(F = f)` for all :math:`2^K - 1` faces (K ≤ 20).
    chunk_size : int, optional
        Draws per chunk; by default about 4 million elements (draws × batch × K).  On the
        fused CUDA path, draws per batch member and launch (default 2**26).
    progress : bool, default False
        Show a ``tqdm`` progress bar over chunks.

    Returns
    -------
    FaceStatistics
        Frequencies and standard errors, in ``d``'s library, dtype and device.

    Raises
    ------
    ValueError
        If ``num_samples`` or ``chunk_size`` is not a valid count, or ``table=True`` with
        K > 20.
    """
    if table and d.num_vertices > MAX_TABLE_K:
        raise ValueError(
            f"table=True needs K <= {MAX_TABLE_K} (2**K - 1 faces per batch member), got "
            f"K = {d.num_vertices}; size_probs and marginals are available for any K"
        )
    source = _face_sampler(d)
    xp, like = d._xp, d._like
    K = d.num_vertices
    per_sample = max(1, math.prod(d.batch_shape) * K)
    sizes = _chunk_sizes(num_samples, chunk_size, per_sample)
    fused = _fused_counts(d, rng, num_samples, chunk_size, progress) if _fused(d, table) else None
    if fused is not None:  # None: the kernel declined (a traced JAX key)
        size_counts, marginal_counts = fused
        return FaceStatistics(
            size_probs=_frequencies(xp, size_counts, num_samples, d.dtype),
            marginals=_frequencies(xp, marginal_counts, num_samples, d.dtype),
            face_probs=None,
            num_samples=num_samples,
        )
    keys = random.split(rng, len(sizes), like=like)
    accumulate = _accumulation_dtype(xp, like)
    device = _backend.device(like)
    vertex_sizes = xp.arange(1, K + 1, dtype=xp.int32, device=device)
    chunks = range(len(sizes))
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="face statistics", unit="chunk")
    size_counts = marginal_counts = table_counts = None
    for i in chunks:
        drawn = source.sample(keys[i], (sizes[i],))
        mask = drawn if drawn.dtype == xp.bool else faces.support(drawn)
        size = xp.sum(xp.astype(mask, xp.int32), axis=-1, dtype=xp.int32)
        by_size = xp.sum(xp.astype(size[..., None] == vertex_sizes, accumulate), axis=0)
        by_vertex = xp.sum(xp.astype(mask, accumulate), axis=0)
        by_face = _table_counts(xp, mask, K, accumulate) if table else None
        if size_counts is None:
            size_counts, marginal_counts, table_counts = by_size, by_vertex, by_face
        else:
            size_counts = size_counts + by_size
            marginal_counts = marginal_counts + by_vertex
            if table:
                table_counts = table_counts + by_face
    dtype = d.dtype
    return FaceStatistics(
        size_probs=_frequencies(xp, size_counts, num_samples, dtype),
        marginals=_frequencies(xp, marginal_counts, num_samples, dtype),
        face_probs=_frequencies(xp, table_counts, num_samples, dtype) if table else None,
        num_samples=num_samples,
    )
