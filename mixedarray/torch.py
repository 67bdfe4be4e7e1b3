"""PyTorch adapter: ``torch.autograd.Function`` rules for the projections.

Imported lazily by :func:`mixedarray._backend.lookup_rule` the first time a torch tensor
reaches a projection, so ``import mixedarray`` never imports torch.  Each Function uses
``setup_context`` and defines ``backward`` (the closed-form VJP of
:mod:`mixedarray.projections`), ``jvp`` (the same closed form, for forward mode and
``torch.func.jvp``) and ``vmap`` (the maps already act row-wise, so a vmapped dimension is just
one more batch dimension), so ``torch.func.grad``/``vmap``/``jvp``/``jacrev`` and double
backward work.  Known upstream limitation: ``torch.func.jacfwd(torch.func.jacfwd(f))``
(forward over forward) through any ``autograd.Function`` drops second-order terms
(pytorch/pytorch#197867); use ``torch.func.hessian`` (forward over reverse) or reverse over
reverse, which are exact.

Forward passes: on CPU tensors, outside ``torch.compile``, sparsemax and 1.5-entmax use the
compiled sort-free kernels of :mod:`mixedarray._native.cpu_threshold` when Numba is installed,
and on CUDA tensors the Numba CUDA kernels of :mod:`mixedarray._native.cuda_threshold` when a
GPU is usable by Numba (on torch's current stream, no copies); everything else uses the
standard-API reference, which ``torch.compile`` traces.
"""

from __future__ import annotations

import sys
from typing import Any

import array_api_compat.torch as xp
import torch

from mixedarray import projections
from mixedarray._backend import register_rule
from mixedarray._native import cpu_threshold

__all__: list[str] = []


def _native_cpu(*tensors: torch.Tensor) -> bool:
    """Whether the compiled CPU kernels may take these tensors (plain CPU tensors, eager)."""
    if not cpu_threshold.available() or torch.compiler.is_compiling():
        return False
    functorch = torch._C._functorch
    return all(
        type(t) is torch.Tensor
        and t.device.type == "cpu"
        and t.dtype in (torch.float32, torch.float64)
        and not functorch.is_functorch_wrapped_tensor(t)
        for t in tensors
    )


def _native_cuda(z: torch.Tensor) -> bool:
    """Whether the Numba CUDA kernels may take ``z`` (a plain CUDA tensor, eager, usable GPU)."""
    if z.device.type != "cuda":
        return False
    from mixedarray._native import cuda_interop, fast_paths_enabled

    return cuda_interop.torch_tensor_ok(z) and fast_paths_enabled() and cuda_interop.available()


def _forward(name: str, z: torch.Tensor, alpha: Any = None, n_iter: Any = None) -> torch.Tensor:
    if name in ("sparsemax", "entmax15") and _native_cpu(z):
        return torch.from_numpy(cpu_threshold.project(name, z.detach().numpy()))
    if name in ("sparsemax", "entmax15") and _native_cuda(z):
        from mixedarray._native import cuda_threshold

        return cuda_threshold.project(name, z)
    return projections.reference(name, xp, z, alpha, n_iter)


