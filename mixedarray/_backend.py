"""Namespace, device and dtype helpers, and the lazy registry of per-framework rules.

Everything framework-specific that the array code needs goes through this module: which
library an array belongs to, where it lives, which dtype to compute in, whether its values
may be inspected without a device synchronisation, and which native rule (a custom derivative,
a fast path) a framework adapter registered for a function.  Importing it imports no
framework; adapters (``mixedarray.torch``, ``mixedarray.jax``) are imported the first time an
array of theirs arrives.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import array_api_compat as _compat

__all__ = [
    "array_namespace",
    "compute_dtype",
    "constant",
    "device",
    "host_float",
    "is_floating",
    "is_traced",
    "library_name",
    "load_adapter",
    "lookup_rule",
    "powers_of_two",
    "register_rule",
    "stop_gradient",
    "values_are_checkable",
]

Array = Any

_LIBRARY_TESTS: tuple[tuple[str, Callable[[Any], bool]], ...] = (
    ("numpy", _compat.is_numpy_array),
    ("torch", _compat.is_torch_array),
    ("jax", _compat.is_jax_array),
    ("cupy", _compat.is_cupy_array),
)


def library_name(x: Array) -> str:
    """Name of the array library ``x`` belongs to (``"numpy"``, ``"torch"``, ``"jax"``, ...)."""
    for name, test in _LIBRARY_TESTS:
        if test(x):
            return name
    module = type(x).__module__.split(".")[0]
    return module


_PYTHON_SCALARS = (bool, int, float, complex)


def array_namespace(*arrays: Any) -> ModuleType:
    """Array-API namespace shared by ``arrays``; Python scalars and ``None`` are ignored.

    Raises
    ------
    TypeError
        If no argument is an array, or the arrays come from different libraries (the message
        names both).
    """
    # Python scalars (exactly bool/int/float, not NumPy scalars, which subclass float) are ignored.
    candidates = [a for a in arrays if a is not None and type(a) not in _PYTHON_SCALARS]
    if not candidates:
        raise TypeError("expected at least one array (NumPy, CuPy, PyTorch, JAX, ...)")
    libraries = {library_name(a) for a in candidates}
    if len(libraries) > 1:
        names = " and ".join(sorted(libraries))
        raise TypeError(
            f"arrays from different libraries cannot be mixed: got {names} arrays; "
            "convert them to one library first"
        )
    try:
        return _compat.array_namespace(*candidates)
    except TypeError as error:
        kinds = ", ".join(sorted({type(a).__name__ for a in candidates}))
        raise TypeError(f"unsupported array type(s): {kinds}") from error


def device(x: Array) -> Any:
    """Device of ``x`` (``"cpu"`` for NumPy)."""
    return _compat.device(x)


def is_floating(xp: ModuleType, dtype: Any) -> bool:
    """Whether ``dtype`` is a real floating dtype of ``xp`` (float16 and bfloat16 included)."""
    if xp.isdtype(dtype, "real floating"):
        return True
    return "bfloat16" in str(dtype)


def compute_dtype(xp: ModuleType, dtype: Any, *, name: str = "input") -> Any:
    """The dtype to compute in for an input of ``dtype``.

    float32 and float64 stay as they are; float16 and bfloat16 are computed in float32 (and
    cast back by the caller); integers and booleans use the library's default real floating
    dtype.  Complex inputs are a ``TypeError`` naming ``name``.
    """
    if dtype == xp.float32 or dtype == xp.float64:
        return dtype
    if is_floating(xp, dtype):
        return xp.float32
    if xp.isdtype(dtype, "integral") or dtype == xp.bool:
        return xp.__array_namespace_info__().default_dtypes()["real floating"]
    raise TypeError(f"{name} must be a real array, got dtype {dtype}")


def host_float(x: Array) -> float:
    """The value of the 0-d array ``x`` as a Python float (a host read; detached on torch)."""
    detach = getattr(x, "detach", None)
    return float(detach() if callable(detach) and library_name(x) == "torch" else x)


def _torch_values_checkable(x: Array) -> bool:
    import torch

    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    functorch = getattr(torch._C, "_functorch", None)
    if functorch is not None and functorch.is_batchedtensor(x):
        return False
    return not (
        functorch is not None
        and functorch.is_functorch_wrapped_tensor(x)
        and _torch_wrapped_is_batched(x, functorch)
    )


def _torch_wrapped_is_batched(x: Array, functorch: Any) -> bool:
    # Peel functorch wrappers (grad, jvp) to see whether a vmap level lies underneath.
    level = 0
    while functorch.is_functorch_wrapped_tensor(x) and level < 64:
        if functorch.is_batchedtensor(x):
            return True
        x = functorch.get_unwrapped(x)
        level += 1
    return functorch.is_batchedtensor(x)


def _jax_values_checkable(x: Array) -> bool:
    import jax

    if isinstance(x, jax.core.Tracer):
        return False
    try:
        on_cpu = all(d.platform == "cpu" for d in x.devices())
    except AttributeError:  # pragma: no cover - very old JAX
        return False
    # A concrete array captured by a function under ``jit``: every operation on it is staged,
    # so a check's result would be a tracer too.  A 0-d probe tells (about 20 µs, eager only).
    return on_cpu and not isinstance(jax.lax.full((), False), jax.core.Tracer)


def values_are_checkable(*arrays: Array) -> bool:
    """Whether the values of ``arrays`` can be read without a device sync or a tracer.

    True for NumPy and array-api-strict, for PyTorch tensors on the CPU outside
    ``torch.compile`` and ``torch.func.vmap``, and for concrete JAX arrays on the CPU (not
    under ``jit``/``vmap``/``grad`` tracing).  False for CuPy and any accelerator array.
    """
    for x in arrays:
        if x is None or type(x) in _PYTHON_SCALARS:
            continue
        name = library_name(x)
        if name == "torch":
            ok = _torch_values_checkable(x)
        elif name == "jax":
            ok = _jax_values_checkable(x)
        else:
            ok = name in ("numpy", "array_api_strict")
        if not ok:
            return False
    return True


def _torch_is_traced(x: Array) -> bool:
    import torch

    if torch.compiler.is_compiling():
        return True
    functorch = getattr(torch._C, "_functorch", None)
    if functorch is None:  # pragma: no cover - very old torch
        return False
    return bool(functorch.is_batchedtensor(x)) or (
        bool(functorch.is_functorch_wrapped_tensor(x)) and _torch_wrapped_is_batched(x, functorch)
    )


def is_traced(*arrays: Array) -> bool:
    """Whether any of ``arrays`` is abstract: a JAX tracer, or a torch tensor seen by
    ``torch.compile`` or ``torch.func.vmap``.  Its values cannot be read at all, so even
    ``validate_args=True`` skips value checks on it."""
    for x in arrays:
        if x is None or type(x) in _PYTHON_SCALARS:
            continue
        name = library_name(x)
        if name == "torch" and _torch_is_traced(x):
            return True
        if name == "jax":
            import jax

            if isinstance(x, jax.core.Tracer):
                return True
    return False


def stop_gradient(x: Array) -> Array:
    """``x`` with its gradient stopped (``detach`` on torch, ``lax.stop_gradient`` on JAX)."""
    name = library_name(x)
    if name == "torch":
        return x.detach()
    if name == "jax":
        import jax

        return jax.lax.stop_gradient(x)
    return x


# ---------------------------------------------------------------------------------------------
# Constants on the caller's device, without a synchronising host-to-device copy.


def constant(xp: ModuleType, values: Sequence[float], *, dtype: Any, device: Any) -> Array:
    """Host data ``values`` (a short sequence of numbers) as a 1-d array of ``xp`` on ``device``.

    ``xp.asarray(values, device=...)`` would do, except on torch CUDA, where a copy from
    pageable host memory synchronises the stream (``torch.cuda.set_sync_debug_mode("error")``
    rejects it).  There the values go through pinned memory and are copied without blocking,
    once per ``(values, dtype, device, stream)``: the result is cached and must not be written
    to.  JAX and CuPy copies of host data do not synchronise and are left to ``xp.asarray``.
    """
    if getattr(device, "type", None) == "cuda" and "torch" in xp.__name__:
        import torch

        if not torch.compiler.is_compiling():
            stream = torch.cuda.current_stream(device).cuda_stream
            return _pinned_copy(tuple(values), dtype, device, stream)
    return xp.asarray(list(values), dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _pinned_copy(values: tuple[float, ...], dtype: Any, device: Any, stream: int) -> Array:
    import torch

    host = torch.tensor(values, dtype=dtype).pin_memory()
    return host.to(device, non_blocking=True)


def powers_of_two(xp: ModuleType, n: int, *, dtype: Any, device: Any) -> Array:
    """``[1, 2, 4, …, 2**(n-1)]`` of integer ``dtype``, computed on ``device`` (no host copy)."""
    ones = xp.ones(n, dtype=dtype, device=device)
    return xp.bitwise_left_shift(ones, xp.arange(n, dtype=dtype, device=device))


# ---------------------------------------------------------------------------------------------
# Registry of per-framework rules (custom derivatives, fast paths), filled lazily by adapters.


def _load_torch_adapter() -> None:
    import mixedarray.torch  # noqa: F401  (registers its rules on import)


def _load_jax_adapter() -> None:
    import mixedarray.jax  # noqa: F401  (registers its rules on import)


def _load_numpy_fast_paths() -> None:
    from mixedarray._native import cpu_threshold

    cpu_threshold.register_numpy_rules()


def _load_cupy_fast_paths() -> None:
    from mixedarray._native import cuda_threshold

    cuda_threshold.register_cupy_rules()


# Plain import statements rather than importlib, so that a first call traced by torch.compile
# (which refuses to trace importlib) can still load the adapter.
_ADAPTERS = {
    "numpy": _load_numpy_fast_paths,
    "torch": _load_torch_adapter,
    "jax": _load_jax_adapter,
    "cupy": _load_cupy_fast_paths,
}
_RULES: dict[tuple[str, str], Callable[..., Any]] = {}
_LOADED: set[str] = set()


def register_rule(library: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as the ``library`` rule for the public function ``name``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        _RULES[(library, name)] = fn
        return fn

    return decorate


def load_adapter(library: str) -> None:
    """Import ``library``'s adapter once, if ``library`` itself is already imported.

    So loading never imports a framework the caller has not imported.
    """
    if library not in _LOADED and library in sys.modules:
        _LOADED.add(library)
        load = _ADAPTERS.get(library)
        if load is not None:
            load()


def lookup_rule(library: str, name: str) -> Callable[..., Any] | None:
    """The rule registered for ``(library, name)``, importing that library's adapter once."""
    load_adapter(library)
    return _RULES.get((library, name))


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast of ``shapes`` by the array API's rules; ``ValueError`` if there is none."""
    # A list, not a generator with ``default=``: torch.compile traces this (no graph break).
    rank = max([len(s) for s in shapes]) if shapes else 0
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out = []
    for sizes in zip(*padded, strict=True):
        big = {s for s in sizes if s != 1}
        if len(big) > 1:
            raise ValueError(f"shapes {', '.join(map(str, shapes))} do not broadcast together")
        out.append(big.pop() if big else 1)
    return tuple(out)


def eager_while_loop(cond: Callable[[Any], Any], body: Callable[[Any], Any], state: Any) -> Any:
    """``while cond(state): state = body(state)`` for eager arrays (one host read per step)."""
    while bool(cond(state)):
        state = body(state)
    return state


def eager_repeat(n: int, step: Callable[[Any], Any], state: Any) -> Any:
    """``state = step(state)`` ``n`` times (a Python loop)."""
    for _ in range(n):
        state = step(state)
    return state
