"""Test helpers: moving reference data in and out of every backend, and the device guards.

Reading a result on the host is the test's business, never the library's.  On the GPU backends
(``cupy``, ``torch-cuda``, ``jax-gpu``) the conftest runs every test inside
:func:`device_guards`, which makes a host read raise; :func:`to_numpy` and :func:`from_numpy`
lift the guards for the duration of their own copy (:func:`allow_host_transfers`), so what the
guards catch is a transfer made by the library.  See ``docs/gpu.md``.
"""

from __future__ import annotations

import contextlib
import sys
import types
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "ALL_BACKENDS",
    "CPU_BACKENDS",
    "GPU_BACKENDS",
    "GUARD_MODES",
    "HostTransferError",
    "HostTransferWarning",
    "SimulatedTorchCudaGuard",
    "allow_host_transfers",
    "device_guards",
    "engaged_guards",
    "from_numpy",
    "library_of",
    "parse_backends",
    "to_numpy",
]

# ---------------------------------------------------------------------------------------------
# The backend matrix

CPU_BACKENDS = ("numpy", "array_api_strict", "torch", "jax")
GPU_BACKENDS = ("cupy", "torch-cuda", "jax-gpu")
ALL_BACKENDS = CPU_BACKENDS + GPU_BACKENDS
_BACKEND_GROUPS = {"all": ALL_BACKENDS, "cpu": CPU_BACKENDS, "gpu": GPU_BACKENDS}
_BACKEND_LIBRARY = {
    "numpy": "numpy",
    "array_api_strict": "array_api_strict",
    "torch": "torch",
    "jax": "jax",
    "cupy": "cupy",
    "torch-cuda": "torch",
    "jax-gpu": "jax",
}


def parse_backends(text: str | None) -> tuple[str, ...]:
    """The backends named by a ``--backends`` value, in the matrix's order, without repeats.

    ``text`` is a comma-separated list of backend names (``numpy``, ``array_api_strict``,
    ``torch``, ``jax``, ``cupy``, ``torch-cuda``, ``jax-gpu``; ``-`` and ``_`` are
    interchangeable) and groups (``cpu``, ``gpu``, ``all``).  ``None`` or an empty string means
    ``all``.  An unknown name is a ``ValueError`` listing the valid ones.
    """
    if text is None or not text.strip():
        return ALL_BACKENDS
    chosen: set[str] = set()
    canonical = {name.replace("_", "-"): name for name in ALL_BACKENDS}
    for raw in text.split(","):
        word = raw.strip().lower()
        if not word:
            continue
        if word in _BACKEND_GROUPS:
            chosen.update(_BACKEND_GROUPS[word])
            continue
        name = canonical.get(word.replace("_", "-"))
        if name is None:
            valid = ", ".join((*ALL_BACKENDS, *_BACKEND_GROUPS))
            raise ValueError(f"--backends: unknown backend {raw.strip()!r}; valid names: {valid}")
        chosen.add(name)
    if not chosen:
        raise ValueError(f"--backends: no backend named in {text!r}")
    return tuple(name for name in ALL_BACKENDS if name in chosen)


def backend_library(name: str) -> str:
    """The array library of a backend name: ``torch-cuda`` -> ``torch``, ``jax-gpu`` -> ``jax``."""
    return _BACKEND_LIBRARY[name]


# ---------------------------------------------------------------------------------------------
# Device guards
#
# The state is shared through sys.modules rather than held by this module, because tests import
# this file both as ``helpers`` and as ``tests.helpers`` (two module objects): a lift made
# through one must reach guards engaged through the other.

_STATE_MODULE = "_mixedarray_test_device_guards"


