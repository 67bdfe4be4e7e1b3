"""Base noise from the caller's own generator, on the parameters' library and device.

This is the only module that turns a caller's ``rng`` into random numbers.  Every function takes
the generator of the caller's framework and an array of the parameters (``like``, or the gamma
``concentration``) and returns an array of that array's library, on its device, drawn by that
library's own generator — never through a NumPy round trip for PyTorch, JAX or CuPy.

Accepted ``rng`` forms, by the parameters' library:

========================  =================================================================
parameters                ``rng``
========================  =================================================================
NumPy                     ``numpy.random.Generator`` or an int seed
array-api-strict          ``numpy.random.Generator`` or an int seed (drawn with NumPy, then
                          ``array_api_strict.asarray(..., device=like.device)``)
PyTorch                   ``torch.Generator`` on the parameters' device, an int seed, or
                          ``None``: torch's global generator (``torch.manual_seed``), as
                          ``torch.distributions`` uses, and the form ``torch.compile`` traces
JAX                       a PRNG key, typed (``jax.random.key``) or legacy uint32
                          (``jax.random.PRNGKey``), or an int seed
CuPy                      ``cupy.random.Generator`` or an int seed
========================  =================================================================

An int seed (``0 <= seed < 2**63``; ``bool`` is not a seed) makes a fresh generator of the
parameters' library on every call — ``numpy.random.default_rng(seed)``,
``torch.Generator(device).manual_seed(seed)``, ``jax.random.key(seed)``,
``cupy.random.default_rng(seed)`` — so the same seed always gives the same numbers.  Stateful
generators (NumPy, CuPy, PyTorch) advance with every draw; a JAX key is used as given, so the same
key gives the same numbers: use :func:`split` to get independent keys for independent draws.

A generator of another library than the parameters' is a ``TypeError`` naming both; anything
else (``None`` except for PyTorch, a float, ``numpy.random.RandomState``, ...) is a
``TypeError`` listing the accepted forms.

dtypes: the result has ``dtype`` if given, else ``like``'s dtype if it is a real floating dtype,
else the library's default real floating dtype.  float16 and bfloat16 are drawn in float32 and
cast.  No framework is imported by this module: the one whose arrays arrive is imported then.
"""

from __future__ import annotations

import numbers
import operator
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from mixedarray._backend import array_namespace, compute_dtype, is_floating, library_name

__all__ = ["gamma", "gumbel", "has_global_generator", "normal", "seeds", "split", "uniform"]

Array = Any
RNG = Any
Shape = int | Sequence[int]

_MAX_SEED = 2**63

_ACCEPTED = (
    "a numpy.random.Generator, a cupy.random.Generator, a torch.Generator, a JAX PRNG key "
    "(jax.random.key or jax.random.PRNGKey) or a non-negative int seed"
)


# ---------------------------------------------------------------------------------------------
# One entry per parameters' library.  Each turns its generator into raw draws in a compute
# dtype (float32 or float64) on the parameters' device; the public functions do the rest.


