r"""Fused Gaussian-Sparsemax entropy estimate on CUDA arrays (torch, CuPy): draw, project, score.

For :math:`Y = \operatorname{sparsemax}(Z)`, :math:`Z \sim N(\mu, \operatorname{diag}\sigma^2)`,
the Monte Carlo estimate of the direct-sum entropy

.. math::

    H_\oplus = -E[\log p(Y)] \approx \bar h = \frac1n \sum_{s=1}^n h_s, \qquad
    h_s = -\log p(Y_s), \qquad
    \operatorname{se} = \sqrt{\frac{\sum_s h_s^2 - n \bar h^2}{n (n - 1)}},

takes one kernel launch per chunk (:func:`~mixedarray._native.cuda_density_kernels.entropy_kernel`)
in which each thread draws its :math:`Z` in registers and local memory (xoroshiro128+ per
thread, seeded on the device from :func:`mixedarray.random.seeds` of the caller's generator,
as the face-count kernel of :mod:`mixedarray._native.cuda_faces`), projects it (the same
support rule), evaluates :math:`\log p(Y)` by the formula, Gauss–Hermite rule and Newton steps
of :func:`mixedarray.distributions.gaussian_sparsemax_density.log_prob` (the one-bit form for
K = 2, as ``GaussianSparsemax.log_prob``), and adds :math:`h_s` and :math:`h_s^2` to float64
running sums; a block reduction and one atomic per sum and block end the launch.  No array of
n × K draws, and no array of n values, exists anywhere: the only global memory is a (B, 2)
float64 array of sums.  The mean and standard error are computed from the sums on the device
(plain sums, not shifted ones: exact enough while :math:`|\bar h| / \text{sd} < 10^6`), in the
caller's library; nothing synchronises until the caller reads them.

The estimate is the same random variable as the reference path of :func:`mixedarray.entropy`
(``expectation`` of ``−d.log_prob(d.sample(...))``), from another stream of random numbers:
they agree in distribution, not draw for draw.
"""

from __future__ import annotations

import math
from typing import Any

from mixedarray import _backend, random
from mixedarray._native import cuda_interop, fast_paths_enabled

__all__ = ["MAX_K", "applicable", "entropy_estimate", "launch_points", "launch_sums"]

Array = Any

MAX_K = 128  # widest event handled: the draw, its candidates and its face live in local memory
_WORK_PER_LAUNCH = 1 << 28  # draws × K × members per launch when the caller gives no chunk size
_THREADS = 128
_MAX_MEMBERS = 65535  # the grid's y dimension
_MAX_NODES = 256  # Gauss–Hermite nodes (the distribution's own limit): 4 KiB of constant memory
_OWN = ("_rsample", "_sample", "_log_prob")  # what the kernel replaces: a subclass must not


def applicable(d: Any) -> bool:
    """Whether ``entropy(d, method="mc")`` can take the fused kernel.

    A :class:`~mixedarray.distributions.GaussianSparsemax` (its own sampler and density) with
    parameters that are eager float32/float64 CUDA arrays of torch or CuPy, or eager JAX arrays
    on one CUDA GPU (:func:`~mixedarray._native.cuda_interop.jax_array_ok`), K ≤ 128, at most
    65535 batch members and 256 Gauss–Hermite nodes, a usable GPU, and fast paths not switched
    off
    (:func:`mixedarray._native.reference_only`).  On torch, parameters that would carry an
    autograd graph into the estimate (grad mode on and ``requires_grad``) keep the reference
    path, whose result has that graph.  Imports ``numba.cuda`` only once the arrays are known to
    be CUDA arrays.
    """
    from mixedarray.distributions import GaussianSparsemax

    if not isinstance(d, GaussianSparsemax):
        return False
    cls = type(d)
    if any(getattr(cls, m) is not getattr(GaussianSparsemax, m) for m in _OWN):
        return False  # a subclass that samples or scores otherwise
    if d.num_vertices > MAX_K or math.prod(d.batch_shape) > _MAX_MEMBERS:
        return False
    if d.num_nodes > _MAX_NODES:
        return False  # the rule lives in constant memory (64 KiB)
    like = d._like
    library = _backend.library_name(like)
    if library == "jax":  # eager arrays on one CUDA GPU, through DLPack (and the switch)
        return cuda_interop.jax_array_ok(d.loc, d.scale)
    if library == "torch":
        import torch

        for t in (d.loc, d.scale):
            if not cuda_interop.torch_tensor_ok(t):
                return False
            if t.requires_grad and torch.is_grad_enabled():
                return False
    elif library != "cupy" or str(like.dtype) not in ("float32", "float64"):
        return False
    # last: torch_tensor_ok has ruled out tracing (torch.compile) by now
    return fast_paths_enabled() and cuda_interop.available()