def _shared_state() -> Any:
    state = sys.modules.get(_STATE_MODULE)
    if state is None:
        state = types.ModuleType(_STATE_MODULE, "Device-guard state of the mixedarray tests.")

        class HostTransferError(RuntimeError):
            """A device-to-host transfer inside a device-guarded region."""

        class HostTransferWarning(UserWarning):
            """A device-to-host transfer inside a region guarded with ``mode="warn"``."""

        HostTransferError.__module__ = HostTransferWarning.__module__ = "helpers"
        state.HostTransferError = HostTransferError
        state.HostTransferWarning = HostTransferWarning
        state.engaged = []  # guards currently on, innermost last
        state.lifted = 0  # depth of allow_host_transfers()
        sys.modules[_STATE_MODULE] = state
    return state


_STATE = _shared_state()
HostTransferError = _STATE.HostTransferError
HostTransferWarning = _STATE.HostTransferWarning

GUARD_MODES = ("error", "warn", "off", "simulate")
_ADVICE = (
    "A test that reads a result should use helpers.to_numpy (or `with "
    "helpers.allow_host_transfers():`); a library call that reads on the host is what the "
    "guard is there to catch (see docs/gpu.md)."
)


def _quiet(fn: Any, *args: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "sync debug mode is a prototype feature"
        return fn(*args)


class _TorchGuard:
    """``torch.cuda.set_sync_debug_mode``: every synchronizing CUDA call raises (or warns).

    That covers device-to-host copies (``.item()``, ``.cpu()``, ``bool(t)``, ``.tolist()``),
    ops whose output size depends on values (``nonzero``, boolean-mask indexing), and copies
    from pageable host memory *to* the device (``torch.tensor(..., device="cuda")``), which
    torch also performs with a stream synchronisation.
    """

    library = "torch"

    def __init__(self, mode: str, module: Any = None) -> None:
        if module is None:
            import torch as module
        self.torch = module
        self.mode = mode
        self.previous: Any = 0

    def engage(self) -> None:
        cuda = self.torch.cuda
        self.previous = cuda.get_sync_debug_mode()
        _quiet(cuda.set_sync_debug_mode, self.mode)

    def lift(self) -> None:
        _quiet(self.torch.cuda.set_sync_debug_mode, self.previous)

    def relock(self) -> None:
        _quiet(self.torch.cuda.set_sync_debug_mode, self.mode)

    def disengage(self) -> None:
        _quiet(self.torch.cuda.set_sync_debug_mode, self.previous)


class _JaxGuard:
    """``jax.transfer_guard_device_to_host``: implicit and explicit reads raise (or log).

    Host-to-device transfers (constants built from Python values) stay allowed.
    """

    library = "jax"
    _LEVELS: ClassVar[dict[str, str]] = {"error": "disallow_explicit", "warn": "log_explicit"}

    def __init__(self, mode: str, module: Any = None) -> None:
        if module is None:
            import jax as module
        self.jax = module
        self.level = self._LEVELS[mode]
        self.stack = contextlib.ExitStack()
        self.lifted: contextlib.ExitStack | None = None

    def engage(self) -> None:
        self.stack.enter_context(self.jax.transfer_guard_device_to_host(self.level))

    def lift(self) -> None:
        self.lifted = contextlib.ExitStack()
        self.lifted.enter_context(self.jax.transfer_guard_device_to_host("allow"))

    def relock(self) -> None:
        if self.lifted is not None:
            self.lifted.close()
            self.lifted = None

    def disengage(self) -> None:
        self.relock()
        self.stack.close()


class _CuPyGuard:
    """CuPy has no transfer guard: its host-read entry points are patched to raise (or warn).

    Patched: ``cupy.asnumpy`` and the ``cupy.ndarray`` methods that copy to the host
    (``get``, ``__array__``, ``item``, ``tolist``, ``__bool__``, ``__float__``, ``__int__``,
    ``__index__``, ``__complex__``, and ``__dlpack__`` when asked for a CPU device).  Reads made
    inside CuPy's compiled code without these entry points (``cupy.nonzero``, boolean-mask
    indexing) are not seen.
    """

    library = "cupy"
    METHODS = (
        "get",
        "__array__",
        "item",
        "tolist",
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
        "__complex__",
    )
    FUNCTIONS = ("asnumpy",)
    _KDLCPU = 1  # DLPack device type of host memory

    def __init__(self, mode: str, module: Any = None) -> None:
        if module is None:
            import cupy as module
        self.cupy = module
        self.mode = mode
        self.saved: list[tuple[Any, str, bool, Any]] = []  # (owner, name, own attribute, value)

    def _blocked(self, what: str) -> bool:
        """Whether a host read ``what`` must be refused (else it proceeds, maybe with a warning)."""
        if _STATE.lifted:
            return False
        message = f"host transfer from a CuPy array inside a device-guarded region: {what}. "
        if self.mode == "error":
            raise HostTransferError(message + _ADVICE)
        warnings.warn(HostTransferWarning(message + _ADVICE), stacklevel=3)
        return False

    def _method(self, name: str, original: Any) -> Any:
        guard = self

        if name == "__dlpack__":

            def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
                device = kwargs.get("dl_device")
                if device is not None and int(device[0]) == guard._KDLCPU:
                    guard._blocked("cupy.ndarray.__dlpack__(dl_device=CPU)")
                return original(self, *args, **kwargs)

        else:

            def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
                guard._blocked(f"cupy.ndarray.{name}")
                return original(self, *args, **kwargs)

        guarded.__name__ = name
        guarded.__qualname__ = f"ndarray.{name}"
        guarded.__wrapped__ = original
        return guarded

    def _function(self, name: str, original: Any) -> Any:
        guard = self

        def guarded(*args: Any, **kwargs: Any) -> Any:
            guard._blocked(f"cupy.{name}")
            return original(*args, **kwargs)

        guarded.__name__ = name
        guarded.__wrapped__ = original
        return guarded

    def _patch(self, owner: Any, name: str, replacement: Any) -> None:
        own = name in vars(owner)
        previous = vars(owner).get(name)
        try:
            setattr(owner, name, replacement)
        except TypeError as error:  # CuPy < 13: ndarray is an immutable extension type
            raise RuntimeError(
                f"cannot patch {getattr(owner, '__name__', owner)}.{name} ({error}); the CuPy "
                "device guard needs CuPy >= 13, whose ndarray is a Python subclass (or run "
                "pytest with --device-guards off)"
            ) from error
        self.saved.append((owner, name, own, previous))

    def engage(self) -> None:
        ndarray = self.cupy.ndarray
        try:
            for name in (*self.METHODS, "__dlpack__"):
                original = getattr(ndarray, name, None)
                if original is not None:
                    self._patch(ndarray, name, self._method(name, original))
            for name in self.FUNCTIONS:
                original = getattr(self.cupy, name, None)
                if original is not None:
                    self._patch(self.cupy, name, self._function(name, original))
        except BaseException:
            self.disengage()
            raise

    def lift(self) -> None:  # the patched entry points look at the shared lift depth
        pass

    def relock(self) -> None:
        pass

    def disengage(self) -> None:
        while self.saved:
            owner, name, own, value = self.saved.pop()
            if own:
                setattr(owner, name, value)
            else:
                delattr(owner, name)  # uncover the inherited attribute again


class SimulatedTorchCudaGuard(_CuPyGuard):
    """The torch-CUDA guard's verdicts, simulated on CPU tensors (``--device-guards simulate``).

    CI has no GPU, so what ``torch.cuda.set_sync_debug_mode("error")`` would reject on CUDA is
    rejected here on the CPU instead: host reads (``item``, ``tolist``, ``numpy``, ``bool``,
    ``float``, ``int``, ``index``), value-dependent shapes (``nonzero``, ``unique``,
    ``masked_select``, boolean-mask indexing), and tensors made from host data with an explicit
    ``device`` (``torch.asarray``/``tensor``/``as_tensor`` of Python or NumPy data), a
    synchronising pageable copy on CUDA.  As on CUDA, the library's value checks and its CPU
    fast paths are off, and :func:`mixedarray._backend.constant` copies without the flagged
    call (its CUDA route goes through pinned memory).
    """

    library = "torch"
    METHODS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")
    SHAPE_FUNCTIONS = ("nonzero", "unique", "masked_select", "argwhere")
    FACTORIES = ("asarray", "tensor", "as_tensor")

    def __init__(self, mode: str, module: Any = None) -> None:
        if module is None:
            import torch as module
        self.torch = module
        self.mode = "error" if mode == "simulate" else mode
        self.saved = []

    def _message(self, what: str) -> None:
        if _STATE.lifted:
            return
        message = f"a call that synchronises on CUDA, inside a simulated torch-CUDA guard: {what}. "
        if self.mode == "error":
            raise HostTransferError(message + _ADVICE)
        warnings.warn(HostTransferWarning(message + _ADVICE), stacklevel=3)

    def _wrap(self, what: str, original: Any, flagged: Any) -> Any:
        guard = self

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if flagged(args, kwargs):
                guard._message(what)
            return original(*args, **kwargs)

        guarded.__name__ = getattr(original, "__name__", what)
        guarded.__wrapped__ = original
        return guarded

    def engage(self) -> None:
        import mixedarray._backend as backend
        import mixedarray.torch as adapter

        torch = self.torch
        always = lambda args, kwargs: True  # noqa: E731
        host_data = lambda args, kwargs: (  # noqa: E731
            kwargs.get("device") is not None and not isinstance(args[0], torch.Tensor)
        )
        boolean_index = lambda args, kwargs: (  # noqa: E731
            isinstance(args[1], torch.Tensor) and args[1].dtype == torch.bool
        )

        def constant(xp: Any, values: Any, *, dtype: Any, device: Any) -> Any:
            if "torch" not in xp.__name__:
                return xp.asarray(list(values), dtype=dtype, device=device)
            return torch.tensor(tuple(values), dtype=dtype).to(device)

        try:
            for name in self.METHODS:
                original = getattr(torch.Tensor, name)
                self._patch(torch.Tensor, name, self._wrap(f"Tensor.{name}", original, always))
            original = torch.Tensor.__getitem__
            self._patch(
                torch.Tensor,
                "__getitem__",
                self._wrap("boolean-mask indexing", original, boolean_index),
            )
            for name in self.SHAPE_FUNCTIONS:
                for owner in (torch, torch.Tensor):
                    original = getattr(owner, name, None)
                    if original is not None:
                        self._patch(owner, name, self._wrap(f"torch.{name}", original, always))
            for name in self.FACTORIES:
                original = getattr(torch, name)
                what = f"torch.{name}(host data, device=...)"
                self._patch(torch, name, self._wrap(what, original, host_data))
            self._patch(backend, "_torch_values_checkable", lambda x: False)
            self._patch(adapter, "_native_cpu", lambda *tensors: False)
            self._patch(backend, "constant", constant)
        except BaseException:
            self.disengage()
            raise


_GUARDS = {"torch": _TorchGuard, "jax": _JaxGuard, "cupy": _CuPyGuard}


@contextlib.contextmanager
def device_guards(library: str, mode: str = "error", *, module: Any = None) -> Iterator[Any]:
    """Inside the block, device-to-host transfers of ``library``'s arrays raise.

    Parameters
    ----------
    library : {"torch", "jax", "cupy"}
        Whose transfers to guard.
    mode : {"error", "warn", "off", "simulate"}
        ``"error"``: raise (torch ``RuntimeError`` "called a synchronizing CUDA operation",
        JAX ``XlaRuntimeError`` "Disallowed device-to-host transfer", CuPy
        :class:`HostTransferError`).  ``"warn"``: torch and CuPy warn, JAX logs, and the
        transfer goes ahead.  ``"off"``: nothing.  ``"simulate"``: for ``"torch"``, the
        torch-CUDA guard's verdicts on CPU tensors (:class:`SimulatedTorchCudaGuard`, raising
        :class:`HostTransferError`); for the others the same as ``"error"``.
    module : module, optional
        The library's module (default: imported by name); tests pass a stand-in.
    """
    if mode not in GUARD_MODES:
        raise ValueError(f"mode must be one of {GUARD_MODES}, got {mode!r}")
    if library not in _GUARDS:
        raise ValueError(f"no device guard for {library!r}; one of {tuple(_GUARDS)}")
    if mode == "off":
        yield None
        return
    if mode == "simulate" and library == "torch":
        guard = SimulatedTorchCudaGuard(mode, module)
    else:
        guard = _GUARDS[library]("error" if mode == "simulate" else mode, module)
    guard.engage()
    _STATE.engaged.append(guard)
    try:
        if _STATE.lifted:
            guard.lift()
        yield guard
    finally:
        _STATE.engaged.remove(guard)
        guard.disengage()


@contextlib.contextmanager
def allow_host_transfers() -> Iterator[None]:
    """Lift every engaged device guard inside the block (nestable; also a decorator).

    For the test's own reads of results and its own copies of reference data.
    """
    _STATE.lifted += 1
    lifted = list(_STATE.engaged) if _STATE.lifted == 1 else []
    try:
        for guard in lifted:
            guard.lift()
        yield
    finally:
        try:
            for guard in reversed(lifted):
                if guard in _STATE.engaged:
                    guard.relock()
        finally:
            _STATE.lifted -= 1


def engaged_guards() -> tuple[str, ...]:
    """The libraries whose device guards are on, outermost first (for tests of the guards)."""
    return tuple(guard.library for guard in _STATE.engaged)


def host_transfers_allowed() -> bool:
    """Whether the code here may read device arrays: no guard is on, or they are lifted."""
    return not _STATE.engaged or _STATE.lifted > 0


# ---------------------------------------------------------------------------------------------
# Moving data


@allow_host_transfers()
def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of any backend's array (tests only; the library never does this)."""
    module = type(x).__module__
    if module.startswith("torch"):
        import torch

        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.detach().cpu().numpy()
    if module.startswith("cupy"):
        return x.get()
    if module.startswith("array_api_strict"):
        import array_api_strict as xps

        if x.dtype == xps.bool:
            return np.from_dlpack(xps.astype(x, xps.uint8)).astype(bool)
        return np.asarray(np.from_dlpack(x)).copy()
    return np.asarray(x)


@allow_host_transfers()
def from_numpy(backend: tuple[Any, Any], a: Any, dtype: Any = None) -> Any:
    """``a`` (NumPy data) as an array of ``backend`` on its device, in ``dtype`` of that library.

    ``dtype`` may be a name such as ``"float32"`` or a dtype of the backend.
    """
    xp, device = backend
    if isinstance(dtype, str):
        dtype = getattr(xp, dtype)
    a = np.asarray(a)
    if dtype is None and a.dtype == np.float64:
        dtype = xp.float64
    if "torch" in xp.__name__:
        import torch

        t = torch.from_numpy(np.ascontiguousarray(a).reshape(a.shape)).to(device)
        return t if dtype is None else t.to(dtype)
    if "array_api_strict" in xp.__name__:
        return xp.asarray(a.tolist() if a.ndim == 0 else a, dtype=dtype, device=device)
    if xp.__name__.startswith("jax"):
        import jax

        return jax.device_put(xp.asarray(a, dtype=dtype), device)
    return xp.asarray(a, dtype=dtype, device=device) if dtype is not None else xp.asarray(a)


def library_of(backend: tuple[Any, Any]) -> str:
    """Short library name for a backend: numpy, array_api_strict, torch, jax or cupy."""
    name = backend[0].__name__
    for lib in ("array_api_strict", "torch", "jax", "cupy", "numpy"):
        if lib in name:
            return lib
    return name
