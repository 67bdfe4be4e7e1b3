"""Chunked Monte Carlo estimation on the distribution's own library and device.

:func:`expectation` estimates ``E[f(Y)]`` for ``Y ~ d`` with a fixed memory bound: samples are
drawn in chunks, each reduced on the device to a shifted sum and sum of squares (accumulated in
float64 where the library has it), with no host round trip per chunk; the value and its
standard error are read once, at the end, by whoever uses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from mixedarray import _backend, random

__all__ = ["Estimate", "expectation", "sample"]

Array = Any

_CHUNK_ELEMENTS = 1 << 22  # samples × batch × K per chunk: about 32 MB of float64


class Estimate(NamedTuple):
    """An estimate and its standard error (0 for exact values), arrays of the batch shape."""

    value: Array
    stderr: Array


def sample(d: Any, rng: Any, sample_shape: Any = ()) -> Array:
    """``d.sample(rng, sample_shape)`` as a function: shape ``sample_shape + batch + event``."""
    return d.sample(rng, sample_shape)


def _accumulation_dtype(xp: Any, like: Array) -> Any:
    try:
        supported = xp.__array_namespace_info__().dtypes(device=_backend.device(like))
    except (AttributeError, TypeError):  # pragma: no cover - very old namespaces
        supported = {}
    return xp.float64 if "float64" in supported else like.dtype


def _chunk_sizes(num_samples: int, chunk_size: int | None, elements_per_sample: int) -> list[int]:
    """Sizes of the chunks that draw ``num_samples`` (about 4M elements each by default)."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}")
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // max(1, elements_per_sample))
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    chunk_size = min(chunk_size, num_samples)
    sizes = [chunk_size] * (num_samples // chunk_size)
    if num_samples % chunk_size:
        sizes.append(num_samples % chunk_size)
    return sizes


def expectation(
    fn: Callable[[Array], Array],
    d: Any,
    rng: Any,
    num_samples: int,
    *,
    chunk_size: int | None = None,
    reparameterized: bool = False,
    progress: bool = False,
) -> Estimate:
    """Monte Carlo estimate of ``E[fn(Y)]``, ``Y ~ d``, with its standard error.

    Parameters
    ----------
    fn : callable
        Maps samples of shape ``(n,) + batch + event`` to values of shape ``(n,) + batch``.
    d : Distribution
        Any distribution of :mod:`mixedarray.distributions`.
    rng : generator, key or int
        The caller's framework's generator (see :mod:`mixedarray.random`).
    num_samples : int
        Total number of samples, ≥ 2.
    chunk_size : int, optional
        Samples per chunk; by default about 4 million elements (samples × batch × K).
    reparameterized : bool, default False
        Draw with ``rsample`` (pathwise gradients flow into the estimate) instead of ``sample``.
    progress : bool, default False
        Show a ``tqdm`` progress bar over chunks.

    Returns
    -------
    Estimate
        ``value`` = the sample mean, ``stderr`` = sample standard deviation / √n, both of
        shape ``batch_shape``, in the distribution's library, dtype and device.
    """
    xp, like = d._xp, d._like
    sizes = _chunk_sizes(num_samples, chunk_size, math.prod(d.batch_shape) * d.num_vertices)
    draw = d.rsample if reparameterized else d.sample
    keys = random.split(rng, len(sizes), like=like)
    accumulate = _accumulation_dtype(xp, like)
    chunks = range(len(sizes))
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="Monte Carlo", unit="chunk")
    shift = total = squares = None
    for i in chunks:
        values = fn(draw(keys[i], (sizes[i],)))
        values = xp.astype(values, accumulate) if values.dtype != accumulate else values
        if shift is None:
            # Shifting by the first chunk's mean keeps Σ(x − c)² free of cancellation.
            shift = xp.mean(values, axis=0)
            total = xp.zeros_like(shift)
            squares = xp.zeros_like(shift)
        centred = values - shift
        total = total + xp.sum(centred, axis=0)
        squares = squares + xp.sum(centred * centred, axis=0)
    mean_centred = total / num_samples
    variance = (squares - num_samples * mean_centred * mean_centred) / (num_samples - 1)
    stderr = xp.sqrt(xp.clip(variance, min=0.0) / num_samples)
    value = shift + mean_centred
    return Estimate(xp.astype(value, d.dtype), xp.astype(stderr, d.dtype))