def launch_sums(
    loc: Any,
    scale: Any,
    seeds: Any,
    sizes: list[int],
    sums: Any,
    *,
    num_nodes: int = 32,
    stream: Any = 0,
    device: int = 0,
    threads: int = _THREADS,
    blocks: int | None = None,
    progress: Any = None,
) -> None:
    """Add ``Σ −log p(Y)`` and ``Σ log p(Y)²`` over ``sum(sizes)`` draws per member to ``sums``.

    Parameters
    ----------
    loc, scale : (B, K) float32/float64 arrays Numba accepts (device arrays; host arrays in the
        simulator), C-contiguous.
    seeds : int32 (len(sizes), 2) array (:func:`mixedarray.random.seeds`); launch ``i`` uses row i.
    sizes : draws per member of each launch.
    sums : float64 (B, 2), zero or a running total.
    num_nodes : Gauss–Hermite nodes of ``log p`` (the distribution's ``num_nodes``).
    threads, blocks : block size (a power of two) and blocks per member (default: enough to
        fill the device).
    progress : optional callable wrapping the launch indices (e.g. ``tqdm``).
    """
    from mixedarray._native import cuda_density_kernels

    dtype = str(loc.dtype)
    width = cuda_interop.size_class(loc.shape[1])
    kernel = cuda_density_kernels.entropy_kernel(dtype, width, num_nodes, threads)
    cuda_interop.launch_draws(
        kernel,
        (loc, scale),
        seeds,
        sizes,
        cuda_interop.support_tolerance(dtype),
        sums,
        stream=stream,
        device=device,
        threads=threads,
        blocks=blocks,
        progress=progress,
    )


def launch_points(
    loc: Any,
    scale: Any,
    z: Any,
    y: Any,
    log_p: Any,
    *,
    num_nodes: int = 32,
    stream: Any = 0,
    device: int = 0,
    threads: int = 32,
) -> None:
    """The fused kernel's per-draw work on given scores: ``y = sparsemax(z)`` and ``log p(y)``.

    For tests and debugging (the entropy kernel draws its own ``z``).

    Parameters
    ----------
    loc, scale : (K,) float32/float64 arrays of one distribution.
    z : (n, K) scores in the same dtype, C-contiguous.
    y : (n, K) output in the same dtype: the points, exactly as the entropy kernel scores them.
    log_p : (n,) float64 output: ``log p(y)`` as the entropy kernel computes it.
    """
    from mixedarray._native import cuda_density_kernels

    dtype = str(loc.dtype)
    width = cuda_interop.size_class(loc.shape[0])
    kernel = cuda_density_kernels.points_kernel(dtype, width, num_nodes, threads)
    blocks = max(1, math.ceil(z.shape[0] / threads))
    tol = cuda_interop.support_tolerance(dtype)
    cuda_interop.launch(
        kernel, blocks, threads, stream, loc, scale, z, tol, y, log_p, device=device
    )