def _vjp(name: str, vjp: Any, y: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    # The compiled kernel when no graph of the backward is needed (no double backward).
    if not torch.is_grad_enabled() and _native_cpu(y, grad) and y.dtype == grad.dtype:
        return torch.from_numpy(cpu_threshold.vjp(name, y.numpy(), grad.numpy()))
    return vjp(y, grad)


def _batch_first(x: Any, dim: int | None) -> Any:
    return x if dim is None or not isinstance(x, torch.Tensor) else x.movedim(dim, 0)


def _apply_positional(cls: Any, *args: Any) -> Any:
    """``Function.apply`` without its per-call ``inspect.signature`` binding.

    Our forwards take positional arguments only, so binding defaults is a no-op; skipping it
    saves ~10 µs per call, which dominates small inputs.  Under functorch transforms the full
    ``Function.apply`` runs.
    """
    if torch._C._are_functorch_transforms_active():
        return torch.autograd.Function.apply.__func__(cls, *args)
    args = torch._functorch.utils.unwrap_dead_wrappers(args)
    return super(torch.autograd.Function, cls).apply(*args)


def _row_function(name: str, vjp: Any) -> tuple[type, type]:
    """Autograd Functions for the row map ``name`` with the symmetric Jacobian ``vjp``.

    Two classes: the second adds ``jvp`` (forward mode, ``torch.func.jvp``); the first, used
    while ``torch.compile`` traces, has none, since Dynamo refuses Functions that define it.
    """

    class Traceable(torch.autograd.Function):
        @staticmethod
        def forward(z: torch.Tensor) -> torch.Tensor:
            return _forward(name, z)

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
            ctx.save_for_backward(output)
            ctx.save_for_forward(output)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            (y,) = ctx.saved_tensors
            return _vjp(name, vjp, y, grad)

        @staticmethod
        def vmap(info: Any, in_dims: tuple, z: torch.Tensor) -> tuple:
            return Traceable.apply(_batch_first(z, in_dims[0])), 0

    class WithForwardMode(Traceable):
        apply = classmethod(_apply_positional)

        @staticmethod
        def jvp(ctx: Any, tangent: torch.Tensor) -> torch.Tensor:
            (y,) = ctx.saved_tensors
            return vjp(y, tangent)

        @staticmethod
        def vmap(info: Any, in_dims: tuple, z: torch.Tensor) -> tuple:
            return WithForwardMode.apply(_batch_first(z, in_dims[0])), 0

    Traceable.__name__ = Traceable.__qualname__ = f"{name}_traceable"
    WithForwardMode.__name__ = WithForwardMode.__qualname__ = name
    return Traceable, WithForwardMode


_FUNCTIONS = {
    "sparsemax": _row_function("sparsemax", projections.sparsemax_vjp),
    "entmax15": _row_function("entmax15", projections.entmax15_vjp),
}


def _apply_row(name: str, z: torch.Tensor) -> torch.Tensor:
    traceable, eager = _FUNCTIONS[name]
    return (traceable if torch.compiler.is_compiling() else eager).apply(z)


def _reduce_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum ``grad`` over the dimensions that were broadcast from ``shape``."""
    dims = tuple(
        i for i, (g, s) in enumerate(zip(grad.shape, shape, strict=True)) if s == 1 and g != 1
    )
    return grad.sum(dim=dims, keepdim=True) if dims else grad


class _EntmaxTraceable(torch.autograd.Function):
    """α-entmax with α a tensor of shape ``z.shape[:-1] + (1,)`` (or broadcastable to it)."""

    @staticmethod
    def forward(z: torch.Tensor, alpha: torch.Tensor, n_iter: int) -> torch.Tensor:
        return _forward("entmax", z, alpha, n_iter)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        _, alpha, _ = inputs
        ctx.save_for_backward(output, alpha)
        ctx.save_for_forward(output, alpha)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        y, alpha = ctx.saved_tensors
        grad_z = projections.entmax_vjp(y, grad, alpha)
        grad_alpha = None
        if ctx.needs_input_grad[1]:
            rows = (grad * projections.entmax_alpha_jvp(y, alpha)).sum(dim=-1, keepdim=True)
            grad_alpha = _reduce_to(rows, alpha.shape)
        return grad_z, grad_alpha, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, z: torch.Tensor, alpha: torch.Tensor, n_iter: int) -> tuple:
        return _vmap_entmax(_EntmaxTraceable, in_dims, z, alpha, n_iter)


class _Entmax(_EntmaxTraceable):
    apply = classmethod(_apply_positional)

    @staticmethod
    def jvp(ctx: Any, tangent_z: Any, tangent_alpha: Any, _: Any) -> torch.Tensor:
        y, alpha = ctx.saved_tensors
        out = projections.entmax_jvp(y, tangent_z, alpha) if tangent_z is not None else 0
        if tangent_alpha is not None:
            out = out + projections.entmax_alpha_jvp(y, alpha) * tangent_alpha
        return out

    @staticmethod
    def vmap(info: Any, in_dims: tuple, z: torch.Tensor, alpha: torch.Tensor, n_iter: int) -> tuple:
        return _vmap_entmax(_Entmax, in_dims, z, alpha, n_iter)


def _vmap_entmax(function: Any, in_dims: tuple, z: Any, alpha: Any, n_iter: int) -> tuple:
    # The maps act row-wise, so a vmapped dimension is one more batch dimension in front.
    z_dim, alpha_dim, _ = in_dims
    z = _batch_first(z, z_dim)
    alpha = alpha.unsqueeze(0) if alpha_dim is None else _batch_first(alpha, alpha_dim)
    if z_dim is None:
        z = z.expand(alpha.shape[0], *z.shape)
    return function.apply(z, alpha, n_iter), 0


@register_rule("torch", "sparsemax")
def sparsemax(z: torch.Tensor, alpha: Any, n_iter: Any) -> torch.Tensor:
    return _apply_row("sparsemax", z)


@register_rule("torch", "entmax15")
def entmax15(z: torch.Tensor, alpha: Any, n_iter: Any) -> torch.Tensor:
    return _apply_row("entmax15", z)


@register_rule("torch", "entmax")
def entmax(z: torch.Tensor, alpha: Any, n_iter: int) -> torch.Tensor:
    if isinstance(alpha, float):
        alpha = torch.full((1,) * z.ndim, alpha, dtype=z.dtype, device=z.device)
    function = _EntmaxTraceable if torch.compiler.is_compiling() else _Entmax
    return function.apply(z, alpha, n_iter)


# ---------------------------------------------------------------------------------------------
# torch.distributions interop.  A distribution built from torch tensors is an instance of a
# subclass made here that also derives from torch.distributions.Distribution; every method
# still runs the one array-API implementation.


def _constraints() -> dict[str, dict[str, Any]]:
    c = torch.distributions.constraints
    positive_vector = c.independent(c.positive, 1)
    return {
        "GaussianSparsemax": {"loc": c.real_vector, "scale": positive_vector},
        "MixedDirichlet": {"face_logits": c.real_vector, "concentration": positive_vector},
        "NonEmptyBernoulli": {"face_logits": c.real_vector},
        "MaxEntMixed": {"log_size_probs": c.real_vector},
        "HardConcrete": {
            "logits": c.real,
            "temperature": c.positive,
            "low": c.less_than(0.0),
            "high": c.greater_than(1.0),
        },
        "GumbelSoftmax": {"logits": c.real_vector, "temperature": c.positive},
        "KDHardConcrete": {
            "logits": c.real_vector,
            "temperature": c.positive,
            "scale": c.greater_than(1.0),
        },
    }


def _sampling_arguments(args: tuple, kwargs: dict) -> tuple[Any, Any]:
    """``(rng, sample_shape)`` from torch-style or mixedarray-style arguments.

    torch style: ``sample()``, ``sample(sample_shape)``, ``sample(sample_shape=...)`` (torch's
    global generator); mixedarray style: ``sample(rng, sample_shape=())``.
    """
    rng = kwargs.pop("rng", None)
    sample_shape = kwargs.pop("sample_shape", ())
    if kwargs:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(kwargs))}")
    if len(args) > 2:
        raise TypeError(f"expected at most 2 positional arguments, got {len(args)}")
    if args and isinstance(args[0], (tuple, list, torch.Size)):
        if len(args) > 1:
            raise TypeError("sample(sample_shape) takes no second positional argument")
        return rng, args[0]
    if args:
        rng = args[0]
    if len(args) > 1:
        sample_shape = args[1]
    return rng, sample_shape


class _TorchDistribution:
    """What a ``torch.distributions.Distribution`` offers, delegating to mixedarray."""

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size(self._batch_shape)

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size((self._num_vertices,))

    @property
    def _event_shape(self) -> torch.Size:  # read by torch's _extended_shape
        return self.event_shape

    @property
    def arg_constraints(self) -> dict[str, Any]:
        return _constraints().get(type(self).__name__, {})

    @property
    def support(self) -> Any:
        from mixedarray.distributions import NonEmptyBernoulli

        c = torch.distributions.constraints
        # NonEmptyBernoulli draws face masks; every other distribution draws simplex points.
        return c.independent(c.boolean, 1) if isinstance(self, NonEmptyBernoulli) else c.simplex

    def sample(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``sample(sample_shape=())`` with torch's global generator, or ``sample(rng, shape)``."""
        return super().sample(*_sampling_arguments(args, kwargs))

    def rsample(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """As :meth:`sample`, with a pathwise gradient."""
        return super().rsample(*_sampling_arguments(args, kwargs))

    def entropy(self) -> torch.Tensor:
        """The exact direct-sum entropy (``NotImplementedError`` where there is none)."""
        from mixedarray.information import entropy

        return entropy(self, method="exact")

    def __reduce__(self) -> tuple[Any, ...]:
        # By the mixedarray class, so twins of any (picklable) subclass pickle, user ones too.
        return _rebuild, (self._mixedarray_class, self.__getstate__())


_TORCH_CLASSES: dict[type, type] = {}


def torch_class(cls: type) -> type:
    """The subclass of ``cls`` that is also a ``torch.distributions.Distribution``.

    Made once per class, when this adapter is imported (for every distribution class defined
    by then) or when a subclass is defined afterwards (``Distribution.__init_subclass__``), so
    that building a distribution inside ``torch.compile`` only looks the class up (creating a
    class there is a graph break).  Those of the library's own distributions are also
    attributes of this module (``mixedarray.torch.MixedDirichlet``, ...).
    """
    if issubclass(cls, torch.distributions.Distribution):
        return cls
    made = _TORCH_CLASSES.get(cls)
    if made is None:
        # torch's Distribution.__init__ is never run: mixedarray's __init__ sets the state.
        made = type(
            cls.__name__,
            (_TorchDistribution, cls, torch.distributions.Distribution),
            {
                "__module__": __name__,
                "__qualname__": cls.__name__,
                "__doc__": cls.__doc__,
                "_mixedarray_class": cls,
            },
        )
        _TORCH_CLASSES[cls] = made
        if getattr(sys.modules[cls.__module__], cls.__name__, None) is cls:
            globals().setdefault(cls.__name__, made)
    return made


def _rebuild(cls: type, state: dict[str, Any]) -> Any:
    """Unpickle a torch twin: an instance of ``torch_class(cls)`` with ``state``."""
    self = object.__new__(torch_class(cls))
    self.__dict__.update(state)
    return self


def _make_all() -> None:
    from mixedarray.distributions import Distribution

    pending = [Distribution]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls is not Distribution and not issubclass(cls, torch.distributions.Distribution):
            torch_class(cls)


_make_all()


def _register_kl() -> None:
    """``torch.distributions.kl_divergence`` for every pair with an exact direct-sum KL."""
    from mixedarray import distributions as ds
    from mixedarray.information import kl_divergence

    def exact(p: Any, q: Any) -> torch.Tensor:
        return kl_divergence(p, q, method="exact")

    same = (ds.MixedDirichlet, ds.NonEmptyBernoulli)
    to_maxent = (
        ds.GaussianSparsemax,  # K = 2
        ds.MixedDirichlet,
        ds.MaxEntMixed,
        ds.HardConcrete,
        ds.KDHardConcrete,  # K = 2
    )
    for p, q in [(c, c) for c in same] + [(c, ds.MaxEntMixed) for c in to_maxent]:
        torch.distributions.kl.register_kl(p, q)(exact)


_register_kl()


def _host_constants() -> None:
    """Let ``torch.compile`` call the host-side quadrature tables instead of tracing them.

    The tables (Gauss–Hermite, composite Gauss–Legendre) are NumPy computations of a static
    argument: traced, they are a graph break (NumPy is skipped by Dynamo); marked as constant
    results, Dynamo calls them at trace time and bakes the numbers into the graph.  Dynamo
    traces through ``functools.lru_cache`` wrappers, so the wrapped function is marked.
    """
    from mixedarray.distributions import gaussian_sparsemax_density, hard_concrete

    tables = (gaussian_sparsemax_density._gauss_hermite_table, hard_concrete._composite_legendre)
    for table in tables:
        torch.compiler.assume_constant_result(getattr(table, "__wrapped__", table))


_host_constants()