class _Library:
    """How one array library draws: its generator kind and its raw normal/uniform/gamma."""

    name: str = ""  # the parameters' library, as ``library_name`` reports it
    module: str = ""  # the module that must already be imported for its generators to exist
    generator_name: str = ""  # its generator, as error messages call it
    arrays_name: str = ""  # its arrays, as error messages call them

    def is_generator(self, rng: RNG) -> bool:
        """Whether ``rng`` is a generator of this library (imports nothing new)."""
        raise NotImplementedError

    def from_seed(self, seed: int, like: Array) -> RNG:
        """A fresh generator seeded with ``seed``, for parameters like ``like``."""
        raise NotImplementedError

    def accepts_global(self) -> bool:
        """Whether ``rng=None`` means the library's global generator."""
        return False

    def check(self, rng: RNG, like: Array) -> None:
        """Raise if ``rng`` cannot draw for ``like`` (e.g. it lives on another device)."""

    def normal(self, rng: RNG, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
        """Standard normal draws of ``shape`` in ``dtype`` on ``like``'s device."""
        raise NotImplementedError

    def uniform(self, rng: RNG, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
        """Uniform draws on [0, 1) of ``shape`` in ``dtype`` on ``like``'s device."""
        raise NotImplementedError

    def gamma(self, rng: RNG, concentration: Array, dtype: Any) -> Array:
        """Gamma(concentration, 1) draws, one per element of ``concentration``."""
        raise NotImplementedError

    def finish(self, x: Array) -> Array:
        """The result as this library's array type (NumPy's 0-d operations give scalars)."""
        return x

    def split(self, rng: RNG, n: int) -> tuple[RNG, ...]:
        """``n`` generators whose draws are independent of each other."""
        # A stateful generator advances with every draw: successive draws are independent.
        return (rng,) * n


class _NumPy(_Library):
    name = "numpy"
    module = "numpy"
    generator_name = "numpy.random.Generator"
    arrays_name = "NumPy arrays"

    def is_generator(self, rng: RNG) -> bool:
        if "numpy" not in sys.modules:
            return False
        import numpy as np

        return isinstance(rng, np.random.Generator)

    def from_seed(self, seed: int, like: Array) -> RNG:
        import numpy as np

        return np.random.default_rng(seed)

    @staticmethod
    def _np_dtype(dtype: Any) -> Any:
        import numpy as np

        # The compute dtype is float32 or float64; array-api-strict dtypes compare by name.
        return np.float32 if "float32" in str(dtype) else np.float64

    def _wrap(self, x: Any, like: Array) -> Array:
        import numpy as np

        return np.asarray(x)

    def _unwrap(self, x: Array) -> Any:
        import numpy as np

        return np.asarray(x)

    def finish(self, x: Array) -> Array:
        import numpy as np

        return np.asarray(x)

    def normal(self, rng: RNG, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
        return self._wrap(rng.standard_normal(size=shape, dtype=self._np_dtype(dtype)), like)

    def uniform(self, rng: RNG, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
        return self._wrap(rng.random(size=shape, dtype=self._np_dtype(dtype)), like)

    def gamma(self, rng: RNG, concentration: Array, dtype: Any) -> Array:
        a = self._unwrap(concentration)
        draws = rng.standard_gamma(a, size=a.shape, dtype=self._np_dtype(dtype))
        return self._wrap(draws, concentration)


class _ArrayApiStrict(_NumPy):
    name = "array_api_strict"
    arrays_name = "array-api-strict arrays"

    def _wrap(self, x: Any, like: Array) -> Array:
        import array_api_strict as xps
        import numpy as np

        return xps.asarray(np.asarray(x), device=like.device)

    def _unwrap(self, x: Array) -> Any:
        import numpy as np

        return np.from_dlpack(x)

    def finish(self, x: Array) -> Array:
        return x


class _Torch(_Library):
    name = "torch"
    module = "torch"
    generator_name = "torch.Generator"
    arrays_name = "torch tensors"

    def is_generator(self, rng: RNG) -> bool:
        if "torch" not in sys.modules:
            return False
        import torch

        return isinstance(rng, torch.Generator)

    def accepts_global(self) -> bool:
        return True

    def from_seed(self, seed: int, like: Array) -> RNG:
        import torch

        return torch.Generator(device=like.device).manual_seed(seed)

    @staticmethod
    def _normalized(dev: Any) -> tuple[str, int | None]:
        import torch

        dev = torch.device(dev)
        index = dev.index
        if index is None and dev.type != "cpu":
            accelerator = getattr(torch, dev.type, None)
            current = getattr(accelerator, "current_device", None)
            index = current() if current is not None else 0
        return dev.type, index

    def check(self, rng: RNG, like: Array) -> None:
        if rng is None:  # the global generator of the parameters' device
            return
        if self._normalized(rng.device) != self._normalized(like.device):
            raise ValueError(
                f"rng is a torch.Generator on device {rng.device} but the parameters are on "
                f"device {like.device}; pass a torch.Generator(device={str(like.device)!r}) "
                "or an int seed"
            )

    def normal(self, rng: RNG, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
        import torch

        return torch.randn(shape, generator=rng, dtype=dtype, device=like.device)

    def uniform(self, rng: RNG, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
        import torch

        return torch.rand(shape, generator=rng, dtype=dtype, device=like.device)

    def gamma(self, rng: RNG, concentration: Array, dtype: Any) -> Array:
        import torch

        # Differentiable w.r.t. concentration: autograd's rule for _standard_gamma is the
        # implicit reparameterisation gradient (_standard_gamma_grad).
        return torch._standard_gamma(concentration, generator=rng)


class _Jax(_Library):
    name = "jax"
    module = "jax"
    generator_name = "JAX PRNG key"
    arrays_name = "JAX arrays"

    def is_generator(self, rng: RNG) -> bool:
        if "jax" not in sys.modules:
            return False
        import jax

        if not isinstance(rng, jax.Array):
            return False
        if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
            return True
        # Legacy raw keys: uint32[2] (threefry, the default) or uint32[4] (rbg).
        return rng.dtype == jax.numpy.uint32 and tuple(rng.shape) in ((2,), (4,))

    def from_seed(self, seed: int, like: Array) -> RNG:
        import jax

        return jax.random.key(seed)

    @staticmethod
    def _place(x: Array, like: Array) -> Array:
        import jax

        # Under tracing placement is the compiler's; a concrete single-device array's
        # device is honoured (a no-op when the key already lives there).
        if isinstance(like, jax.core.Tracer):
            return x
        devices = like.devices()
        if len(devices) != 1:
            return x
        return jax.device_put(x, next(iter(devices)))

    def normal(self, rng: RNG, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
        import jax

        return self._place(jax.random.normal(rng, shape, dtype=dtype), like)

    def uniform(self, rng: RNG, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
        import jax

        return self._place(jax.random.uniform(rng, shape, dtype=dtype), like)

    def gamma(self, rng: RNG, concentration: Array, dtype: Any) -> Array:
        import jax

        # jax.random.gamma carries the implicit reparameterisation gradient w.r.t. ``a``.
        draws = jax.random.gamma(rng, concentration, concentration.shape, dtype=dtype)
        return self._place(draws, concentration)

    def split(self, rng: RNG, n: int) -> tuple[RNG, ...]:
        import jax

        return tuple(jax.random.split(rng, n))


class _CuPy(_Library):
    name = "cupy"
    module = "cupy"
    generator_name = "cupy.random.Generator"
    arrays_name = "CuPy arrays"

    def is_generator(self, rng: RNG) -> bool:
        if "cupy" not in sys.modules:
            return False
        import cupy

        return isinstance(rng, cupy.random.Generator)

    def from_seed(self, seed: int, like: Array) -> RNG:
        import cupy

        with like.device:
            return cupy.random.default_rng(seed)

    def normal(self, rng: RNG, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
        with like.device:
            return rng.standard_normal(size=shape, dtype=dtype)

    def uniform(self, rng: RNG, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
        with like.device:
            return rng.random(size=shape, dtype=dtype)

    def gamma(self, rng: RNG, concentration: Array, dtype: Any) -> Array:
        with concentration.device:
            return rng.standard_gamma(concentration, size=concentration.shape, dtype=dtype)


_LIBRARIES: dict[str, _Library] = {
    lib.name: lib for lib in (_NumPy(), _ArrayApiStrict(), _Torch(), _Jax(), _CuPy())
}


# ---------------------------------------------------------------------------------------------
# Argument handling shared by every public function.


def _library(like: Array) -> _Library:
    name = library_name(like)
    try:
        return _LIBRARIES[name]
    except KeyError:
        raise TypeError(
            f"random draws are not supported for {name} arrays; supported: "
            "NumPy, array-api-strict, PyTorch, JAX and CuPy"
        ) from None


def has_global_generator(like: Array) -> bool:
    """Whether ``rng=None`` draws from the global generator of ``like``'s library (PyTorch)."""
    try:
        return _library(like).accepts_global()
    except TypeError:
        return False


def _is_seed(rng: RNG) -> bool:
    return isinstance(rng, numbers.Integral) and not isinstance(rng, bool)


def _generator(rng: RNG, lib: _Library, like: Array) -> RNG:
    """``rng`` checked against the parameters' library, or a fresh generator for a seed."""
    if _is_seed(rng):
        seed = int(rng)
        if not 0 <= seed < _MAX_SEED:
            raise ValueError(f"rng: an int seed must satisfy 0 <= seed < 2**63, got {seed}")
        return lib.from_seed(seed, like)
    if lib.is_generator(rng) or (rng is None and lib.accepts_global()):
        lib.check(rng, like)
        return rng
    for other in _LIBRARIES.values():
        if other.is_generator(rng):
            raise TypeError(
                f"rng is a {other.generator_name} but the parameters are {lib.arrays_name}; "
                f"pass a {lib.generator_name} or an int seed"
            )
    hint = ""
    if rng is None:
        hint = " (pass an int seed for reproducible draws)"
    elif type(rng).__name__ == "RandomState":
        hint = " (numpy.random.RandomState is legacy: use numpy.random.default_rng(seed))"
    raise TypeError(f"rng must be {_ACCEPTED}; got {type(rng).__name__}{hint}")


def _shape(shape: Shape, name: str = "shape") -> tuple[int, ...]:
    try:
        dims = (
            (operator.index(shape),)
            if not isinstance(shape, Sequence)
            else tuple(operator.index(s) for s in shape)
        )
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of ints, got {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"{name} must have non-negative sizes, got {dims}")
    return dims


def _broadcast_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """``broadcast(shape=a, concentration.shape=b)`` by the array API's broadcasting rules."""
    n = max(len(a), len(b))
    out = []
    for x, y in zip((1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b, strict=True):
        if x != y and 1 not in (x, y):
            raise ValueError(f"shape {a} cannot be broadcast with concentration.shape {b}")
        out.append(y if x == 1 else x)
    return tuple(out)


def _dtypes(xp: ModuleType, like: Array, dtype: Any) -> tuple[Any, Any]:
    """(output dtype, compute dtype) for parameters ``like`` and a requested ``dtype``."""
    if dtype is None:
        if is_floating(xp, like.dtype):
            dtype = like.dtype
        else:
            dtype = compute_dtype(xp, like.dtype, name="like")
    elif not is_floating(xp, dtype):
        raise TypeError(f"dtype must be a real floating dtype, got {dtype}")
    return dtype, compute_dtype(xp, dtype, name="dtype")


def _setup(rng: RNG, like: Array, dtype: Any) -> tuple[_Library, RNG, ModuleType, Any, Any]:
    xp = array_namespace(like)
    lib = _library(like)
    out_dtype, work_dtype = _dtypes(xp, like, dtype)
    return lib, _generator(rng, lib, like), xp, out_dtype, work_dtype


def _cast(xp: ModuleType, x: Array, dtype: Any) -> Array:
    return x if x.dtype == dtype else xp.astype(x, dtype)


def _open_unit(xp: ModuleType, u: Array, dtype: Any) -> Array:
    # [tiny, 1 - eps/2]: 1 - eps/2 is the largest float below 1 in every binary float format.
    info = xp.finfo(dtype)
    return xp.clip(u, min=float(info.smallest_normal), max=1.0 - float(info.eps) / 2)


# ---------------------------------------------------------------------------------------------
# Public functions.


def normal(rng: RNG, shape: Shape, *, like: Array, dtype: Any = None) -> Array:
    """Standard normal draws, N(0, 1), of ``shape``, in ``like``'s library and on its device.

    Parameters
    ----------
    rng : generator, JAX key or int
        The caller's generator (see the module docstring for the accepted forms).
    shape : int or tuple of int
        Shape of the result.
    like : array
        An array of the parameters: its library and device decide where the draws are made.
    dtype : dtype, optional
        Real floating dtype of the result; default ``like``'s dtype if it is real floating,
        else the library's default real floating dtype.  float16/bfloat16 are drawn in float32.

    Returns
    -------
    array
        Independent standard normal draws.

    Raises
    ------
    TypeError
        If ``rng`` is not an accepted form or belongs to another library than ``like``, or
        ``dtype`` is not a real floating dtype.
    ValueError
        If an int seed is negative, or a ``torch.Generator`` lives on another device.
    """
    lib, gen, xp, out_dtype, work_dtype = _setup(rng, like, dtype)
    return lib.finish(_cast(xp, lib.normal(gen, _shape(shape), work_dtype, like), out_dtype))


def uniform(rng: RNG, shape: Shape, *, like: Array, dtype: Any = None) -> Array:
    """Uniform draws on the open interval (0, 1), of ``shape``, in ``like``'s library.

    The library's uniform draw on [0, 1) is clamped, in the output dtype, to
    ``[finfo.smallest_normal, 1 - finfo.eps / 2]``: the result is never exactly 0 or 1, so
    ``log(u)`` and ``log1p(-u)`` are always finite.  (The clamp moves only the draws that are
    exactly 0, or that round to 0 or 1 when cast to float16/bfloat16.)

    Parameters
    ----------
    rng : generator, JAX key or int
        The caller's generator (see the module docstring for the accepted forms).
    shape : int or tuple of int
        Shape of the result.
    like : array
        An array of the parameters: its library and device decide where the draws are made.
    dtype : dtype, optional
        Real floating dtype of the result (default as for :func:`normal`).

    Returns
    -------
    array
        Independent Uniform(0, 1) draws, each strictly inside (0, 1).

    Raises
    ------
    TypeError, ValueError
        As for :func:`normal`.
    """
    lib, gen, xp, out_dtype, work_dtype = _setup(rng, like, dtype)
    u = _cast(xp, lib.uniform(gen, _shape(shape), work_dtype, like), out_dtype)
    return lib.finish(_open_unit(xp, u, out_dtype))


def gumbel(rng: RNG, shape: Shape, *, like: Array, dtype: Any = None) -> Array:
    """Standard Gumbel draws, ``-log(E)`` with ``E = -log(U) ~ Exp(1)``, in ``like``'s library.

    ``U`` is an open-interval uniform draw (see :func:`uniform`) in the compute dtype, so ``E``
    lies in ``[~eps/2, -log(smallest_normal)]`` and the result is always finite: in float32 it
    lies in about [-4.5, 16.6], in float64 in about [-6.6, 36.7] (the standard Gumbel puts mass
    below 1e-7 outside those ranges).

    Parameters
    ----------
    rng : generator, JAX key or int
        The caller's generator (see the module docstring for the accepted forms).
    shape : int or tuple of int
        Shape of the result.
    like : array
        An array of the parameters: its library and device decide where the draws are made.
    dtype : dtype, optional
        Real floating dtype of the result (default as for :func:`normal`).

    Returns
    -------
    array
        Independent standard Gumbel draws (location 0, scale 1), all finite.

    Raises
    ------
    TypeError, ValueError
        As for :func:`normal`.
    """
    lib, gen, xp, out_dtype, work_dtype = _setup(rng, like, dtype)
    u = _open_unit(xp, lib.uniform(gen, _shape(shape), work_dtype, like), work_dtype)
    return lib.finish(_cast(xp, -xp.log(-xp.log(u)), out_dtype))


def gamma(rng: RNG, concentration: Array, shape: Shape | None = None) -> Array:
    """Gamma(concentration, 1) draws, differentiable w.r.t. ``concentration`` where possible.

    The density of each draw is ``g**(a - 1) * exp(-g) / Gamma(a)`` with ``a`` the matching
    element of ``concentration`` (broadcast to the result's shape).  Drawn by the library's own
    sampler: ``numpy.random.Generator.standard_gamma`` (NumPy, array-api-strict),
    ``cupy.random.Generator.standard_gamma``, ``torch._standard_gamma`` and
    ``jax.random.gamma``.  On PyTorch and JAX the result keeps the framework's pathwise
    (implicit reparameterisation) gradient ``dG/da = -(dF(g; a)/da) / f(g; a)``.

    Concentration is not validated here (values would need a device sync): it must be
    positive.  For small concentrations the draw underflows the dtype — ``P(G < tiny) =
    tiny**a / Gamma(a + 1)``, e.g. for ``a = 1e-3`` about 92% of float32 and 49% of float64
    draws.  Such draws come back as exactly 0 on NumPy, array-api-strict, JAX and CuPy, and
    as the dtype's smallest normal number on PyTorch (which clamps); they are never negative
    or NaN.  Callers that need small concentrations work in log space (e.g.
    ``log G = log G' + log(U) / a`` with ``G' ~ Gamma(a + 1)``).

    Parameters
    ----------
    rng : generator, JAX key or int
        The caller's generator (see the module docstring for the accepted forms).
    concentration : array
        Shape parameter ``a > 0`` (real; integer arrays use the default floating dtype).  Its
        library, device and dtype decide those of the result; float16/bfloat16 are drawn in
        float32 and cast back.
    shape : int or tuple of int, optional
        Shape of the result, broadcast with ``concentration.shape``; default
        ``concentration.shape``.

    Returns
    -------
    array
        Independent draws of shape ``broadcast(shape, concentration.shape)``.

    Raises
    ------
    TypeError, ValueError
        As for :func:`normal`; ``ValueError`` also if ``shape`` does not broadcast with
        ``concentration.shape``.
    """
    lib, gen, xp, out_dtype, work_dtype = _setup(rng, concentration, None)
    conc_shape = tuple(concentration.shape)
    out_shape = conc_shape if shape is None else _broadcast_shapes(_shape(shape), conc_shape)
    conc = _cast(xp, concentration, work_dtype)
    if conc_shape != out_shape:
        conc = xp.broadcast_to(conc, out_shape)
    return lib.finish(_cast(xp, lib.gamma(gen, conc, work_dtype), out_dtype))


def split(rng: RNG, n: int, *, like: Array) -> tuple[RNG, ...]:
    """``n`` generators for ``n`` independent draws from one ``rng``, for parameters ``like``.

    A JAX key is split with ``jax.random.split`` (typed keys stay typed, legacy keys stay
    legacy).  A stateful generator (NumPy, CuPy, PyTorch) is returned ``n`` times: it advances
    with every draw, so successive draws are independent.  An int seed first becomes a fresh
    generator of ``like``'s library (for JAX, ``jax.random.key(seed)``, then split), so draws
    from the returned generators are independent of each other, unlike repeated calls with the
    seed itself.

    Parameters
    ----------
    rng : generator, JAX key or int
        The caller's generator (see the module docstring for the accepted forms).
    n : int
        How many generators to return (``n >= 0``).
    like : array
        An array of the parameters: it decides which library an int seed becomes.

    Returns
    -------
    tuple
        ``n`` generators or keys, each accepted by the functions of this module.
    """
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    array_namespace(like)
    lib = _library(like)
    return lib.split(_generator(rng, lib, like), n)


# ---------------------------------------------------------------------------------------------
# Seeds for fused kernels.


def _seed_words(lib: _Library, gen: RNG, shape: tuple[int, ...], like: Array) -> Array:
    """Uniform int32 words in [0, 2**31) of ``shape``, drawn by ``lib`` on ``like``'s device."""
    high = 2**31
    if lib.name in ("numpy", "array_api_strict"):
        import numpy as np

        return lib._wrap(gen.integers(0, high, size=shape, dtype=np.int32), like)
    if lib.name == "torch":
        import torch

        draws = torch.randint(0, high, shape, generator=gen, device=like.device, dtype=torch.int64)
        return draws.to(torch.int32)
    if lib.name == "jax":
        import jax
        import jax.numpy as jnp

        bits = jax.random.bits(gen, shape, dtype=jnp.uint32)
        return lib._place(jnp.right_shift(bits, 1).astype(jnp.int32), like)
    import cupy

    # From uniform doubles (53 random bits): their top 31 bits are uniform words, and no
    # rejection loop reads back to the host.  The clip guards generators that may return 1.
    with like.device:
        words = cupy.floor(gen.random(size=shape, dtype=cupy.float64) * high)
        return cupy.clip(words, 0, high - 1).astype(cupy.int32)


def seeds(rng: RNG, n: int, *, like: Array) -> Array:
    """``n`` seeds for a fused kernel's own generator, drawn from ``rng`` on ``like``'s device.

    A kernel that draws its noise itself (:mod:`mixedarray._native.cuda_faces`) still takes its
    randomness from the caller's generator: one draw here per launch, and the kernel seeds its
    per-thread generators from the result.  The seeds stay on the device (no host read, so
    nothing synchronises); they are int32 so that every library holds them (JAX without x64
    too): row ``i`` is two independent uniform words ``(hi, lo)`` in ``[0, 2**31)``, which the
    kernel combines into the 62-bit seed ``hi·2**31 + lo``.  Stateful generators advance; a JAX
    key is used as given (traceable under ``jit``).

    Parameters
    ----------
    rng : generator, JAX key or int
        The caller's generator (see the module docstring for the accepted forms).
    n : int
        How many seeds (``n >= 0``), e.g. one per launch.
    like : array
        An array of the parameters: its library and device decide where the seeds are made.

    Returns
    -------
    array
        int32 array of shape ``(n, 2)``.

    Raises
    ------
    TypeError, ValueError
        As for :func:`normal`, and ``ValueError`` if ``n`` is negative.
    """
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    array_namespace(like)
    lib = _library(like)
    return lib.finish(_seed_words(lib, _generator(rng, lib, like), (n, 2), like))
