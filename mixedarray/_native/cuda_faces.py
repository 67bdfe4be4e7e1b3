r"""Fused Gaussian-Sparsemax face statistics on CUDA arrays (torch, CuPy, eager JAX): draw,
project, count.

For :math:`Y = \operatorname{sparsemax}(Z)`, :math:`Z \sim N(\mu, \operatorname{diag}\sigma^2)`,
one kernel launch per chunk draws every :math:`Z` in registers (xoroshiro128+ per thread, seeded
on the device from :func:`mixedarray.random.seeds` of the caller's generator), finds the support
of :math:`\operatorname{sparsemax}(Z)` by the reference's rule (Newton on τ over the entries
within 1 of the maximum; gaps ≤ 4 eps are ties, outside), and adds to two count vectors per
batch member: draws with :math:`|F| = k` and draws with :math:`i \in F`.  No array of n × K
draws exists anywhere; the only global traffic is the counts (one atomic per counter and block).

The statistics are the same random variables as the reference path of
:func:`mixedarray.face_statistics` (which draws ``torch.randn``-style noise,
projects and counts), from another stream of random numbers: they agree in distribution, not
draw for draw.

Eager JAX arrays on a CUDA GPU take the same kernel through DLPack
(:func:`mixedarray._native.cuda_interop.through_cupy`): the seeds are drawn from the caller's
JAX key by JAX on the parameters' device, the parameters and seeds are viewed by CuPy without
copies, the counts are CuPy arrays handed back to JAX.  Where the seeds come out traced (a key
under ``jit`` or ``vmap``, or the whole call staged by ``jit``) :func:`face_counts` declines,
and :func:`mixedarray.face_statistics` runs its reference path.
"""

from __future__ import annotations

import math
from typing import Any

from mixedarray import _backend, random
from mixedarray._native import cuda_interop

__all__ = ["MAX_K", "applicable", "face_counts", "launch_counts"]

Array = Any

MAX_K = 128  # widest event handled: the draw and its candidates live in per-thread local memory
FAST_CHUNK = 1 << 26  # draws per member and launch when the caller gives no chunk size
_THREADS = 256
_MAX_CHUNK = 1 << 30
_MAX_MEMBERS = 65535  # the grid's y dimension


def applicable(d: Any, table: bool) -> bool:
    """Whether ``face_statistics(d, ..., table=table)`` can take the fused kernel.

    A :class:`~mixedarray.distributions.GaussianSparsemax` (its own sampler) with parameters that
    are eager float32/float64 CUDA arrays of torch or CuPy, or eager JAX arrays on one CUDA GPU
    (:func:`~mixedarray._native.cuda_interop.jax_array_ok`), K ≤ 128, no face table, and a
    usable GPU.  Imports ``numba.cuda`` (and, for JAX, CuPy) only once the arrays are known to
    be CUDA arrays.
    """
    from mixedarray.distributions import GaussianSparsemax

    if table or not isinstance(d, GaussianSparsemax):
        return False
    if type(d)._rsample is not GaussianSparsemax._rsample:
        return False  # a subclass that samples otherwise
    if d.num_vertices > MAX_K or math.prod(d.batch_shape) > _MAX_MEMBERS:
        return False
    like = d._like
    library = _backend.library_name(like)
    if library == "jax":
        return cuda_interop.jax_array_ok(d.loc, d.scale)
    if library == "torch":
        if not cuda_interop.torch_tensor_ok(like):
            return False
    elif library != "cupy" or str(like.dtype) not in ("float32", "float64"):
        return False
    return cuda_interop.available()


def launch_counts(
    loc: Any,
    scale: Any,
    seeds: Any,
    sizes: list[int],
    counts: Any,
    *,
    stream: Any = 0,
    device: int = 0,
    threads: int = _THREADS,
    blocks: int | None = None,
    progress: Any = None,
) -> None:
    """Add the face counts of ``sum(sizes)`` draws per batch member to ``counts``.

    Parameters
    ----------
    loc, scale : (B, K) float32/float64 arrays Numba accepts (device arrays; host arrays in the
        simulator), C-contiguous.
    seeds : int32 (len(sizes), 2) array (:func:`mixedarray.random.seeds`); launch ``i`` uses row i.
    sizes : draws per member of each launch.
    counts : float64 (B, 2, K), zero or a running total: row 0 counts ``|F| = k + 1``, row 1
        counts ``k ∈ F``.
    threads, blocks : block size and blocks per member (default: enough to fill the device).
    progress : optional callable wrapping the launch indices (e.g. ``tqdm``).
    """
    from mixedarray._native import cuda_kernels

    dtype = str(loc.dtype)
    kernel = cuda_kernels.faces_kernel(dtype, cuda_interop.size_class(loc.shape[1]), threads)
    cuda_interop.launch_draws(
        kernel,
        (loc, scale),
        seeds,
        sizes,
        cuda_interop.support_tolerance(dtype),
        counts,
        stream=stream,
        device=device,
        threads=threads,
        blocks=blocks,
        progress=progress,
    )