def entropy_estimate(
    d: Any,
    rng: Any,
    num_samples: int,
    chunk_size: int | None = None,
    progress: bool = False,
    *,
    threads: int = _THREADS,
    blocks: int | None = None,
) -> Any:
    r"""Monte Carlo :math:`H_\oplus(d) = -E[\log p(Y)]` and its standard error, fused.

    Parameters
    ----------
    d : GaussianSparsemax
        With parameters on a CUDA device (:func:`applicable`); in Numba's CUDA simulator, NumPy
        parameters run too.
    rng : generator, key or int
        The caller's generator (:mod:`mixedarray.random`): one seed per launch is drawn from it.
    num_samples : int
        Draws per batch member, ≥ 2.
    chunk_size : int, optional
        Draws per member and launch; by default about 2**28 / (K × members).
    progress : bool, default False
        Show a ``tqdm`` progress bar over launches.
    threads, blocks : launch shape (see :func:`launch_sums`).

    Returns
    -------
    Estimate or None
        ``value`` = mean of ``−log p(Y)``, ``stderr`` = its sample standard deviation / √n, of
        shape ``batch_shape``, in ``d``'s library, dtype and device (not read back).  ``None``
        where a JAX key's seeds come out traced: the caller runs the reference estimator.
    """
    from mixedarray.montecarlo import Estimate, _chunk_sizes

    like = d._like
    width = d.num_vertices
    members = math.prod(d.batch_shape)
    default = max(threads, _WORK_PER_LAUNCH // (width * members))
    sizes = _chunk_sizes(num_samples, default if chunk_size is None else chunk_size, 1)
    seeds = random.seeds(rng, len(sizes), like=like)
    launch = {"num_nodes": d.num_nodes, "threads": threads, "blocks": blocks}
    shape, dtype = tuple(d.batch_shape), str(d.dtype).rsplit(".", 1)[-1]

    def estimate(loc: Array, scale: Array, seed_words: Array) -> tuple[Array, Array]:
        xp = _backend.array_namespace(loc)
        loc, scale = (xp.reshape(a, (members, width)) for a in (loc, scale))
        mean, stderr = _moments(loc, scale, seed_words, sizes, num_samples, progress, **launch)
        return tuple(xp.astype(xp.reshape(a, shape), getattr(xp, dtype)) for a in (mean, stderr))

    if _backend.library_name(like) != "jax":
        return Estimate(*estimate(d.loc, d.scale, seeds))
    if _backend.is_traced(seeds):  # a key traced by jit or vmap: the caller's reference path
        return None
    return Estimate(*cuda_interop.through_cupy(estimate, d.loc, d.scale, seeds))


def _moments(
    loc: Array,
    scale: Array,
    seeds: Array,
    sizes: list[int],
    num_samples: int,
    progress: bool,
    **launch: Any,
) -> tuple[Array, Array]:
    """Mean of ``−log p(Y)`` and its standard error, float64 ``(B,)`` arrays of ``loc``'s library
    (torch, CuPy; NumPy in the simulator), for the ``(B, K)`` parameters ``loc``, ``scale``."""
    xp = _backend.array_namespace(loc)
    members = loc.shape[0]
    sums = xp.zeros((members, 2), dtype=xp.float64, device=_backend.device(loc))
    loc, scale = cuda_interop.contiguous(loc), cuda_interop.contiguous(scale)
    wrap = None
    if progress:
        from tqdm.auto import tqdm

        def wrap(chunks: Any) -> Any:
            return tqdm(chunks, desc="entropy", unit="chunk")

    launch_sums(
        cuda_interop.view(loc),
        cuda_interop.view(scale),
        cuda_interop.view(cuda_interop.contiguous(seeds)),
        sizes,
        cuda_interop.view(sums),
        stream=cuda_interop.stream(loc),
        device=cuda_interop.device_index(loc),
        progress=wrap,
        **launch,
    )
    n = float(num_samples)
    mean = sums[:, 0] / n
    variance = (sums[:, 1] - n * mean * mean) / (n - 1.0)
    return mean, xp.sqrt(xp.clip(variance, min=0.0) / n)
