"""Optional fast paths, each taken by the same public function and tested against the
standard-API reference in :mod:`mixedarray.projections`, which stays the source of truth.

:func:`reference_only` switches the CUDA fast paths off for a block of code (in this thread),
so the public functions run their standard-API reference on the same arrays: for timing the
reference against the kernels (``bench/gpu.py``) and for checking one against the other.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["fast_paths_enabled", "reference_only"]

_STATE = threading.local()


def fast_paths_enabled() -> bool:
    """Whether fast paths may be taken here (False inside :func:`reference_only`)."""
    return not getattr(_STATE, "reference_only", False)


@contextlib.contextmanager
def reference_only() -> Iterator[None]:
    """Inside the block, in this thread, every CUDA fast path falls back to the reference.

    Covers the Numba CUDA projections (torch CUDA tensors through :mod:`mixedarray.torch`, CuPy
    arrays through their registered rules), the fused face statistics
    (:mod:`mixedarray._native.cuda_faces`) and the fused entropy estimate
    (:mod:`mixedarray._native.cuda_entropy`).  Nestable; the previous state is restored on exit.

    Examples
    --------
    >>> from mixedarray._native import reference_only
    >>> with reference_only():
    ...     pass  # ma.entropy(d, method="mc", ...) here runs the array-API reference
    """
    previous = getattr(_STATE, "reference_only", False)
    _STATE.reference_only = True
    try:
        yield
    finally:
        _STATE.reference_only = previous