def face_counts(
    d: Any, rng: Any, num_samples: int, chunk_size: int | None, progress: bool
) -> tuple[Array, Array] | None:
    """Counts of ``|F| = k`` and of ``i ∈ F`` over ``num_samples`` draws of ``d``.

    Arrays of ``d``'s library and device, shape ``batch_shape + (K,)``, float64 (float32 for JAX
    without x64); ``d`` must be :func:`applicable`.  ``None`` where the seeds come out traced
    (a JAX key under ``jit``/``vmap``, or the call staged by ``jit``): the kernel cannot take
    them, and :func:`mixedarray.face_statistics` runs its reference path instead.  Launches
    go on the library's current stream (for JAX, CuPy's current stream, ordered against JAX's
    by DLPack); nothing is read back.
    """
    from mixedarray.montecarlo import _chunk_sizes

    like = d._like
    # int32 counters per block: at most 2**30 draws per member and launch.
    sizes = _chunk_sizes(num_samples, min(chunk_size or FAST_CHUNK, _MAX_CHUNK), 1)
    seeds = random.seeds(rng, len(sizes), like=like)
    if _backend.library_name(like) == "jax":
        if _backend.is_traced(seeds):  # a traced key, or the call staged by jit
            return None  # the caller's reference path draws and counts
        return _jax_face_counts(d, seeds, sizes, progress)
    xp = d._xp
    members, width = math.prod(d.batch_shape), d.num_vertices
    counts = _counts(
        xp.reshape(d.loc, (members, width)),
        xp.reshape(d.scale, (members, width)),
        seeds,
        sizes,
        progress,
    )
    shape = (*d.batch_shape, d.num_vertices)
    return xp.reshape(counts[:, 0, :], shape), xp.reshape(counts[:, 1, :], shape)


def _counts(loc: Array, scale: Array, seeds: Array, sizes: list[int], progress: bool) -> Array:
    """Float64 (B, 2, K) counts for the (B, K) parameters ``loc``, ``scale`` of one library
    (torch or CuPy), launched on that library's current stream of their device."""
    xp = _backend.array_namespace(loc)
    members, width = loc.shape
    counts = xp.zeros((members, 2, width), dtype=xp.float64, device=_backend.device(loc))
    wrap = None
    if progress:
        from tqdm.auto import tqdm

        def wrap(chunks: Any) -> Any:
            return tqdm(chunks, desc="face statistics", unit="chunk")

    launch_counts(
        cuda_interop.view(cuda_interop.contiguous(loc)),
        cuda_interop.view(cuda_interop.contiguous(scale)),
        cuda_interop.view(cuda_interop.contiguous(seeds)),
        sizes,
        cuda_interop.view(counts),
        stream=cuda_interop.stream(loc),
        device=cuda_interop.device_index(loc),
        progress=wrap,
    )
    return counts


def _jax_face_counts(d: Any, seeds: Array, sizes: list[int], progress: bool) -> tuple[Array, Array]:
    """:func:`face_counts` of eager JAX GPU parameters: the kernel on CuPy views (DLPack)."""
    from mixedarray.montecarlo import _accumulation_dtype

    members, width = math.prod(d.batch_shape), d.num_vertices
    shape = (*d.batch_shape, width)
    accumulate = _accumulation_dtype(d._xp, d._like)  # float32 where JAX has no x64
    dtype = str(getattr(accumulate, "dtype", accumulate))  # jnp.float64 is a scalar type

    def count(loc: Array, scale: Array, seed_words: Array) -> tuple[Array, Array]:
        xp = _backend.array_namespace(loc)
        counts = _counts(
            xp.reshape(loc, (members, width)),
            xp.reshape(scale, (members, width)),
            seed_words,
            sizes,
            progress,
        )
        target = getattr(xp, dtype)
        return tuple(xp.astype(xp.reshape(counts[:, i, :], shape), target) for i in (0, 1))

    return cuda_interop.through_cupy(count, d.loc, d.scale, seeds)
